"""Is the daemon alive? The main loop's heartbeat, and the systemd watchdog fed from it.

The main loop beats on every turn. A reload of a large export keeps it away from its loop for
seconds, so long work is wrapped in :meth:`Liveness.busy`: the daemon counts as alive while
busy, up to ``busy_limit``. :class:`WatchdogPinger` sends ``WATCHDOG=1`` from its own thread
whenever :meth:`Liveness.check` says alive, so a long reload never starves systemd's watchdog,
while a main loop that is truly stuck (no beat, or busy far too long) stops the pings and lets
systemd restart the service. ``GET /healthz`` answers from the same check.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import attrs

from cvat_watch.daemon import sdnotify

__all__ = ["Liveness", "WatchdogPinger"]

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class Liveness:
    """The main loop's heartbeat. ``stall_after``: how long without a beat counts as stuck."""

    stall_after: float = 30.0
    busy_limit: float = 900.0
    clock: Callable[[], float] = time.monotonic
    _last_beat: float = attrs.field(init=False)
    # (since, what) of the work in progress; one tuple, replaced whole, read by other threads.
    _busy: tuple[float, str] | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        self._last_beat = self.clock()

    def beat(self) -> None:
        self._last_beat = self.clock()

    @contextlib.contextmanager
    def busy(self, what: str) -> Iterator[None]:
        """Long work in the main loop: alive meanwhile (up to ``busy_limit``), a beat at the end."""
        self._busy = (self.clock(), what)
        try:
            yield
        finally:
            self._busy = None
            self.beat()

    def check(self) -> tuple[bool, str]:
        """(alive, a one-line reason)."""
        now = self.clock()
        busy = self._busy
        if busy is not None:
            since, what = busy
            if now - since > self.busy_limit:
                return False, f"stuck: {what} has run for {now - since:.0f} s"
            return True, f"ok: {what} for {now - since:.1f} s"
        age = now - self._last_beat
        if age > self.stall_after:
            return False, f"stuck: the main loop has not turned for {age:.0f} s"
        return True, "ok"


@attrs.define(eq=False)
class WatchdogPinger:
    """Sends ``WATCHDOG=1`` every ``interval`` seconds while ``liveness`` says alive."""

    liveness: Liveness
    interval: float
    environ: Mapping[str, str] | None = None
    _stop: threading.Event = attrs.field(factory=threading.Event, init=False)
    _thread: threading.Thread | None = attrs.field(default=None, init=False)

    @classmethod
    def from_environment(cls, liveness: Liveness, environ: Mapping[str, str] | None) -> WatchdogPinger | None:
        """A pinger if systemd expects watchdog pings (``$WATCHDOG_USEC``), else None."""
        half = sdnotify.watchdog_interval(environ=environ)
        if half is None:
            return None
        # Half of the half: a ping that comes late by a scheduling hiccup still lands well
        # inside half of WatchdogSec.
        return cls(liveness, interval=half / 2, environ=environ)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="cvat-watch watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        silent = False
        while True:
            alive, reason = self.liveness.check()
            if alive:
                sdnotify.notify("WATCHDOG=1", environ=self.environ)
                if silent:
                    log.warning("watchdog: the main loop is back (%s); pinging again", reason)
                silent = False
            elif not silent:
                log.error("watchdog: %s; no longer telling systemd that all is well", reason)
                silent = True
            if self._stop.wait(self.interval):
                return
