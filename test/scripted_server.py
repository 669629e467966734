"""A real HTTP server on 127.0.0.1 (standard library, own thread) that answers from a script: for
the server backend's fault tests (HTTP errors, malformed replies, delays, dropped connections).
Remote-equals-local runs against a real ``transformers serve`` (test/integration)."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(text: str = "<think>ok</think><answer>42%</answer>", *, reasoning: str | None = None,
               model: str = "served-model", prompt_tokens: int = 300, completion_tokens: int = 12,
               finish_reason: str = "stop", usage: bool = True) -> dict[str, Any]:
    """A chat-completion reply body (``usage=False``: without the ``usage`` object, as some servers
    and proxies answer)."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    body: dict[str, Any] = {"id": "x", "object": "chat.completion", "model": model,
                            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}
    if usage:
        body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    return body


@dataclass
class Reply:
    """One scripted answer: status, JSON (or raw bytes), headers; ``hold`` blocks until set;
    ``truncate`` announces more bytes than it sends, then closes."""

    status: int = 200
    body: Any = field(default_factory=completion)
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    hold: threading.Event | None = None
    truncate: bool = False


@dataclass
class Seen:
    """A request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class ScriptedServer:
    """``models`` answers GET /v1/models (the JSON; ``"error"``: HTTP 500; a :class:`Reply`: that
    reply, e.g. a proxy's 503 while the model loads); ``health`` answers GET /health (None: 404);
    POSTs are answered by ``script`` in order, then by ``default``."""

    def __init__(self, *, models: Any = None, health: Any = None,
                 default: Reply | Callable[[Seen], Reply] | None = None, port: int = 0,
                 tls: tuple[str, str] | None = None) -> None:
        self.models = models if models is not None else {"object": "list", "data": [
            {"id": "served-model", "object": "model", "owned_by": "vllm"}]}
        self.health = health
        self.script: list[Reply] = []
        self.default = default or Reply()
        self.seen: list[Seen] = []
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with outer.lock:
                    outer.connections.append(self.connection)

            def _record(self, body: Any) -> Seen:
                seen = Seen(self.command, self.path, dict(self.headers.items()), body)
                with outer.lock:
                    outer.seen.append(seen)
                return seen

            def _send(self, reply: Reply) -> None:
                if reply.hold is not None:
                    reply.hold.wait(30)
                data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) + (100 if reply.truncate else 0)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                if reply.truncate:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)

            def do_GET(self) -> None:
                self._record(None)
                if self.path.endswith("/v1/models"):
                    models = outer.models
                    if isinstance(models, Reply):
                        self._send(models)
                    else:
                        self._send(Reply(500, {"detail": "Internal Server Error"}) if models == "error"
                                   else Reply(200, models))
                elif self.path == "/health":
                    self._send(Reply(200, outer.health) if outer.health is not None else Reply(404, {"detail": "no"}))
                else:
                    self._send(Reply(404, {"detail": "not found"}))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                seen = self._record(json.loads(self.rfile.read(length) or b"null"))
                with outer.lock:
                    reply = outer.script.pop(0) if outer.script else outer.default
                if callable(reply):
                    reply = reply(seen)
                self._send(reply)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up (timeout, cancel) is part of the script

        self.httpd = Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def posts(self) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == "POST"]

    def stop(self) -> None:
        """Stop like a killed server: the listener and every open connection close."""
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            connections, self.connections = self.connections, []
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
