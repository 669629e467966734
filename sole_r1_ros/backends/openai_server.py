"""Server backend (``model.backend: server``): the model runs in an OpenAI-compatible server
(vLLM, SGLang, ``transformers serve``) and this process is a light HTTP client of it.

No torch, no transformers: the composite is sent as a lossless PNG data URL with the protocol's
messages; the server applies the checkpoint's chat template and processor (docs/serving.md).

Start-up asks the server what it serves (``/v1/models``; ``/health`` for ``transformers
serve``). A server that cannot be reached, or that answers 429 / 5xx (a proxy in front of a
server still loading), within ``model.startup_wait_s`` is a
:class:`~sole_r1_ros.errors.ModelLoadError`: the node refuses to start with the reason, as it
does for a missing checkpoint. Once running, every failed request is an
:class:`~sole_r1_ros.errors.InferenceError` (an ``error`` estimate; the episode does not
advance) naming the server, and scoring resumes when the server is back.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from sole_r1_ros.backends.contract import (
    PROTOCOL_TAGS,
    BatchTimings,
    Conversation,
    Generation,
    VisionLanguageModel,
    check_batch,
    special_text_order,
    split_special_texts,
)
from sole_r1_ros.backends.http_client import HttpError, JsonHttpClient, RetryPolicy
from sole_r1_ros.backends.openai_protocol import (
    QWEN_VL_SPECIAL_TEXTS,
    chat_messages,
    generation_from_reply,
    png_data_url,
    request_body,
)
from sole_r1_ros.errors import ConfigError, InferenceError, ModelLoadError
from sole_r1_ros.settings.generation import GenerationSettings
from sole_r1_ros.settings.groups import ModelSettings

LOG = logging.getLogger(__name__)
CHAT_PATH = "/chat/completions"
STARTUP_POLL_S = 0.5
PROBE_TIMEOUT_S = 10.0


def api_base_url(url: str) -> str:
    """``model.url`` as the API's base: credentials refused, ``/v1`` appended when missing."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"model.url '{url}' must be an http:// or https:// URL with a host "
                          "(e.g. http://127.0.0.1:8000)")
    if parts.username or parts.password:
        raise ConfigError("model.url must not hold credentials; put the key in an environment variable "
                          "and name it in model.api_key_env")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path += "/v1"
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in parts.hostname:  # IPv6 literal
        netloc = f"[{parts.hostname}]" + ("" if parts.port is None else f":{parts.port}")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))


def read_api_key(env_name: str) -> str | None:
    """The key held by the environment variable ``env_name`` (None when no variable is named),
    without surrounding whitespace. A key with a character that is not printable ASCII (CR, LF,
    tab, other controls, non-ASCII) cannot go into an HTTP header: refused, naming the variable
    only, never the value."""
    if not env_name:
        return None
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise ModelLoadError(f"model.api_key_env names ${env_name}, which is not set (or empty)")
    if not all(" " <= c <= "~" for c in key):
        raise ModelLoadError(f"model.api_key_env names ${env_name}, whose value holds a character that is not "
                             "printable ASCII (CR, LF, tab, another control character or a non-ASCII one) and "
                             "cannot be sent in an HTTP header; the value is not shown")
    return key


def local_special_texts(path: str) -> tuple[str, ...]:
    """Added-token strings of ``path``/tokenizer.json when there is one (plain JSON, no tokenizer
    library); none otherwise."""
    file = Path(path).expanduser() / "tokenizer.json" if path else None
    if file is None or not file.is_file():
        return ()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return tuple(str(t["content"]) for t in data.get("added_tokens", []) if isinstance(t, dict))
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"'{file}' is unreadable: {err}") from err


class OpenAIServerBackend(VisionLanguageModel):
    """Answers through an OpenAI-compatible chat-completions server."""

    in_process = False  # served elsewhere: concurrent calls, nothing of transformers loaded here

    def __init__(self, options: ModelSettings) -> None:
        if not options.url:
            raise ConfigError("model.backend 'server' needs model.url (e.g. http://127.0.0.1:8000)")
        self.options = options
        self.base_url = api_base_url(options.url)
        key = read_api_key(options.api_key_env)
        self._secret = key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if options.ca_bundle and not Path(options.ca_bundle).expanduser().is_file():
            raise ModelLoadError(f"model.ca_bundle '{options.ca_bundle}' is not a file")
        try:
            self.client = JsonHttpClient(
                self.base_url, timeout_s=options.timeout_s, headers=headers,
                ca_bundle=str(Path(options.ca_bundle).expanduser()) if options.ca_bundle else "",
                max_connections=options.max_concurrency,
                retry=RetryPolicy(options.retries, options.retry_backoff_s, options.retry_backoff_max_s),
            )
        except (ValueError, OSError) as err:
            raise ModelLoadError(self._scrub(f"model.url '{self.base_url}': {err}")) from err
        # as the in-process backend: the tokenizer's added tokens (the Qwen-VL list; model.path's
        # tokenizer.json when given) and the protocol's tags
        self._specials = special_text_order(QWEN_VL_SPECIAL_TEXTS + local_special_texts(options.path) + PROTOCOL_TAGS)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.requests = 0
        self.failures = 0
        self.last_latency_s = 0.0
        self.last_failure = ""
        self.server_info: dict[str, Any] = {}
        self.dialect, self.model_name = self._connect()
        if self.dialect != "vllm" and (options.min_pixels or options.max_pixels):
            LOG.warning("model.min_pixels/max_pixels are not sent to a %s server: set the image budget on the "
                        "server", self.dialect)
        LOG.info("model server %s: dialect %s, model %s", self.base_url, self.dialect,
                 self.model_name or "<the server's pinned model>")

    # --- start-up -------------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _connect(self) -> tuple[str, str | None]:
        """Wait for the server (``startup_wait_s``), then find its dialect and the model name.

        Waited for: no connection, no reply, and HTTP 429 / 5xx (a proxy in front of a server that
        is still loading) unless ``/health`` shows ``transformers serve``, whose ``/v1/models``
        answers 500 for good when offline."""
        deadline = time.monotonic() + self.options.startup_wait_s
        transformers_health = False
        while True:
            try:
                status, models = self._probe("/models")
                break
            except HttpError as err:
                unreachable = err.kind in ("connection", "timeout")
                not_ready = err.kind == "status" and err.status is not None and (err.status == 429 or err.status >= 500)
                if not_ready and self._health_is_transformers():
                    transformers_health = True
                    status, models = err.status or 0, None  # transformers serve: /v1/models gives 500
                    break
                if (unreachable or not_ready) and time.monotonic() < deadline:
                    time.sleep(STARTUP_POLL_S)
                    continue
                if unreachable:
                    raise ModelLoadError(self._scrub(
                        f"model server {self.base_url} unreachable after {self.options.startup_wait_s:g} s "
                        f"(model.startup_wait): {err}")) from err
                if not_ready:
                    raise ModelLoadError(self._scrub(
                        f"model server {self.base_url} not ready after {self.options.startup_wait_s:g} s "
                        f"(model.startup_wait): {err}")) from err
                if err.kind in ("tls", "request"):
                    raise ModelLoadError(self._scrub(f"model server {self.base_url}: {err}")) from err
                if err.status in (401, 403):
                    raise ModelLoadError(self._scrub(
                        f"model server {self.base_url} refused the API key (HTTP {err.status}); check "
                        f"${self.options.api_key_env or '<model.api_key_env unset>'}")) from err
                status, models = err.status or 0, None  # e.g. a server without /v1/models (404)
                break
        served = self._served_models(models)
        dialect = self.options.dialect
        if dialect == "auto":
            dialect = "transformers" if transformers_health else self._detect_dialect(models)
        name: str | None = self.options.name or None
        if name is None:
            if len(served) == 1:
                name = served[0]
            elif served:
                raise ModelLoadError(f"model server {self.base_url} serves several models {served}: "
                                     "choose one with model.name")
            elif dialect != "transformers":
                raise ModelLoadError(f"model server {self.base_url} lists no model (/v1/models: HTTP {status}); "
                                     "set model.name")
        elif served and name not in served:
            raise ModelLoadError(f"model server {self.base_url} does not serve model.name '{name}'; it serves "
                                 f"{served}")
        self.server_info = {"models": served} if served else {}
        return dialect, name

    def _probe(self, path: str) -> tuple[int, Any]:
        return self.client.request("GET", path, retries=0, timeout_s=min(PROBE_TIMEOUT_S, self.options.timeout_s))

    @staticmethod
    def _served_models(models: Any) -> list[str]:  # noqa: ANN401 - parsed JSON
        data = models.get("data") if isinstance(models, dict) else None
        if not isinstance(data, list):
            return []
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]

    def _detect_dialect(self, models: Any) -> str:  # noqa: ANN401 - parsed JSON
        data = models.get("data") if isinstance(models, dict) else None
        owners = {str(m.get("owned_by", "")).lower() for m in data or [] if isinstance(m, dict)}
        for dialect in ("vllm", "sglang"):
            if dialect in owners:
                return dialect
        if self._health_is_transformers():
            return "transformers"
        raise ModelLoadError(f"cannot tell which server runs at {self.base_url} (owners {sorted(owners) or 'none'}); "
                             "set model.dialect to vllm, sglang or transformers")

    def _health_is_transformers(self) -> bool:
        """Whether ``/health`` answers as ``transformers serve`` does (a JSON object with ``status``;
        vLLM's is empty, SGLang's plain)."""
        try:
            _, health = self.client.request("GET", "/health", retries=0, prefixed=False,
                                            timeout_s=min(PROBE_TIMEOUT_S, self.options.timeout_s))
        except HttpError:
            return False
        return isinstance(health, dict) and "status" in health

    # --- the contract ---------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The server, its dialect and model, and the request counters (never the key)."""
        with self._stats_lock:
            return {
                "backend": "server",
                "url": self.base_url,
                "dialect": self.dialect,
                "model": self.model_name or "<pinned by the server>",
                "device": f"server {self.client.host}:{self.client.port}",
                "max_concurrency": self.options.max_concurrency,
                "requests": self.requests,
                "failures": self.failures,
                "last_latency_s": round(self.last_latency_s, 4),
                **({"last_failure": self.last_failure} if self.last_failure else {}),
                **({"served": dict(self.server_info)} if self.server_info else {}),
            }

    def escape_special_text(self, text: str) -> str:
        """Keep the goal from forming the Qwen-VL special tokens or the protocol's tags (the fixed
        list, plus the added tokens of ``model.path``'s tokenizer.json when there is one): the same
        set as the in-process backend, so both give the model the same prompt."""
        return split_special_texts(text, self._specials)

    def generate(
        self,
        conversations: Sequence[Conversation],
        images: Sequence[Image.Image],
        settings: GenerationSettings,
        timings: BatchTimings | None = None,
    ) -> list[Generation]:
        """One request per (conversation, image) pair, sent concurrently (``max_concurrency``)."""
        check_batch(conversations, images)
        timings = timings if timings is not None else BatchTimings()
        t0 = time.perf_counter()
        bodies = [
            request_body(self.dialect, model=self.model_name, messages=chat_messages(c, png_data_url(i)),
                         settings=settings, min_pixels=self.options.min_pixels, max_pixels=self.options.max_pixels)
            for c, i in zip(conversations, images)
        ]
        t1 = time.perf_counter()
        if len(bodies) == 1:
            results = [self._ask(bodies[0])]
        else:
            results = list(self._executor().map(self._ask, bodies))
        t2 = time.perf_counter()
        timings.processor_s += t1 - t0
        timings.model_s += t2 - t1
        timings.extra["encode_s"] = timings.extra.get("encode_s", 0.0) + (t1 - t0)
        timings.extra["http_s"] = timings.extra.get("http_s", 0.0) + (t2 - t1)
        return results

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.options.max_concurrency, thread_name_prefix="sole_r1_http")
            return self._pool

    def _ask(self, body: dict[str, Any]) -> Generation:
        t0 = time.perf_counter()
        try:
            try:
                _, payload = self.client.request("POST", CHAT_PATH, body)
            except HttpError as err:
                raise InferenceError(self._scrub(self._explain(err))) from err
            try:
                generation, served = generation_from_reply(payload, max_new_tokens=int(body["max_tokens"]))
            except InferenceError as err:
                raise InferenceError(self._scrub(f"model server {self.base_url}: {err}")) from err
        except InferenceError as err:
            with self._stats_lock:
                self.requests += 1
                self.failures += 1
                self.last_failure = str(err)
            raise
        with self._stats_lock:
            self.requests += 1
            self.last_latency_s = time.perf_counter() - t0
            if self.model_name is None and served:
                self.server_info["served_as"] = served
        return generation

    def _explain(self, err: HttpError) -> str:
        name = self.model_name or "<pinned>"
        if err.kind == "status" and err.status in (401, 403):
            return (f"model server refused the API key (HTTP {err.status}); check "
                    f"${self.options.api_key_env or '<model.api_key_env unset>'}: {err}")
        if err.kind == "status" and err.status is not None and 400 <= err.status < 500 and err.status != 429:
            return f"model server rejected the request for model '{name}' ({self.dialect} dialect): {err}"
        if err.kind == "cancelled":
            return f"cancelled (shutdown): {err}"
        if err.kind == "request":
            hint = f"; check ${self.options.api_key_env}" if self.options.api_key_env else ""
            return f"model server: {err}{hint}"
        return f"model server: {err}"

    def cancel(self) -> None:
        """Abort requests in flight (their sockets are shut down) and fail later ones at once."""
        self.client.cancel()

    def close(self) -> None:
        """Close connections and the request threads."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()


__all__ = ["OpenAIServerBackend", "api_base_url", "local_special_texts", "read_api_key"]
