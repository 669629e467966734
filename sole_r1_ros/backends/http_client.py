"""A small JSON-over-HTTP client on the standard library (``http.client``), for model servers.

- Keep-alive connections reused from a pool; at most ``max_connections`` requests in flight.
- Per request: at most :data:`CONNECT_TIMEOUT_S` (or ``timeout_s`` when shorter) to connect,
  ``timeout_s`` for the reply; retries with capped exponential backoff only after a
  connection error (refused, reset, closed mid-reply), HTTP 5xx or 429 (its ``Retry-After``
  honoured, within ``timeout_s``). A timeout is not retried: the server is busy, asking again
  would only add load.
- ``https://`` verified against the system's CA certificates or a given bundle.
- :meth:`JsonHttpClient.cancel` aborts requests in flight (their sockets are shut down) and makes
  later ones fail at once: for shutdown. A connect in progress has no socket to shut down yet; it
  ends within its connect timeout, and the cancel flag is checked before anything is sent.

Headers (the API key) are never part of an error message, nor of an exception chained to one: a
header value HTTP cannot carry (CR, LF, non-Latin-1) is an ``HttpError`` of kind ``request``
that names no value.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
# The longest wait for a TCP (and TLS) connect, whatever the reply timeout: cancel() cannot abort a
# connect in progress, so this bounds how long shutdown waits for a host that does not answer
CONNECT_TIMEOUT_S = 5.0


class HttpError(Exception):
    """A request failed. ``status`` is the HTTP status (None: no reply), ``kind`` one of
    ``connection``, ``timeout``, ``status``, ``json``, ``tls``, ``cancelled``, ``request`` (the
    request could not be sent as given: a header value HTTP cannot carry; never retried)."""

    def __init__(self, message: str, *, kind: str, status: int | None = None, detail: str = "",
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.before_reply = False  # a connection lost before any reply (a stale kept-alive one)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before asking again."""

    retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0

    def wait_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Seconds before retry ``attempt`` (0-based): ``backoff_s · 2^attempt`` capped, or the
        server's ``Retry-After`` when it asks for longer."""
        wait = min(self.backoff_max_s, self.backoff_s * (2.0 ** attempt))
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return wait


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _detail(raw: bytes) -> str:
    """The human part of an error body (``detail`` / ``message`` / ``error``), shortened."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        for key in ("detail", "message", "error"):
            value = data.get(key)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                return str(value)[:300]
    return text[:300]


class JsonHttpClient:
    """JSON requests to one server (``base_url``: scheme, host, port and a path prefix)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        ca_bundle: str = "",
        max_connections: int = 8,
        retry: RetryPolicy | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{base_url}' is not an http:// or https:// URL")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self._headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
        self._ssl: ssl.SSLContext | None = None
        if self.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=ca_bundle or None)
        self._idle: list[http.client.HTTPConnection] = []
        self._busy: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._cancelled = threading.Event()

    @property
    def origin(self) -> str:
        """``scheme://host:port`` plus the path prefix (no credentials): for messages."""
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"

    # --- connections ----------------------------------------------------------------------------
    def _new_connection(self) -> http.client.HTTPConnection:
        if self._ssl is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=self._ssl)
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            conn, reused = (self._idle.pop(), True) if self._idle else (self._new_connection(), False)
            self._busy.add(conn)
        return conn, reused

    def _give_back(self, conn: http.client.HTTPConnection, keep: bool) -> None:
        with self._lock:
            self._busy.discard(conn)
            if keep and not self._cancelled.is_set():
                self._idle.append(conn)
                return
        conn.close()

    def cancel(self) -> None:
        """Abort requests in flight and refuse new ones (shutdown)."""
        self._cancelled.set()
        with self._lock:
            busy = list(self._busy)
        for conn in busy:
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Close idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # --- requests -------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, retries: int | None = None,  # noqa: ANN401
                timeout_s: float | None = None, prefixed: bool = True) -> tuple[int, Any]:
        """Send ``body`` (JSON) to ``path`` (under the base URL's path unless ``prefixed`` is
        false) and return ``(status, parsed JSON)`` for a 2xx reply; raises :class:`HttpError`
        for anything else, after the retries allowed for its kind."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        path = (self.prefix if prefixed else "") + path
        allowed = self.retry.retries if retries is None else retries
        attempt = 0
        while True:
            try:
                return self._once(method, path, data, timeout_s)
            except HttpError as err:
                retryable = err.kind == "connection" or (err.kind == "status" and err.status in RETRYABLE_STATUS)
                if not retryable or attempt >= allowed or self._cancelled.is_set():
                    if attempt:
                        err.args = (f"{err.args[0]} (after {attempt} retr{'y' if attempt == 1 else 'ies'})",)
                    raise
                wait = min(self.retry.wait_s(attempt, err.retry_after_s), timeout_s or self.timeout_s)
                attempt += 1
                if self._cancelled.wait(wait):
                    raise HttpError(f"{self.origin}: cancelled", kind="cancelled") from err

    def _once(self, method: str, path: str, data: bytes | None, timeout_s: float | None) -> tuple[int, Any]:
        if self._cancelled.is_set():
            raise HttpError(f"{self.origin}: cancelled", kind="cancelled")
        with self._slots:
            # a kept-alive connection the server has closed fails on first use: one fresh try
            for fresh_try in (False, True):
                conn, reused = self._take()
                keep = False
                try:
                    status, raw, headers, keep = self._exchange(conn, method, path, data, timeout_s)
                except HttpError as err:
                    if (err.kind == "connection" and err.before_reply and reused and not fresh_try
                            and not self._cancelled.is_set()):
                        continue
                    raise
                finally:
                    self._give_back(conn, keep)
                return self._result(status, raw, headers, path)
        raise AssertionError("unreachable")

    def _exchange(self, conn: http.client.HTTPConnection, method: str, path: str, data: bytes | None,
                  timeout_s: float | None) -> tuple[int, bytes, http.client.HTTPMessage, bool]:
        where = f"{self.scheme}://{self.host}:{self.port}{path}"
        timeout = timeout_s or self.timeout_s
        connect_timeout = min(timeout, CONNECT_TIMEOUT_S)
        try:
            if conn.sock is None:
                conn.timeout = connect_timeout
                conn.connect()
            conn.sock.settimeout(timeout)
        except ssl.SSLError as err:
            raise HttpError(f"{where}: TLS failed: {err} (model.ca_bundle sets the CA certificates)",
                            kind="tls") from err
        except OSError as err:
            if self._cancelled.is_set():
                raise HttpError(f"{where}: cancelled", kind="cancelled") from err
            if isinstance(err, TimeoutError):
                raise HttpError(f"{where}: connect timed out after {connect_timeout:g} s", kind="connection") from err
            raise HttpError(f"{where}: cannot connect: {err.strerror or err}", kind="connection") from err
        if self._cancelled.is_set():  # cancelled while connecting: send nothing
            raise HttpError(f"{where}: cancelled", kind="cancelled")
        replied = False
        unsendable = ""
        try:
            conn.request(method, path, body=data, headers=self._headers)
            response = conn.getresponse()
            replied = True
            raw = response.read()
        except ValueError as err:
            # http.client refuses a header value with CR/LF (ValueError quoting the value) or one
            # that is not Latin-1 (UnicodeEncodeError holding it): raised below, outside this
            # handler, so that no exception carrying the value is chained to the error
            unsendable = type(err).__name__
        except TimeoutError as err:
            raise HttpError(f"{where}: no reply within {timeout_s or self.timeout_s:g} s", kind="timeout") from err
        except ssl.SSLError as err:
            raise HttpError(f"{where}: TLS failed: {err}", kind="tls") from err
        except (OSError, http.client.HTTPException) as err:
            if self._cancelled.is_set():
                raise HttpError(f"{where}: cancelled", kind="cancelled") from err
            lost = HttpError(f"{where}: connection lost: {type(err).__name__}: {err}", kind="connection")
            lost.before_reply = not replied
            raise lost from err
        if unsendable:
            if self._cancelled.is_set():
                raise HttpError(f"{where}: cancelled", kind="cancelled")
            raise HttpError(f"{where}: request not sent: a header value is not valid in HTTP ({unsendable}; "
                            "header values are not shown)", kind="request")
        keep = not response.will_close
        return response.status, raw, response.headers, keep

    def _result(self, status: int, raw: bytes, headers: http.client.HTTPMessage, path: str) -> tuple[int, Any]:
        where = f"{self.scheme}://{self.host}:{self.port}{path}"
        if not 200 <= status < 300:
            detail = _detail(raw)
            raise HttpError(f"{where}: HTTP {status}: {detail}", kind="status", status=status, detail=detail,
                            retry_after_s=parse_retry_after(headers.get("Retry-After")))
        try:
            return status, json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            shown = raw[:120].decode("utf-8", errors="replace")
            raise HttpError(f"{where}: reply is not valid JSON ({err}): {shown!r}", kind="json", status=status) from err


__all__ = ["RETRYABLE_STATUS", "HttpError", "JsonHttpClient", "RetryPolicy", "parse_retry_after"]
