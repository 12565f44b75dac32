"""The daemon's one small HTTP listener: a route table on a stdlib server in a thread.

Other parts of the daemon register routes on it (CVAT's webhooks here; ``/metrics``,
``/healthz``, ``/readyz`` and a status page elsewhere). It binds to loopback unless the
configuration says otherwise. Handlers get the raw body (so signatures can be checked over the
exact bytes) and return a :class:`Response`; the listener enforces a body size limit and socket
timeouts so one slow or greedy client cannot hold the daemon.

In the daemon, register routes through ``Daemon.add_http_routes(installer)``: the installer is
applied to the running listener and to any later one (a SIGHUP that changes ``[http] listen``).

Routes are exact paths or prefixes (``/cvat/webhook/`` + the rest of the path as ``tail``).
A handler that raises is answered with 500 and logged; it never stops the listener.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

from cvat_watch.config import parse_listen

__all__ = [
    "MAX_BODY_BYTES",
    "HttpListener",
    "Request",
    "Response",
    "parse_listen",
]

log = logging.getLogger(__name__)

#: Larger bodies are refused with 413 before they are read (CVAT's job payloads are ~1 KiB).
MAX_BODY_BYTES = 1024 * 1024
#: Seconds a client may take to send its request; a stalled one is dropped.
SOCKET_TIMEOUT = 10.0


@attrs.frozen
class Request:
    """What a route handler sees: the method, path, the path's tail after a prefix route,
    the query string, the headers (case-insensitive lookup through :meth:`header`) and the raw body."""

    method: str
    path: str
    tail: str
    query: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return None


@attrs.frozen
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = attrs.field(factory=dict)

    @classmethod
    def json_text(cls, status: int, text: str) -> Response:
        return cls(status, text.encode("utf-8"))

    @classmethod
    def text(cls, status: int, text: str, *, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(status, text.encode("utf-8"), content_type=content_type)


Handler = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    listener: HttpListener


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT
    server_version = "cvat-watch"
    sys_version = ""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        listener = self.server.listener
        handler, tail, allowed = listener.lookup("GET" if method == "HEAD" else method, path)
        if handler is None:
            # Drain nothing: close the connection so an unread body cannot be taken as a request.
            self.close_connection = True
            if allowed:
                self._send(
                    Response(405, b'{"error": "method not allowed"}', headers={"Allow": ", ".join(allowed)})
                )
            else:
                self._send(Response(404, b'{"error": "not found"}'))
            return
        body = b""
        if method in ("POST", "PUT", "PATCH"):
            length_text = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding"):
                self.close_connection = True
                self._send(Response(411, b'{"error": "send a Content-Length"}'))
                return
            try:
                length = int(length_text) if length_text is not None else 0
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                self._send(Response(400, b'{"error": "bad Content-Length"}'))
                return
            if length > listener.max_body:
                self.close_connection = True
                self._send(Response(413, b'{"error": "body too large"}'))
                return
            body = self.rfile.read(length)
            if len(body) != length:
                self.close_connection = True
                return
        request = Request(
            method=method,
            path=path,
            tail=tail,
            query=query,
            headers={key: value for key, value in self.headers.items()},
            body=body,
        )
        try:
            response = handler(request)
        except Exception:
            log.exception("HTTP handler for %s %s failed", method, path)
            response = Response(500, b'{"error": "internal error"}')
        self._send(response, head=method == "HEAD")

    def _send(self, response: Response, *, head: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in response.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        # Access lines go to debug: a health check every few seconds must not flood the log.
        log.debug("http %s " + format, self.address_string(), *args)


@attrs.define
class HttpListener:
    """A route table served by a :class:`ThreadingHTTPServer` in a daemon thread.

    Register routes before or after :meth:`start`; lookups take a lock, so routes may change
    while serving (a SIGHUP reload re-registers the webhook routes of the new configuration).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    max_body: int = MAX_BODY_BYTES
    _routes: dict[tuple[str, str], Handler] = attrs.field(factory=dict)
    _prefixes: dict[tuple[str, str], Handler] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _server: _Server | None = None
    _thread: threading.Thread | None = None

    # --- routes ---------------------------------------------------------------------------
    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Serve ``method path`` exactly (``/metrics``)."""
        with self._lock:
            self._routes[(method.upper(), path)] = handler

    def add_prefix(self, method: str, prefix: str, handler: Handler) -> None:
        """Serve every path under ``prefix`` (``/cvat/webhook/``); the rest is ``Request.tail``."""
        if not prefix.endswith("/"):
            prefix += "/"
        with self._lock:
            self._prefixes[(method.upper(), prefix)] = handler

    def get(self, path: str, handler: Handler) -> None:
        self.add_route("GET", path, handler)

    def lookup(self, method: str, path: str) -> tuple[Handler | None, str, list[str]]:
        """(handler, tail, methods allowed on this path when the method is not)."""
        with self._lock:
            handler = self._routes.get((method, path))
            if handler is not None:
                return handler, "", []
            best: tuple[int, Handler, str] | None = None
            for (route_method, prefix), candidate in self._prefixes.items():
                matches = route_method == method and path.startswith(prefix) and len(path) > len(prefix)
                if matches and (best is None or len(prefix) > best[0]):
                    best = (len(prefix), candidate, path[len(prefix) :])
            if best is not None:
                return best[1], best[2], []
            allowed = sorted(
                {m for (m, p) in self._routes if p == path}
                | {m for (m, p) in self._prefixes if path.startswith(p) and len(path) > len(p)}
            )
            return None, "", allowed

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        if self._server is None:
            return self.host, self.port
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        if self._server is not None:
            return
        server_class = _Server
        if ":" in self.host:
            import socket

            class _Server6(_Server):
                address_family = socket.AF_INET6

            server_class = _Server6
        server = server_class((self.host, self.port), _RequestHandler)
        server.listener = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="cvat-watch-http", daemon=True
        )
        self._thread.start()
        log.info("HTTP listener on %s", self.url)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
