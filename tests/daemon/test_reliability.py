"""The daemon's reliability promises, measured: receivers that are down, slow, failing or gone,
SIGKILL at random points, a full disk, a read-only state folder, file churn and scale.

Everything is real: the daemon is ``python -m cvat_watch run`` in a subprocess, receivers are HTTP
servers on 127.0.0.1, signals are real signals. The scenarios shared with the benchmark
(``python -m benchmarks.reliability``) live in ``benchmarks/reliability.py``, which measures; the
tests here run them small and assert on the measurements.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from benchmarks import reliability
from benchmarks.reliability import Receipts, expected_events
from cvat_watch.daemon.events import TASK_COMPLETED, Event, TaskInfo
from cvat_watch.daemon.snapshot import Snapshot
from cvat_watch.daemon.store import Store
from cvat_watch.testing.process import (
    DaemonRig,
    GeneratedExport,
    StateDatabase,
    Workspace,
    run_cli,
    wait_until,
    write_daemon_config,
)
from cvat_watch.testing.receiver import Reply


def _ids(events: list[tuple[str, str, str, int]]) -> list[str]:
    return [event[0] for event in events]


def _per_task(events: list[tuple[str, str, str, int]]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for event_id, _kind, task, _generation in events:
        result.setdefault(task, []).append(event_id)
    return result


# -- 1. receiver down, then back ------------------------------------------------------------------


def test_receiver_down_then_back_gets_every_event_once_in_task_order(tmp_path: Path) -> None:
    """Events committed while the port refuses connections all arrive once, in per-task order, same ids."""
    run = reliability.receiver_down(tmp_path)
    expected = list(run.expected)
    # The store holds exactly the events the written states imply, and the receiver got each.
    assert [event[0] for event in run.store_events] == _ids(expected)
    assert run.receipts.ids == set(_ids(expected))
    assert run.receipts.duplicated == 0
    assert run.receipts.per_task() == _per_task(expected)
    assert run.attempts_while_down >= 5
    assert {row["status"] for row in run.deliveries} == {"delivered"}
    # The first request after recovery got a 503; its retry carried the same webhook-id.
    first = run.receipts.requests[0]
    assert first.status == 503
    assert [r.headers["webhook-id"] for r in run.receipts.requests].count(first.headers["webhook-id"]) == 2
    # Every attempt of one delivery is the same row: its refused attempts were counted on it.
    assert max(row["attempts"] for row in run.deliveries) >= 5


# -- 2. slow, failing and rate-limiting receivers ----------------------------------------------------

_READ_TIMEOUT = 3.0


def test_slow_and_failing_receivers_are_retried_on_schedule_and_hold_up_nobody(tmp_path: Path) -> None:
    """A receiver stuck past read_timeout, one answering 500 then 429 + Retry-After: both retried on
    schedule, while a healthy handler and another watch get their events at once."""
    first = GeneratedExport(tmp_path / "a", tasks=2)
    second = GeneratedExport(tmp_path / "b", tasks=2, seed=1)
    with DaemonRig(tmp_path) as rig:
        slow = rig.receiver()
        slow.script(Reply(delay=60))  # far past the read timeout; the delay ends when the test ends
        flaky = rig.receiver()
        flaky.script(Reply(500), Reply(429, headers={"Retry-After": "1"}))
        healthy = rig.receiver()
        handlers = [
            Workspace.webhook(
                slow.url(),
                name="slow",
                retry_delays="[0.5, 0.5, 0.5]",
                extra=f"read_timeout = {_READ_TIMEOUT}",
            ),
            Workspace.webhook(flaky.url(), name="flaky", retry_delays="[0.3, 0.3, 0.3]"),
            Workspace.webhook(healthy.url(), name="healthy"),
        ]
        config = write_daemon_config(
            tmp_path / "cvat-watch.toml", handlers=handlers, watches=[first.watch("a"), second.watch("b")]
        )
        daemon = rig.start(config)
        epoch = StateDatabase(tmp_path / "state" / "cvat-watch.db").epoch()
        (event_a,) = _ids(expected_events("a", [frozenset(), frozenset({"11"})], epoch=epoch))
        (event_b,) = _ids(expected_events("b", [frozenset(), frozenset({"11"})], epoch=epoch))
        first.write_jobs({"11"})
        stuck = slow.wait_for(1)[0]
        # The flaky receiver runs through 500 and 429 to 200 while the slow one holds its request.
        flaky.wait_for(3, timeout=10)
        second.write_jobs({"11"})
        written = time.monotonic()
        arrived = wait_until(
            lambda: [r for r in healthy.requests if r.headers["webhook-id"] == event_b],
            what="the other watch's event at the healthy receiver",
        )[0]
        # The stuck attempt, then (once it timed out) the other watch's event and the retry.
        slow_requests = slow.wait_for(3, timeout=15)
        assert daemon.stop() == 0, daemon.log

    # The healthy receiver did not wait for the stuck one: the other watch's event arrived while
    # the slow receiver's first request was still open.
    assert arrived.at < stuck.at + _READ_TIMEOUT
    assert arrived.at - written < 1.5
    assert [r.headers["webhook-id"] for r in healthy.requests] == [event_a, event_b]
    # 500: next attempt after retry_delays[0] (±10 % jitter); 429: not before its Retry-After.
    r1, r2, r3 = flaky.requests[:3]
    assert [r.status for r in (r1, r2, r3)] == [500, 429, 200]
    assert {r.headers["webhook-id"] for r in (r1, r2, r3)} == {event_a}
    assert 0.27 <= r2.at - r1.at <= 0.33 + 0.7
    assert 1.0 <= r3.at - r2.at <= 1.0 + 0.7
    # The slow one: retried read_timeout + retry_delays[0] after the first attempt, same id.
    assert [r.headers["webhook-id"] for r in slow_requests] == [event_a, event_b, event_a]
    retry = slow_requests[2]
    assert _READ_TIMEOUT + 0.45 <= retry.at - stuck.at <= _READ_TIMEOUT + 0.55 + 1.0


# -- 3. 410 Gone and 400 Bad Request -------------------------------------------------------------------


def test_gone_stops_the_handler_and_bad_request_is_a_dead_letter_after_one_attempt(tmp_path: Path) -> None:
    """A 410 marks the handler gone, also after a restart (no later deliveries queued, `deliveries`
    says gone); a 400 is a dead letter after one attempt."""
    run = reliability.gone_and_bad_request(tmp_path)
    first, *later = _ids(list(run.expected))
    assert [r.headers["webhook-id"] for r in run.gone.requests] == [first]
    gone_rows = [row for row in run.deliveries if row["handler_key"] == "gone"]
    assert [(row["event_id"], row["status"]) for row in gone_rows] == [(first, "gone")]
    assert "handler gone: gone:" in run.listing and "410" in run.listing
    assert "handler gone: gone:" in run.listing_failed
    bad_rows = {row["event_id"]: row for row in run.deliveries if row["handler_key"] == "bad"}
    assert (bad_rows[first]["status"], bad_rows[first]["attempts"]) == ("dead", 1)
    assert [r.headers["webhook-id"] for r in run.bad.requests].count(first) == 1
    assert all(bad_rows[event]["status"] == "delivered" for event in later)
    # A later event of the same task went out: the dead letter does not block its task.
    assert run.bad.ids == set(later)


# -- 4. SIGKILL at random points ---------------------------------------------------------------------------


def test_sigkill_at_random_points_loses_and_invents_nothing(tmp_path: Path) -> None:
    """Ten SIGKILLs anywhere in the pipeline: the receiver gets exactly the events the written states
    imply (duplicates only as re-sends of one id), in per-task order, and the store agrees."""
    run = reliability.sigkill_loop(tmp_path, kills=10, seed=1)
    expected = list(run.expected)
    assert len(run.states) > 10
    assert run.exit_code == 0
    assert run.integrity == "ok"
    assert run.store_ids == set(_ids(expected))
    assert run.receipts.ids == set(_ids(expected))
    assert run.receipts.per_task() == _per_task(expected)
    assert all(r.status == 200 for r in run.receipts.requests)


# -- 5. a full disk, a read-only or impossible state folder ---------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def _unmount(path: Path) -> None:
    subprocess.run(["umount", str(path)], capture_output=True, check=False)


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """How the state folder runs out of space: a tiny tmpfs, or RLIMIT_FSIZE set on the daemon."""
    state = tmp_path / "state"
    state.mkdir()
    if request.param == "tmpfs":
        if not _mount_tmpfs(state, "1m"):
            pytest.skip("mounting a tmpfs is not permitted here (the file-size-limit variant runs)")
        try:
            yield "tmpfs"
        finally:
            _unmount(state)
    else:
        yield "file-size-limit"


def _fill(folder: Path) -> Path:
    """Write a file into ``folder`` until its file system is full, to the last block."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 512):
            try:
                while True:
                    os.write(descriptor, b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    finally:
        os.close(descriptor)
    return filler


def test_disk_full_is_logged_survived_and_recovered(tmp_path: Path, full_disk: str) -> None:
    """With no space left, the daemon logs that the disk is full, keeps running and its database sound;
    when space returns, the change is committed and delivered."""
    export = GeneratedExport(tmp_path / "export", tasks=200)
    state = tmp_path / "state"
    db = StateDatabase(state / "cvat-watch.db")
    with DaemonRig(tmp_path) as rig:
        receiver = rig.receiver()
        config = write_daemon_config(
            tmp_path / "cvat-watch.toml",
            state_dir=state,
            watches=[export.watch("w", recheck_interval=0.5)],
            handlers=[Workspace.webhook(receiver.url())],
        )
        daemon = rig.start(config)
        pid = daemon.process.pid
        filler = None
        if full_disk == "tmpfs":
            filler = _fill(state)
        else:
            # Every file the daemon writes may not grow past its present size: the next commit,
            # which appends to the WAL, fails like on a full disk.
            limit = max(path.stat().st_size for path in state.iterdir())
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        done = frozenset(export.task_ids[:5])
        export.write_jobs(done)
        wait_until(lambda: "cannot commit a reload of watch 'w'" in daemon.log, what="the commit error")
        assert "disk is full" in daemon.log or "is the disk full" in daemon.log, daemon.log
        # It keeps trying (the periodic re-check) and keeps running.
        wait_until(lambda: daemon.log.count("cannot commit a reload") >= 2, what="a second attempt")
        assert daemon.process.poll() is None
        assert db.events() == []
        assert db.integrity() == "ok"
        if filler is not None:
            filler.unlink()
        else:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        expected = _ids(expected_events("w", [frozenset(), done], epoch=db.epoch()))
        wait_until(
            lambda: set(expected) <= Receipts(tuple(receiver.requests)).ids,
            timeout=15,
            what="the events once space is back",
        )
        assert {row[0] for row in db.events()} == set(expected)
        assert daemon.stop() == 0, daemon.log
    assert db.integrity() == "ok"
    assert db.baseline_completed("w") == done


def test_disk_full_at_start_fails_with_exit_2_naming_the_database(tmp_path: Path) -> None:
    """Starting on a full disk is one error line naming the database and the cause, exit code 2
    (systemd's Restart=on-failure tries again); the database stays sound."""
    export = GeneratedExport(tmp_path / "export", tasks=20)
    state = tmp_path / "state"
    state.mkdir()
    config = write_daemon_config(
        tmp_path / "cvat-watch.toml",
        state_dir=state,
        watches=[export.watch("w")],
        handlers=['[[handler]]\ntype = "log"'],
    )
    if not _mount_tmpfs(state, "1m"):
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        assert run_cli("once", "--config", str(config)).returncode == 0
        filler = _fill(state)
        export.write_jobs(export.task_ids[:2])
        result = run_cli("run", "--config", str(config), "--allow-root", timeout=30)
        filler.unlink()
        integrity = StateDatabase(state / "cvat-watch.db").integrity()
    finally:
        _unmount(state)
    assert result.returncode == 2
    assert str(state / "cvat-watch.db") in result.stderr and "disk" in result.stderr
    assert "Traceback" not in result.stderr
    assert integrity == "ok"


def test_state_dir_below_a_regular_file_fails_start_with_exit_2_naming_it(tmp_path: Path) -> None:
    """A state_dir that cannot exist is one error line naming the path and exit code 2."""
    export = GeneratedExport(tmp_path / "export", tasks=2)
    (tmp_path / "blocker").write_text("a file, not a folder")
    state = tmp_path / "blocker" / "state"
    config = write_daemon_config(
        tmp_path / "cvat-watch.toml",
        state_dir=state,
        watches=[export.watch("w")],
        handlers=['[[handler]]\ntype = "log"'],
    )
    result = run_cli("run", "--config", str(config), "--allow-root", timeout=30)
    assert result.returncode == 2
    # The state folder's lock file is the first thing a process that delivers opens there.
    assert str(state / "cvat-watch.lock") in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_read_only_state_dir_fails_start_with_exit_2_naming_it(tmp_path: Path) -> None:
    """A state folder on a read-only mount is one error line naming the file there and exit code 2."""
    export = GeneratedExport(tmp_path / "export", tasks=2)
    state = tmp_path / "state"
    config = write_daemon_config(
        tmp_path / "cvat-watch.toml",
        state_dir=state,
        watches=[export.watch("w")],
        handlers=['[[handler]]\ntype = "log"'],
    )
    # A first run creates the database; then the folder becomes a read-only bind mount of itself.
    assert run_cli("once", "--config", str(config)).returncode == 0
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "--bind", str(state), str(state)], capture_output=True, check=False
        ).returncode
        != 0
    ):
        pytest.skip("bind mounts are not permitted here")
    try:
        remount = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(state)], capture_output=True, check=False
        )
        assert remount.returncode == 0, remount.stderr
        result = run_cli("run", "--config", str(config), "--allow-root", timeout=30)
    finally:
        _unmount(state)
    assert result.returncode == 2
    assert str(state / "cvat-watch.lock") in result.stderr
    assert "read-only" in result.stderr.lower()
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# -- 6. churn ----------------------------------------------------------------------------------------------


def test_churn_of_hundreds_of_rewrites_ends_in_the_final_state_with_consistent_events(tmp_path: Path) -> None:
    """300 quick rewrites of XML and job status, atomic and in place: no crash, the final state
    committed, per-task events alternating from the initial to the final state, bounded memory."""
    run = reliability.churn(tmp_path, rewrites=300, seed=3)
    assert run.exit_code == 0, run.log
    assert "Traceback" not in run.log
    assert run.baseline == run.final
    assert run.leftover_events == []
    assert run.inconsistent_tasks() == []
    assert not set(run.receipts.per_task("w")) & run.untouched
    assert run.receipts.ids == {event[0] for event in run.store_events}
    assert run.rss_after_kib < 2 * run.rss_before_kib + 50 * 1024


# -- 7. scale ------------------------------------------------------------------------------------------------


def test_one_daemon_watching_twenty_exports_delivers_every_change(tmp_path: Path) -> None:
    """Twenty watches in one daemon, each with two tasks completing at once: 40 events, each once."""
    run = reliability.many_exports(tmp_path, exports=20)
    assert len(run.expected) == 40
    assert run.receipts.ids == set(run.expected) == run.store_ids
    assert run.receipts.duplicated == 0


def test_a_burst_of_completions_does_not_hold_back_another_watch(tmp_path: Path) -> None:
    """100 of 1,000 tasks (5,000 jobs) complete in one rewrite: all delivered, and another watch's
    change made meanwhile goes out while the burst is still going out."""
    run = reliability.big_export(tmp_path, tasks=1000, completing=100)
    assert len(run.expected) == 100
    assert run.receipts.ids == {*run.expected, run.other_event} == run.store_ids
    assert run.receipts.duplicated == 0
    assert run.burst_after_other > 0, "the other watch's event waited for the whole burst"
    assert run.other_latency < 2.0


def test_watches_take_turns_in_the_outbox(tmp_path: Path) -> None:
    """Due deliveries alternate between watches, oldest first within each, so one watch's backlog
    does not delay another watch's next event."""

    def event(watch: str, task: int) -> Event:
        return Event(
            type=TASK_COMPLETED,
            id=f"evt_{watch}_{task}",
            timestamp="t",
            watch=watch,
            project=None,
            task=TaskInfo(id=str(task)),
        )

    with Store.open(tmp_path / "state.db") as store:

        def hook(_event: Event) -> list[str]:
            return ["hook"]

        store.commit_reload("big", Snapshot(watch="big"), {}, [event("big", t) for t in range(5)], hook, 1.0)
        store.commit_reload("small", Snapshot(watch="small"), {}, [event("small", 1)], hook, 2.0)
        order = [(row.watch, row.task_id) for row in store.due_deliveries("hook", now=3.0)]
        assert order[:3] == [("big", "0"), ("small", "1"), ("big", "1")]
        assert [task for watch, task in order if watch == "big"] == ["0", "1", "2", "3", "4"]
        assert [row.watch for row in store.due_deliveries("hook", now=3.0, limit=2)] == ["big", "small"]


# -- 11. partial listings, 12. a command with a background child, 13. a trickling receiver -----------------


def test_partial_listings_between_whole_ones_invent_nothing(tmp_path: Path) -> None:
    """REST listings with pages missing (one page of three, the last page missing, a gap), each of
    which would complete some tasks and reopen others: every one refused, the receiver gets exactly
    the events of the whole listings, once each, and the store holds nothing else."""
    run = reliability.partial_listing(tmp_path, rounds=3)
    expected = _ids(list(run.expected))
    assert run.refused == 3
    assert run.receipts.ids == set(expected)
    assert run.receipts.duplicated == 0
    assert run.invented == 0
    assert run.store_ids == set(expected)


def test_a_command_leaving_a_background_child_is_delivered_once(tmp_path: Path) -> None:
    """A notification script that exits 0 at once but leaves a background process holding its
    stdout past the handler's timeout: every event delivered in one attempt, none retried or
    dead-lettered, none run twice."""
    run = reliability.background_child(tmp_path, events=2, timeout=3.0)
    expected = _ids(list(run.expected))
    assert sorted(run.received) == sorted(expected)
    assert {(row["status"], row["attempts"]) for row in run.deliveries} == {("delivered", 1)}
    assert run.invented == 0


def test_a_trickling_receiver_holds_no_delivery_past_the_timeout(tmp_path: Path) -> None:
    """A receiver that answers its first request a byte every 0.1 s (a minute in all; each byte
    restarts the read timeout): that attempt ends at the handler's 1 s timeout and is retried
    with the same id, every event arrives, and another handler gets every event meanwhile."""
    run = reliability.trickling_receiver(tmp_path, timeout=1.0)
    expected = set(_ids(list(run.expected)))
    assert run.trickling.ids == expected
    assert run.healthy.ids == expected and run.healthy.duplicated == 0
    first = run.trickling.requests[0]
    assert not first.answered and run.cut == 1  # the trickled answer never reached the client whole
    assert [r.headers["webhook-id"] for r in run.trickling.requests].count(first.headers["webhook-id"]) == 2
    assert run.answered.ids == expected and run.answered.duplicated == 0
    assert run.invented == 0
