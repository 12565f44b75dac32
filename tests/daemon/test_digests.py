"""Chat digests: an Apprise handler with group_wait sends one message per group of events.

Through the real daemon and a real Apprise json:// target on 127.0.0.1; the claims in real SQLite.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvat_watch.config import AppriseHandlerConfig, load_config
from cvat_watch.daemon.events import TASK_COMPLETED, Event, TaskInfo, event_id
from cvat_watch.daemon.snapshot import Snapshot
from cvat_watch.daemon.store import Store, group_identity
from cvat_watch.errors import ConfigError
from cvat_watch.testing.process import DaemonProcess, NotifySocket, Workspace, wait_until
from cvat_watch.testing.receiver import Receiver, Recorded, Reply

pytest.importorskip("apprise")

ALL_OPEN = {"21": "in progress", "22": "in progress", "23": "in progress", "24": "in progress"}
ALL_DONE = {"21": "completed", "22": "completed", "23": "completed", "24": "completed"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def chat(receiver: Receiver, *, group_wait: str, group_max: int | None = None) -> str:
    table = (
        f'[[handler]]\ntype = "apprise"\nname = "chat"\nurls = ["json://127.0.0.1:{receiver.port}/chat"]\n'
        f'group_wait = "{group_wait}"\nretry_delays = [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]\n'
    )
    return table + (f"group_max = {group_max}\n" if group_max is not None else "")


def message(request: Recorded) -> dict[str, str]:
    return json.loads(request.body)


def tasks_in(text: str) -> list[str]:
    return re.findall(r"task (\d+) ", text)


def digest_id(text: str) -> str:
    found = re.search(r"\(digest (grp_[0-9a-f]{32})\)", text)
    assert found, text
    return found[1]


def start(workspace: Workspace, notify: NotifySocket) -> DaemonProcess:
    daemon = DaemonProcess(workspace.config, env={"NOTIFY_SOCKET": str(notify.path)})
    notify.wait_for("READY=1", count=notify.count("READY=1") + 1)
    return daemon


def test_completions_within_the_window_come_as_one_message(tmp_path: Path, receiver: Receiver) -> None:
    """Three tasks completing over three reloads: one digest listing all three (group_max reached first)."""
    workspace = Workspace(tmp_path)
    workspace.write_jobs(ALL_OPEN)
    # An hour's wait: only group_max = 3 can release the group, so the test does not race a clock.
    workspace.write_config(handlers=[chat(receiver, group_wait="1h", group_max=3)])
    with NotifySocket(tmp_path / "notify.sock") as notify, start(workspace, notify) as daemon:
        workspace.write_jobs({**ALL_OPEN, "21": "completed", "22": "completed"})
        wait_until(lambda: "task 11" in _committed(workspace), what="task 11's event in the outbox")
        workspace.write_jobs({**ALL_OPEN, "21": "completed", "22": "completed", "23": "completed"})
        wait_until(lambda: "task 12" in _committed(workspace), what="task 12's event in the outbox")
        assert receiver.requests == []  # two events wait for the third
        workspace.write_jobs(ALL_DONE)
        [request] = receiver.wait_for(1)
        assert daemon.stop() == 0
    sent = message(request)
    assert sent["title"] == "CVAT: 3× task completed"
    assert tasks_in(sent["message"]) == ["11", "12", "13"]
    assert sent["type"] == "success"
    events = _event_ids(workspace)
    assert digest_id(sent["message"]) == group_identity(events)


def test_a_lone_event_goes_out_after_the_wait(tmp_path: Path, receiver: Receiver) -> None:
    """One completion and nothing else: sent once group_wait has passed, as the ordinary message."""
    workspace = Workspace(tmp_path)
    workspace.write_config(handlers=[chat(receiver, group_wait="0.5s")])
    with NotifySocket(tmp_path / "notify.sock") as notify, start(workspace, notify) as daemon:
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
        [request] = receiver.wait_for(1, timeout=20)
        assert daemon.stop() == 0
    sent = message(request)
    assert sent["title"] == "CVAT task completed: drive-02"


def test_a_crash_mid_send_resends_the_same_group_whole(tmp_path: Path, receiver: Receiver) -> None:
    """SIGKILL while the digest is in flight, a new event meanwhile: after the restart the same group
    (same tasks, same id) goes out again, and the new event comes in a digest of its own."""
    workspace = Workspace(tmp_path)
    workspace.write_jobs(ALL_OPEN)
    # Released by the wait, not by group_max: a claim that were not stored would take task 12 in too.
    workspace.write_config(handlers=[chat(receiver, group_wait="0.5s")])
    # The first attempt hangs (the daemon is killed during it); the rest succeed.
    receiver.script(Reply(200, delay=60))
    with NotifySocket(tmp_path / "notify.sock") as notify:
        daemon = start(workspace, notify)
        workspace.write_jobs({**ALL_OPEN, "21": "completed", "22": "completed", "24": "completed"})
        [in_flight] = receiver.wait_for(1)
        daemon.signal(signal.SIGKILL)
        daemon.process.wait(10)
        daemon.__exit__(None, None, None)
        workspace.write_jobs(ALL_DONE)  # task 12 completes while the daemon is down
        with start(workspace, notify) as again:
            _, resent, alone = receiver.wait_for(3, timeout=20)
            assert again.stop() == 0
    first, second = message(in_flight)["message"], message(resent)["message"]
    assert tasks_in(first) == tasks_in(second) == ["11", "13"]
    assert digest_id(first) == digest_id(second)
    assert message(alone)["title"] == "CVAT task completed: drive-02"


# --- the store's side ------------------------------------------------------------------------


def _event(task_id: str) -> Event:
    return Event(
        type=TASK_COMPLETED,
        id=event_id("w", task_id, TASK_COMPLETED, 1, epoch="e" * 32),
        timestamp="t",
        watch="w",
        project=None,
        task=TaskInfo(id=task_id),
    )


def _commit(store: Store, *task_ids: str, now: float) -> None:
    store.commit_reload(
        "w", Snapshot(watch="w"), {}, [_event(t) for t in task_ids], lambda _e: ["chat"], now=now
    )


def test_claims_survive_a_reopen_and_new_rows_do_not_join(tmp_path: Path) -> None:
    """A claimed group is stored: reopening the database gives the same rows under the same id; later rows wait apart."""
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        _commit(store, "1", "2", now=100.0)
        assert store.claim_group("chat", 120.0, wait=30.0, limit=50) is None  # not old enough yet
        assert store.next_group_time("chat", wait=30.0) == 130.0
        group_id, rows = store.claim_group("chat", 130.0, wait=30.0, limit=50) or ("", [])
        assert [r.task_id for r in rows] == ["1", "2"]
        assert group_id == group_identity([_event("2").id, _event("1").id])
        _commit(store, "3", now=131.0)
    with Store.open(path) as store:  # as after a crash: nothing recorded
        again = store.claim_group("chat", 131.0, wait=30.0, limit=50)
        assert again is not None and again[0] == group_id and [r.task_id for r in again[1]] == ["1", "2"]
        store.record_group([r.id for r in again[1]], 131.0)
        assert store.claim_group("chat", 132.0, wait=30.0, limit=50) is None
        later = store.claim_group("chat", 161.0, wait=30.0, limit=50)
        assert later is not None and [r.task_id for r in later[1]] == ["3"]


def test_group_max_splits_and_failures_retry_the_whole_group(tmp_path: Path) -> None:
    """At most group_max rows per group; a failure schedules every row of the group together."""
    with Store.open(tmp_path / "state.db") as store:
        _commit(store, "1", "2", "3", now=100.0)
        group_id, rows = store.claim_group("chat", 100.0, wait=30.0, limit=2) or ("", [])
        assert [r.task_id for r in rows] == ["1", "2"]  # a full group does not wait
        store.record_group([r.id for r in rows], 101.0, error="down", next_attempt_at=200.0)
        assert store.claim_group("chat", 120.0, wait=30.0, limit=2) is None  # "3" is alone and young
        retry = store.claim_group("chat", 200.0, wait=30.0, limit=2)
        assert retry is not None and retry[0] == group_id
        assert [(r.task_id, r.attempts) for r in retry[1]] == [("1", 1), ("2", 1)]


def test_config_reads_durations_and_checks_group_max(tmp_path: Path) -> None:
    """group_wait takes "30s", "2m", "1h", "500ms" or seconds; group_max needs group_wait and is at least 1."""
    base = '[[watch]]\nname = "w"\nannotations = "a.xml"\n[[handler]]\ntype = "apprise"\nurls = ["json://127.0.0.1:1/x"]\n'
    path = tmp_path / "c.toml"
    for written, seconds in (
        ('"30s"', 30.0),
        ('"2m"', 120.0),
        ('"1h"', 3600.0),
        ('"500ms"', 0.5),
        ("45", 45.0),
    ):
        path.write_text(base + f"group_wait = {written}\n")
        [handler] = load_config(path, environ={}).handlers
        assert isinstance(handler, AppriseHandlerConfig)
        assert (handler.group_wait, handler.group_max) == (seconds, 50)
    for extra, key, text in (
        ('group_wait = "soon"\n', "handler[0].group_wait", "duration"),
        ('group_wait = "0s"\n', "handler[0].group_wait", "greater than 0"),
        ("group_max = 5\n", "handler[0].group_max", "needs group_wait"),
        ('group_wait = "1s"\ngroup_max = 0\n', "handler[0].group_max", "at least 1"),
    ):
        path.write_text(base + extra)
        with pytest.raises(ConfigError, match=text) as caught:
            load_config(path, environ={})
        assert caught.value.key == key


def _committed(workspace: Workspace) -> str:
    import sqlite3

    database = workspace.state_dir / "cvat-watch.db"
    if not database.exists():
        return ""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        return " ".join(f"task {task}" for (task,) in connection.execute("SELECT task_id FROM events"))


def _event_ids(workspace: Workspace) -> list[str]:
    import sqlite3

    with sqlite3.connect(f"file:{workspace.state_dir / 'cvat-watch.db'}?mode=ro", uri=True) as connection:
        return [event for (event,) in connection.execute("SELECT id FROM events")]


def test_once_sends_what_waits_as_a_digest_without_waiting(tmp_path: Path, receiver: Receiver) -> None:
    """`cvat-watch once` does not wait for group_wait: the waiting events go out as one digest."""
    from cvat_watch.testing.process import run_cli

    workspace = Workspace(tmp_path)
    workspace.write_config(handlers=[chat(receiver, group_wait="1h")], watch_extra="notify_existing = true")
    result = run_cli("once", "--config", str(workspace.config))
    assert result.returncode == 0, result.stderr
    [request] = receiver.wait_for(1)
    assert tasks_in(message(request)["message"]) == ["11", "13"]
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0
    assert len(receiver.requests) == 1
