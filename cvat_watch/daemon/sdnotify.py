"""The systemd notification protocol (``sd_notify(3)``), without a dependency.

A service started with ``Type=notify`` (or ``notify-reload``) finds the address of a
datagram socket in ``$NOTIFY_SOCKET`` and sends newline-separated ``KEY=VALUE``
assignments to it: ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``RELOADING=1``,
``STOPPING=1``. Outside systemd the variable is unset and every call is a cheap no-op,
so the daemon can call :func:`notify` unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

__all__ = ["notify", "reloading_message", "watchdog_interval"]

logger = logging.getLogger(__name__)

# A failing socket (systemd restarted, a stale variable inherited from elsewhere) fails
# the same way on every call; one debug line says so without flooding the log.
_failure_logged = False
_failure_lock = threading.Lock()


def notify(message: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Send *message* as one datagram to ``$NOTIFY_SOCKET``.

    Returns True when the datagram was sent, False when there is no socket to send to
    (the variable is unset: not running under systemd) or sending failed. Never raises
    for a socket problem: readiness reporting must not take the daemon down.
    ``environ`` defaults to :data:`os.environ`.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        # systemd writes Linux abstract-namespace addresses with a leading '@'.
        address = "\0" + address[1:]
    # One socket per call rather than a shared one: the daemon sends a handful of
    # datagrams per watchdog period, so the cost is nothing, and there is no lock, no
    # socket surviving a fork, and no stale socket when NOTIFY_SOCKET changes.
    try:
        # Non-blocking: when the reader stops draining (systemd busy, a dead test harness) a
        # full socket queue must cost one dropped STATUS line, never a main loop stuck in
        # send() that SIGTERM can no longer reach.
        flags = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        with socket.socket(socket.AF_UNIX, flags) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except OSError as exc:
        _log_failure_once(address, exc)
        return False
    return True


def _log_failure_once(address: str, exc: OSError) -> None:
    global _failure_logged
    with _failure_lock:
        if _failure_logged:
            return
        _failure_logged = True
    shown = "@" + address[1:] if address.startswith("\0") else address
    logger.debug("cannot notify systemd at %s (further failures are not logged): %s", shown, exc)


def watchdog_interval(*, environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings, or None when systemd expects none.

    systemd sets ``$WATCHDOG_USEC`` to its timeout; pinging at half of it leaves room for
    a late wake-up. ``$WATCHDOG_PID``, when set, names the one process the setting is
    meant for: a child that inherited the environment must not ping.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        timeout_usec = int(usec)
    except ValueError:
        return None
    if timeout_usec <= 0:
        return None
    return timeout_usec / 2 / 1_000_000


def reloading_message() -> str:
    """The message that starts a reload under ``Type=notify-reload``.

    systemd needs the ``CLOCK_MONOTONIC`` time of the reload request (in microseconds),
    which is the clock :func:`time.monotonic_ns` reads on Linux.
    """
    return f"RELOADING=1\nMONOTONIC_USEC={time.monotonic_ns() // 1000}"
