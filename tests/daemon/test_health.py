"""Liveness and the systemd watchdog: a real notify socket, a real daemon with a 100,000-task export."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvat_watch.daemon.health import Liveness, WatchdogPinger
from cvat_watch.testing.process import (
    DaemonRig,
    GeneratedExport,
    NotifySocket,
    wait_until,
    write_daemon_config,
)


class Clock:
    """A clock the test moves by hand (time is an input of Liveness, not our code under test)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_liveness_is_alive_while_beating_and_stuck_without_beats() -> None:
    """No beat for longer than stall_after reads as stuck, with the reason; a beat makes it alive again."""
    clock = Clock()
    liveness = Liveness(stall_after=10.0, clock=clock)
    assert liveness.check() == (True, "ok")
    clock.now += 11
    alive, reason = liveness.check()
    assert not alive and "not turned for 11 s" in reason
    liveness.beat()
    assert liveness.check()[0]


def test_long_work_counts_as_alive_up_to_its_limit() -> None:
    """Inside busy(), a long reload is alive (and says what it does) until busy_limit; leaving it beats."""
    clock = Clock()
    liveness = Liveness(stall_after=10.0, busy_limit=100.0, clock=clock)
    with liveness.busy("reloading watch big"):
        clock.now += 50
        alive, reason = liveness.check()
        assert alive and "reloading watch big" in reason
        clock.now += 60
        alive, reason = liveness.check()
        assert not alive and "reloading watch big has run for 110 s" in reason
    assert liveness.check() == (True, "ok")


def test_pinger_pings_while_alive_and_stops_when_stuck(tmp_path: Path) -> None:
    """WATCHDOG=1 arrives while the loop is alive and stops while it is stuck, so systemd can restart it."""
    clock = Clock()
    liveness = Liveness(stall_after=10.0, clock=clock)
    with NotifySocket(tmp_path / "notify.sock") as notify:
        pinger = WatchdogPinger(liveness, interval=0.02, environ={"NOTIFY_SOCKET": str(notify.path)})
        pinger.start()
        try:
            notify.wait_for("WATCHDOG=1", count=3)
            clock.now += 11  # the main loop stops turning
            # Any ping already on its way has landed once two more intervals have passed.
            settled = notify.count("WATCHDOG=1")
            wait_until(lambda: notify.count("WATCHDOG=1") in (settled, settled + 1), what="pings to stop")
            stuck = notify.count("WATCHDOG=1")
            liveness.beat()
            notify.wait_for("WATCHDOG=1", count=stuck + 2)
        finally:
            pinger.stop()


def test_pinger_follows_watchdog_usec_and_pid() -> None:
    """A pinger exists only where systemd asks for one, pinging at a quarter of WatchdogSec."""
    liveness = Liveness()
    assert WatchdogPinger.from_environment(liveness, {}) is None
    assert (
        WatchdogPinger.from_environment(liveness, {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    )
    pinger = WatchdogPinger.from_environment(liveness, {"WATCHDOG_USEC": "30000000"})
    assert pinger is not None and pinger.interval == pytest.approx(7.5)


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeneratedExport]:
    """10,000 tasks of one job each, no shapes: a reload of a second or so (the benchmark runs 100,000)."""
    yield GeneratedExport(tmp_path_factory.mktemp("big"), tasks=10_000, shapes_per_image=0)


def test_watchdog_is_fed_during_a_long_reload(tmp_path: Path, big_export: GeneratedExport) -> None:
    """Between RELOADING=1 and READY=1 of a configuration reload over 10,000 tasks, WATCHDOG=1 keeps coming."""
    config = write_daemon_config(
        tmp_path / "cvat-watch.toml", watches=[big_export.watch("big", recheck_interval=3600)], handlers=[]
    )
    with DaemonRig(tmp_path) as rig:
        # 100 ms WatchdogSec: a ping every 25 ms, so a reload of seconds must see many.
        daemon = rig.start(config, env={"WATCHDOG_USEC": "100000"}, timeout=120)
        # A changed watch is loaded anew on reload (an unchanged one keeps its runner).
        config.write_text(config.read_text().replace("recheck_interval = 3600", "recheck_interval = 3599"))
        daemon.signal(signal.SIGHUP)
        wait_until(
            lambda: (
                any(m.startswith("RELOADING=1") for m in rig.notify.messages)
                and rig.notify.messages[-1:] != []
                and _ready_after_reloading(rig.notify.messages)
            ),
            timeout=120,
            what="the reload to finish",
        )
        messages = rig.notify.messages
        start = next(i for i, m in enumerate(messages) if m.startswith("RELOADING=1"))
        end = next(i for i in range(start, len(messages)) if messages[i] == "READY=1")
        pings = sum(m == "WATCHDOG=1" for m in messages[start:end])
        assert "MONOTONIC_USEC=" in messages[start]
        assert pings >= 3, messages[start : end + 1]
        assert daemon.stop() == 0


def _ready_after_reloading(messages: list[str]) -> bool:
    starts = [i for i, m in enumerate(messages) if m.startswith("RELOADING=1")]
    return bool(starts) and "READY=1" in messages[starts[0] :]
