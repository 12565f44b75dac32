"""sd_notify: datagrams reach a real unix socket; the watchdog interval follows systemd's variables."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvat_watch.daemon import sdnotify


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a file in tmp_path, and its path."""
    path = str(tmp_path / "notify.sock")
    if len(os.fsencode(path)) >= 100:  # sun_path holds 108 bytes; a deep tmp_path may not fit
        pytest.skip("tmp_path is too long for a unix socket address")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


@pytest.mark.parametrize(
    "message",
    ["READY=1", "STATUS=watching 3 files", "WATCHDOG=1", "STOPPING=1", "STATUS=Zählung läuft"],
)
def test_message_arrives_exactly(receiver: tuple[socket.socket, str], message: str) -> None:
    """Each message arrives as one datagram with exactly the UTF-8 bytes given."""
    sock, path = receiver
    assert sdnotify.notify(message, environ={"NOTIFY_SOCKET": path}) is True
    assert sock.recv(4096) == message.encode("utf-8")


def test_multiline_reloading_message_arrives_as_one_datagram(receiver: tuple[socket.socket, str]) -> None:
    """The two-line reloading message travels as a single datagram."""
    sock, path = receiver
    message = sdnotify.reloading_message()
    assert sdnotify.notify(message, environ={"NOTIFY_SOCKET": path})
    assert sock.recv(4096).decode() == message


def test_reads_os_environ_by_default(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without an explicit environ, $NOTIFY_SOCKET comes from the process environment."""
    sock, path = receiver
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    assert sdnotify.notify("READY=1")
    assert sock.recv(4096) == b"READY=1"


def test_abstract_namespace_socket() -> None:
    """An address starting with '@' is sent to the Linux abstract namespace."""
    name = f"cvat-watch-test-{os.getpid()}-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1"


def test_unset_socket_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    """No $NOTIFY_SOCKET (not under systemd) means nothing is sent and False is returned."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.notify("READY=1", environ={}) is False
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": ""}) is False


def test_unreachable_socket_returns_false_and_logs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A socket that cannot be reached gives False, never an exception, and one debug line."""
    monkeypatch.setattr(sdnotify, "_failure_logged", False)
    env = {"NOTIFY_SOCKET": str(tmp_path / "missing.sock")}
    with caplog.at_level(logging.DEBUG, logger="cvat_watch.daemon.sdnotify"):
        assert sdnotify.notify("READY=1", environ=env) is False
        assert sdnotify.notify("WATCHDOG=1", environ=env) is False
    records = [r for r in caplog.records if r.name == "cvat_watch.daemon.sdnotify"]
    assert len(records) == 1
    assert records[0].levelno == logging.DEBUG
    assert "missing.sock" in records[0].getMessage()


def test_watchdog_interval_is_half_the_timeout() -> None:
    """WATCHDOG_USEC=2000000 (2 s) gives a ping every 1.0 s."""
    assert sdnotify.watchdog_interval(environ={"WATCHDOG_USEC": "2000000"}) == 1.0


def test_watchdog_interval_for_this_pid() -> None:
    """WATCHDOG_PID naming this process keeps the interval."""
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert sdnotify.watchdog_interval(environ=env) == 1.0


def test_watchdog_interval_for_another_pid_is_none() -> None:
    """WATCHDOG_PID naming another process means this one must not ping."""
    env = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert sdnotify.watchdog_interval(environ=env) is None


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": ""},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "me"},
    ],
)
def test_watchdog_interval_absent_or_invalid_is_none(env: dict[str, str]) -> None:
    """No usable WATCHDOG_USEC (unset, zero, not a number) or an unreadable WATCHDOG_PID gives None."""
    assert sdnotify.watchdog_interval(environ=env) is None


def test_watchdog_interval_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit environ, the process environment is read."""
    monkeypatch.setenv("WATCHDOG_USEC", "500000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() == 0.25


def test_reloading_message_carries_the_monotonic_clock() -> None:
    """The reloading message is RELOADING=1 plus the current CLOCK_MONOTONIC in microseconds."""
    before = time.monotonic_ns() // 1000
    message = sdnotify.reloading_message()
    after = time.monotonic_ns() // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", message)
    assert match is not None
    assert before <= int(match.group(1)) <= after


def test_a_full_socket_queue_never_blocks_the_sender(tmp_path: Path) -> None:
    """When nobody drains NOTIFY_SOCKET, notify returns False instead of blocking the daemon."""
    path = tmp_path / "full.sock"
    environ = {"NOTIFY_SOCKET": str(path)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reader:
        reader.bind(str(path))
        results = [sdnotify.notify(f"STATUS={'x' * 1000} {i}", environ=environ) for i in range(500)]
    assert results[0] is True
    assert results[-1] is False
