"""Test support for the handlers: a scripted HTTP receiver on 127.0.0.1 and a sample event.

``Receiver`` is a real threaded ``http.server`` on an ephemeral loopback port. It records every
request (method, path, headers, body) and answers with the scripted ``Reply`` objects in order,
then with the default reply (200 unless given). A reply can be delayed; the delay ends early when
the receiver stops, and ``stop()`` (or leaving the ``with`` block) closes every connection and
joins every thread. ``Receiver(port=…)`` binds a chosen port, so a test can start a receiver where
a webhook has been failing with "connection refused".
"""

from __future__ import annotations

import collections
import http.server
import socket
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import attrs

__all__ = ["Receiver", "Recorded", "Reply", "free_port", "sample_event"]


@attrs.frozen
class Reply:
    """What the receiver answers to one request."""

    status: int = 200
    headers: Mapping[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    delay: float = 0.0


@attrs.frozen
class Recorded:
    """One request as the receiver saw it; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int
    #: The status the receiver answered with (or was about to, when the client hung up first).
    status: int = 200
    #: ``time.monotonic()`` when the request had been read, for latency measurements.
    at: float = 0.0


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # so that server_close() joins the handler threads
    block_on_close = True

    def __init__(self, owner: Receiver, port: int = 0) -> None:
        self.owner = owner
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _RequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        with self.connections_lock:
            self.open_connections.add(conn)
        return conn, address

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (a timed-out handler) is expected; anything else is a bug here.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is observable
    timeout = 10  # an idle keep-alive connection cannot pin a thread for long
    server: _Server

    def do_POST(self) -> None:
        self.server.owner._handle(self)

    do_GET = do_PUT = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Receiver:
    """A scripted HTTP receiver bound to 127.0.0.1 on a free port (or on ``port``).

    ``default`` is the answer once the script is used up (200 unless given).
    """

    def __init__(self, *, port: int = 0, default: Reply | None = None) -> None:
        self._replies: collections.deque[Reply] = collections.deque()
        self._requests: list[Recorded] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._default = default if default is not None else Reply()
        self._server = _Server(self, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, name="receiver"
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order; 200 afterwards."""
        with self._changed:
            self._replies.extend(replies)

    def set_default(self, reply: Reply) -> None:
        """Answer with ``reply`` from now on, once the script is used up."""
        with self._changed:
            self._default = reply

    @property
    def requests(self) -> list[Recorded]:
        with self._changed:
            return list(self._requests)

    def wait_for(self, count: int, *, timeout: float = 5.0) -> list[Recorded]:
        """Wait until ``count`` requests have arrived and return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} requests, got {len(self._requests)}")
                self._changed.wait(left)
            return list(self._requests)

    def _handle(self, handler: _RequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._changed:
            reply = self._replies.popleft() if self._replies else self._default
            recorded = Recorded(
                method=handler.command,
                path=handler.path,
                headers={name.lower(): value for name, value in handler.headers.items()},
                body=body,
                client_port=int(handler.client_address[1]),
                status=reply.status,
                at=time.monotonic(),
            )
            self._requests.append(recorded)
            self._changed.notify_all()
        if reply.delay and self._stopping.wait(reply.delay):
            handler.close_connection = True
            return
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("content-length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():  # shutdown() would wait forever for a loop never started
            self._server.shutdown()
        with self._server.connections_lock:
            connections = list(self._server.open_connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_event(**overrides: Any) -> dict[str, Any]:
    """A ``task.completed`` event shaped like the daemon's, with top-level keys overridden."""
    event: dict[str, Any] = {
        "type": "task.completed",
        "id": "evt_3f9a1c0d2b7e4a51",
        "timestamp": "2026-11-25T15:30:00Z",
        "watch": "street",
        "project": {"id": "3", "name": "p"},
        "task": {
            "id": "39",
            "name": "Test",
            "subset": "Test",
            "url": "https://cvat.example.com/tasks/39",
            "image_count": 2,
            "shape_count": 4,
            "jobs": [
                {
                    "id": "6",
                    "state": "completed",
                    "stage": "acceptance",
                    "assignee": "alice",
                    "url": "https://cvat.example.com/tasks/39/jobs/6",
                }
            ],
        },
        "job": None,
        "previous_state": None,
    }
    event.update(overrides)
    return event
