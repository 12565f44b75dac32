"""A total deadline for one HTTP attempt, below httpx: every socket operation gets what is left.

httpx's timeouts bound each connect, read and write on its own; a receiver that trickles its
response a byte at a time resets the read timeout with every byte and can hold an attempt for
ever. :class:`DeadlineBackend` is an httpcore network backend that wraps the standard one: while
:meth:`DeadlineBackend.deadline` is active in the calling context, each operation waits at most
until the deadline, and an operation started after it fails at once as a timeout. httpcore maps
those to its timeout exceptions and httpx to ``httpx.TimeoutException``; the handler tells them
apart from an ordinary read timeout by the clock.
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
import typing
from collections.abc import Iterable, Iterator

import httpcore
import httpx

__all__ = ["DeadlineBackend", "install"]

_SocketOption = typing.Any  # httpcore's SOCKET_OPTION union; only passed through

#: The monotonic time by which the current attempt must be over; None outside an attempt.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("cvat_watch_deadline", default=None)


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` shortened to what is left of the deadline; ``error`` once it has passed."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the attempt's total deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wrapped = self._stream.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(wrapped)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """The standard (or given) network backend, with every operation bounded by the deadline."""

    def __init__(self, backend: httpcore.NetworkBackend | None = None) -> None:
        self._backend = backend if backend is not None else httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)

    @staticmethod
    @contextlib.contextmanager
    def deadline(seconds: float) -> Iterator[float]:
        """Bound every network operation in the block to ``seconds`` from now, in total.

        Yields the monotonic deadline. Context-local: other threads' attempts are unaffected.
        """
        when = time.monotonic() + seconds
        token = _deadline.set(when)
        try:
            yield when
        finally:
            _deadline.reset(token)


def install(client: httpx.Client) -> bool:
    """Put a :class:`DeadlineBackend` under every connection pool of ``client``; whether any.

    httpx builds its pools itself (honouring proxies from the environment and its CA bundle),
    and offers no way to pass a network backend through; httpcore's pools read theirs from one
    attribute when they open a connection. A client given a transport that is not httpx's own
    (a test's MockTransport) has no pool and no network to bound.
    """
    transports = [client._transport, *client._mounts.values()]
    installed = False
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        if pool is None:
            continue
        backend = pool._network_backend
        if not isinstance(backend, DeadlineBackend):
            pool._network_backend = DeadlineBackend(backend)
        installed = True
    return installed
