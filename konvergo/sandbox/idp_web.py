"""SANDBOX ONLY: the identity platform's HTTP plumbing (stdlib ``http.server``).

Requests become :class:`Request` values, handlers return :class:`Reply` values; the server
knows nothing about OAuth. Listens on loopback only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

#: Microsoft's token replies carry these; a client must not cache tokens in proxies.
NO_STORE = [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")]
FORM_TYPE = "application/x-www-form-urlencoded"


def _first_values(pairs: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in pairs:
        out.setdefault(key, value)
    return out


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def form(self) -> dict[str, str]:
        """The form body; empty unless the body is form-encoded (the token endpoint rule)."""
        if self.content_type != FORM_TYPE:
            return {}
        text = self.body.decode("utf-8", errors="replace")
        return _first_values(parse_qsl(text, keep_blank_values=True))

    def json(self) -> dict[str, Any]:
        if not self.body.strip():
            return {}
        data = json.loads(self.body)
        if not isinstance(data, dict):
            raise ValueError("a JSON object is expected")
        return data


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: list[tuple[str, str]] = field(default_factory=list)


def json_reply(data: Any, status: int = 200, *, no_store: bool = False) -> Reply:
    headers = list(NO_STORE) if no_store else []
    body = json.dumps(data).encode("utf-8")
    return Reply(status, body, "application/json; charset=utf-8", headers)


def html_reply(html: str, status: int = 200) -> Reply:
    return Reply(status, html.encode("utf-8"), "text/html; charset=utf-8", list(NO_STORE))


def redirect_reply(location: str) -> Reply:
    return Reply(302, b"", "text/html; charset=utf-8", [("Location", location), *NO_STORE])


App = Callable[[Request], Reply]


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive for requests' pooled sessions; every reply sets
    # Content-Length so that is safe.
    protocol_version = "HTTP/1.1"
    server: _Server

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(
            method=self.command,
            path=unquote(parts.path),
            query=_first_values(parse_qsl(parts.query, keep_blank_values=True)),
            headers=self.headers,
            body=body,
        )
        try:
            reply = self.server.app(request)
        except Exception as exc:  # the sandbox must answer, never hang a client
            reply = json_reply({"error": "server_error", "error_description": repr(exc)}, 500)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: test output should show assertions, not access logs."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, _Handler)


class WebServer:
    """A background HTTP server on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, app: App, host: str, port: int) -> None:
        self._server = _Server((host, port), app)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-idp-{self.port}",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
