"""The SQLite state database: atomic reloads, the outbox, delivery outcomes, and failures."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs
import pytest
from cvat_watch.daemon.events import TASK_COMPLETED, TASK_REOPENED, Event, ProjectInfo, TaskInfo, event_id
from cvat_watch.daemon.snapshot import JobState, Snapshot, TaskState
from cvat_watch.daemon.store import Store
from cvat_watch.errors import StateError

ROOT = Path(__file__).resolve().parents[2]


def event(task_id: str, kind: str = TASK_COMPLETED, generation: int = 1, watch: str = "w") -> Event:
    return Event(
        type=kind,
        id=event_id(watch, task_id, kind, generation),
        timestamp="2024-05-01T10:00:00.000000Z",
        watch=watch,
        project=ProjectInfo(id="3", name="p"),
        task=TaskInfo(id=task_id, name=f"task {task_id}", url=f"http://c/tasks/{task_id}"),
    )


def snapshot(*completed: str, watch: str = "w", tasks: Sequence[str] = ("1", "2", "3")) -> Snapshot:
    return Snapshot(
        watch=watch,
        tasks=[
            TaskState(id=t, completed=t in completed, jobs=[JobState(id=f"{t}0", state="new")]) for t in tasks
        ],
    )


def both(_: Event) -> list[str]:
    return ["a", "b"]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "state" / "state.db")
    yield opened
    opened.close()


# -- baselines and atomic reloads ------------------------------------------------------------


def test_new_store_has_no_baseline(store: Store) -> None:
    """A watch never committed has no baseline and no counters."""
    assert store.load_baseline("w") == (None, {})


def test_commit_then_load_baseline(store: Store) -> None:
    """The committed snapshot and counters come back as they were, per watch."""
    store.commit_reload("w", snapshot("1"), {"task:1": 1}, [event("1")], both, now=10.0)
    store.commit_reload("v", snapshot(watch="v"), {}, [], both, now=10.0)
    assert store.load_baseline("w") == (snapshot("1"), {"task:1": 1})
    assert store.load_baseline("v") == (snapshot(watch="v"), {})


def test_commit_queues_one_delivery_per_target_with_the_exact_payload(store: Store) -> None:
    """Each event gets one pending delivery per target, due now, carrying the event's payload."""
    e = event("1")
    store.commit_reload("w", snapshot("1"), {"task:1": 1}, [e], lambda _: ["a", "b"], now=10.0)
    for key in ("a", "b"):
        (row,) = store.due_deliveries(key, now=10.0)
        assert (row.event_id, row.event_type, row.watch, row.task_id) == (e.id, TASK_COMPLETED, "w", "1")
        assert (row.status, row.attempts, row.next_attempt_at, row.created_at) == ("pending", 0, 10.0, 10.0)
        assert row.payload == e.to_payload()
    assert store.due_deliveries("a", now=9.0) == []
    assert store.due_deliveries("c", now=10.0) == []


def test_failing_targets_leave_the_old_baseline_and_no_events(store: Store) -> None:
    """An exception while routing the events commits nothing: old baseline, no events, no rows."""
    store.commit_reload("w", snapshot(), {}, [], both, now=1.0)

    def broken(e: Event) -> list[str]:
        if e.task.id == "2":
            raise RuntimeError("routing bug")
        return ["a"]

    with pytest.raises(RuntimeError, match="routing bug"):
        store.commit_reload(
            "w", snapshot("1", "2"), {"task:1": 1, "task:2": 1}, [event("1"), event("2")], broken, 2.0
        )
    assert store.load_baseline("w") == (snapshot(), {})
    assert store.deliveries() == []


def test_locked_database_fails_without_writing_anything(tmp_path: Path) -> None:
    """While another process holds the write lock, a commit fails with StateError and writes nothing."""
    path = tmp_path / "state.db"
    store = Store.open(path, busy_timeout=0.05)
    try:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StateError, match="locked") as caught:
            store.commit_reload("w", snapshot("1"), {"task:1": 1}, [event("1")], both, now=1.0)
        assert caught.value.path == str(path)
        other.execute("ROLLBACK")
        other.close()
        assert store.load_baseline("w") == (None, {})
        assert store.deliveries() == []
    finally:
        store.close()


def test_replayed_events_are_not_duplicated(store: Store) -> None:
    """Committing an event that is already in the outbox (a replay) changes neither it nor its deliveries."""
    e = event("1")
    store.commit_reload("w", snapshot("1"), {"task:1": 1}, [e], both, now=1.0)
    (row_a,) = store.due_deliveries("a", now=1.0)
    store.record_delivered(row_a.id, now=2.0)
    replay = Event(type=e.type, id=e.id, timestamp="later", watch="w", project=None, task=e.task)
    store.commit_reload("w", snapshot("1"), {"task:1": 1}, [replay], both, now=3.0)
    rows = store.deliveries()
    assert sorted((r.handler_key, r.status) for r in rows) == [("a", "delivered"), ("b", "pending")]
    assert {r.payload["timestamp"] for r in rows} == {e.timestamp}


def test_reopen_after_close_keeps_everything(tmp_path: Path) -> None:
    """Closing and reopening the database keeps baselines, events, deliveries and handler status."""
    path = tmp_path / "state.db"
    with Store.open(path) as first:
        first.commit_reload(
            "w", snapshot("1", "2"), {"task:1": 1, "task:2": 1}, [event("1"), event("2")], both, 1.0
        )
        rows = first.due_deliveries("a", now=1.0)
        first.record_delivered(rows[0].id, now=2.0)
        first.record_failure(rows[1].id, "HTTP 500", now=2.0, next_attempt_at=7.0)
        first.mark_gone("b", "HTTP 410", now=3.0)
        before = first.deliveries()
    with Store.open(path) as second:
        assert second.load_baseline("w") == (snapshot("1", "2"), {"task:1": 1, "task:2": 1})
        assert second.deliveries() == before
        assert second.handler_status() == {"a": "active", "b": "gone: HTTP 410"}


def _stored(store: Store, watch: str) -> tuple[str, dict[str, str], dict[str, int]]:
    """What the database holds for ``watch``: the snapshot's head, each task's JSON, the counters."""
    connection = sqlite3.connect(store.path)
    try:
        (head,) = connection.execute("SELECT snapshot FROM baselines WHERE watch = ?", (watch,)).fetchone()
        tasks = connection.execute("SELECT task_id, task FROM baseline_tasks WHERE watch = ?", (watch,))
        counters = connection.execute("SELECT key, value FROM baseline_generations WHERE watch = ?", (watch,))
        return head, dict(tasks.fetchall()), dict(counters.fetchall())
    finally:
        connection.close()


def _dumps(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def test_the_stored_baseline_is_the_snapshots_json_through_reused_and_changed_tasks(tmp_path: Path) -> None:
    """Commit after commit, with task objects kept, replaced, added and removed, and the store reopened
    now and then (a new process: no memory of what it wrote), the rows hold exactly the snapshot's JSON
    in pieces and the counters, and load_baseline returns the snapshot."""
    rng = random.Random(7)
    path = tmp_path / "state.db"
    store = Store.open(path)
    tasks = {str(t): TaskState(id=str(t), jobs=[JobState(id=f"{t}0", state="new")]) for t in range(30)}
    try:
        for round_ in range(25):
            for _ in range(rng.randint(0, 3)):
                task_id = str(rng.randrange(40))
                if rng.random() < 0.2:
                    tasks.pop(task_id, None)
                else:
                    state = rng.choice(["new", "completed"])
                    tasks[task_id] = TaskState(
                        id=task_id,
                        name="ä" * rng.randint(0, 2),
                        completed=state == "completed",
                        jobs=[JobState(id=f"{task_id}0", state=state)],
                    )
            if round_ % 6 == 5:
                store.close()
                store = Store.open(path)
                if round_ % 12 == 5:
                    store.load_baseline("w")  # as the runner does before its first commit
            base_url = None if round_ % 2 else "http://c"
            snap = Snapshot(watch="w", project_id="3", base_url=base_url, tasks=tasks.values())
            generations = {f"task:{t}": rng.randint(1, 3) for t in rng.sample(sorted(tasks), 3)}
            store.commit_reload("w", snap, generations, [], both, now=float(round_))
            head, rows, counters = _stored(store, "w")
            whole = snap.to_dict()
            assert rows == {task["id"]: _dumps(task) for task in whole.pop("tasks")}
            assert head == _dumps(whole | {"tasks": []})
            assert counters == generations
            assert store.load_baseline("w") == (snap, generations)
    finally:
        store.close()


def _many(count: int, *, completed: Sequence[int] = ()) -> Snapshot:
    return Snapshot(
        watch="w",
        tasks=[
            TaskState(
                id=str(t),
                completed=t in completed,
                jobs=[JobState(id=f"{t}0", state="completed" if t in completed else "new")],
            )
            for t in range(count)
        ],
    )


def test_a_commit_writes_only_the_rows_of_changed_tasks(tmp_path: Path) -> None:
    """A reload that changed one task of a thousand writes that task's row and the baseline's time
    stamp, whether the unchanged tasks are the same objects as last time or, after a restart, equal
    ones; counted with SQLite's total_changes on the store's own connection."""
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        first = _many(1000)
        store.commit_reload("w", first, {}, [], both, now=1.0)
        tasks = list(first.tasks)
        tasks[500] = TaskState(id="500", completed=True, jobs=[JobState(id="5000", state="completed")])
        second = Snapshot(watch="w", tasks=tasks)
        before = store._connection.total_changes
        store.commit_reload("w", second, {"task:500": 1}, [], both, now=2.0)
        # task 500's row, its counter's row, the time stamp of the baseline
        assert store._connection.total_changes - before == 3
        before = store._connection.total_changes
        store.commit_reload("w", second, {"task:500": 1}, [], both, now=3.0)
        assert store._connection.total_changes - before == 0
    with Store.open(path) as store:
        assert store.load_baseline("w") == (second, {"task:500": 1})
        third = _many(1000, completed=[500, 7])  # new objects, all equal to the stored ones but task 7
        before = store._connection.total_changes
        store.commit_reload("w", third, {"task:500": 1, "task:7": 1}, [], both, now=4.0)
        assert store._connection.total_changes - before == 3
        fourth = Snapshot(watch="w", tasks=[task for task in third.tasks if task.id != "9"])
        before = store._connection.total_changes
        store.commit_reload("w", fourth, {"task:500": 1, "task:7": 1}, [], both, now=5.0)
        assert store._connection.total_changes - before == 2  # task 9's row deleted, the time stamp
        assert store.load_baseline("w") == (fourth, {"task:500": 1, "task:7": 1})


def _schema_1_database(path: Path, baselines: Sequence[tuple[str, str, str]]) -> None:
    """A database as cvat-watch with schema 1 left it: each watch's baseline one row of JSON."""
    with Store.open(path) as store:
        store.commit_reload("w", snapshot("1"), {"task:1": 1}, [event("1")], both, now=1.0)
    connection = sqlite3.connect(path)
    try:
        connection.executescript(
            "DROP TABLE baselines; DROP TABLE baseline_tasks; DROP TABLE baseline_generations;"
            " CREATE TABLE baselines (watch TEXT PRIMARY KEY, snapshot TEXT NOT NULL,"
            " generations TEXT NOT NULL, updated_at REAL NOT NULL); PRAGMA user_version = 1;"
        )
        connection.executemany(
            "INSERT INTO baselines (watch, snapshot, generations, updated_at) VALUES (?, ?, ?, 1.0)",
            baselines,
        )
        connection.commit()
    finally:
        connection.close()


def test_a_schema_1_database_is_migrated_with_its_baselines_and_outbox(tmp_path: Path) -> None:
    """Opening a schema-1 database splits each one-row baseline into rows per task and counter; the
    baselines load as they were, the outbox is kept, and the next commit writes only what changed."""
    path = tmp_path / "state.db"
    old_w = Snapshot(
        watch="w",
        project_id="3",
        project_name="Zoë",
        base_url="http://c",
        tasks=[
            TaskState(id="1", name="ä", completed=True, jobs=[JobState(id="10", state="completed")]),
            TaskState(id="2", jobs=[JobState(id="20", state="new", assignee="ann")]),
        ],
    )
    old_v = snapshot(watch="v", tasks=())
    _schema_1_database(
        path,
        [
            ("w", _dumps(old_w.to_dict()), json.dumps({"task:1": 2, "job:10": 1}, sort_keys=True)),
            ("v", _dumps(old_v.to_dict()), "{}"),
        ],
    )
    with Store.open(path) as store:
        assert store.load_baseline("w") == (old_w, {"task:1": 2, "job:10": 1})
        assert store.load_baseline("v") == (old_v, {})
        assert [d.event_id for d in store.deliveries()] == [event("1").id] * 2
        tasks = (old_w.tasks[0], TaskState(id="2", jobs=[JobState(id="20", state="completed")]))
        before = store._connection.total_changes
        store.commit_reload("w", attrs.evolve(old_w, tasks=tasks), {"task:1": 2, "job:10": 1}, [], both, 2.0)
        assert store._connection.total_changes - before == 2
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (2,)
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {
            name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert "baselines_schema_1" not in tables
    finally:
        connection.close()


def test_a_schema_1_database_with_an_unreadable_baseline_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    """A migration that cannot read a baseline is a StateError, and the file stays at schema 1."""
    path = tmp_path / "state.db"
    _schema_1_database(path, [("w", "{not json", "{}")])
    with pytest.raises(StateError, match="cannot migrate"):
        Store.open(path)
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (1,)
        assert connection.execute("SELECT snapshot FROM baselines").fetchall() == [("{not json",)]
    finally:
        connection.close()


# -- the dispatcher's side -------------------------------------------------------------------


def test_per_task_order_holds_later_events_back(store: Store) -> None:
    """A task's second event waits until its first is settled; other tasks are not held up."""
    first, second, other = event("1"), event("1", TASK_REOPENED), event("2")
    store.commit_reload("w", snapshot("2"), {}, [first, second, other], lambda _: ["a"], now=1.0)
    due = store.due_deliveries("a", now=1.0)
    assert [r.event_id for r in due] == [first.id, other.id]
    head = due[0]
    store.record_failure(head.id, "HTTP 503", now=1.0, next_attempt_at=50.0)
    # The second event is due by its own time, but the first one still has to go first.
    assert [r.event_id for r in store.due_deliveries("a", now=2.0)] == [other.id]
    assert store.next_due_time("a") == 1.0
    store.record_delivered(due[1].id, now=2.0)
    assert store.next_due_time("a") == 50.0
    assert store.next_due_time() == 50.0
    store.record_delivered(head.id, now=50.0)
    assert [r.event_id for r in store.due_deliveries("a", now=50.0)] == [second.id]


def test_dead_letter_does_not_hold_the_task_back(store: Store) -> None:
    """A delivery given up on (next attempt None) becomes dead, is kept, and frees the next event."""
    first, second = event("1"), event("1", TASK_REOPENED)
    store.commit_reload("w", snapshot(), {}, [first, second], lambda _: ["a"], now=1.0)
    (head,) = store.due_deliveries("a", now=1.0)
    store.record_failure(head.id, "HTTP 400", now=2.0, next_attempt_at=None)
    (dead,) = store.deliveries(failed_only=True)
    assert (dead.id, dead.status, dead.attempts, dead.last_error, dead.next_attempt_at) == (
        head.id,
        "dead",
        1,
        "HTTP 400",
        None,
    )
    assert [r.event_id for r in store.due_deliveries("a", now=2.0)] == [second.id]


def test_next_due_time_is_none_without_pending_rows(store: Store) -> None:
    """With nothing pending there is no next due time."""
    assert store.next_due_time() is None
    store.commit_reload("w", snapshot("1"), {}, [event("1")], lambda _: ["a"], now=1.0)
    (row,) = store.due_deliveries("a", now=1.0)
    store.record_delivered(row.id, now=1.5)
    assert store.next_due_time("a") is None
    (done,) = store.deliveries()
    assert (done.status, done.attempts, done.delivered_at) == ("delivered", 1, 1.5)


def test_gone_handler(store: Store) -> None:
    """A gone handler's pending rows become gone, it gets no new rows, and its status says why."""
    store.commit_reload("w", snapshot("1", "2"), {}, [event("1"), event("2")], both, now=1.0)
    store.mark_gone("a", "HTTP 410 from http://hook/x", now=2.0)
    assert store.due_deliveries("a", now=5.0) == []
    assert sorted(r.status for r in store.deliveries() if r.handler_key == "a") == ["gone", "gone"]
    assert {r.last_error for r in store.deliveries(failed_only=True)} == {"HTTP 410 from http://hook/x"}
    store.commit_reload("w", snapshot("1", "2", "3"), {}, [event("3")], both, now=3.0)
    assert [r.handler_key for r in store.deliveries() if r.task_id == "3"] == ["b"]
    assert store.handler_status() == {"a": "gone: HTTP 410 from http://hook/x", "b": "active"}


def test_redeliver(store: Store) -> None:
    """Redeliver puts a dead delivery back in the queue, due now, with its attempts kept."""
    store.commit_reload("w", snapshot("1"), {}, [event("1")], lambda _: ["a"], now=1.0)
    (row,) = store.due_deliveries("a", now=1.0)
    store.record_failure(row.id, "HTTP 500", now=2.0, next_attempt_at=None)
    again = store.redeliver(row.id, now=30.0)
    assert (again.status, again.attempts, again.next_attempt_at) == ("pending", 1, 30.0)
    assert [r.id for r in store.due_deliveries("a", now=30.0)] == [row.id]


def test_redeliver_unknown_id(store: Store) -> None:
    """Redelivering an id the store does not have is a StateError naming the id."""
    with pytest.raises(StateError, match="no delivery with id 42"):
        store.redeliver(42, now=1.0)


def test_redeliver_to_a_gone_handler_makes_it_active(store: Store) -> None:
    """An operator's redeliver to a gone handler brings it back: later events are queued for it again."""
    store.commit_reload("w", snapshot("1"), {}, [event("1")], lambda _: ["a"], now=1.0)
    store.mark_gone("a", "HTTP 410", now=2.0)
    (row,) = store.deliveries()
    store.redeliver(row.id, now=3.0)
    assert store.handler_status() == {"a": "active"}
    store.commit_reload("w", snapshot("1", "2"), {}, [event("2")], lambda _: ["a"], now=4.0)
    assert sorted(r.task_id for r in store.due_deliveries("a", now=4.0)) == ["1", "2"]


def test_deliveries_listing(store: Store) -> None:
    """The listing is newest first; limit keeps the newest; failed_only keeps dead, gone and retrying rows."""
    store.commit_reload("w", snapshot(), {}, [event(t) for t in "1234"], lambda _: ["a"], now=1.0)
    rows = store.due_deliveries("a", now=1.0)
    store.record_delivered(rows[0].id, now=2.0)
    store.record_failure(rows[1].id, "timeout", now=2.0, next_attempt_at=9.0)
    store.record_failure(rows[2].id, "HTTP 400", now=2.0, next_attempt_at=None)
    assert [r.task_id for r in store.deliveries()] == ["4", "3", "2", "1"]
    assert [r.task_id for r in store.deliveries(limit=2)] == ["4", "3"]
    failed = store.deliveries(failed_only=True)
    assert [(r.task_id, r.status) for r in failed] == [("3", "dead"), ("2", "pending")]


def test_threads_share_one_store(store: Store) -> None:
    """Reloads and delivery outcomes from several threads at once all land, without errors."""
    errors: list[BaseException] = []

    def reloads(watch: str) -> None:
        try:
            for i in range(30):
                reload_events = [event(str(i), watch=watch)]
                store.commit_reload(watch, snapshot(watch=watch), {}, reload_events, both, now=1.0)
        except BaseException as exc:
            errors.append(exc)

    def deliverer(key: str) -> None:
        try:
            for _ in range(200):
                for row in store.due_deliveries(key, now=1.0):
                    store.record_delivered(row.id, now=2.0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reloads, args=(w,)) for w in ("w1", "w2", "w3")]
    threads += [threading.Thread(target=deliverer, args=(k,)) for k in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.deliveries()) == 3 * 30 * 2


# -- files, permissions and failures ---------------------------------------------------------


def test_new_files_are_private(tmp_path: Path) -> None:
    """A new state directory is 0700 and the database and its WAL files are 0600."""
    directory = tmp_path / "new" / "state"
    with Store.open(directory / "state.db") as store:
        store.commit_reload("w", snapshot(), {}, [], both, now=1.0)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        files = sorted(directory.iterdir())
        assert [f.name for f in files] == ["state.db", "state.db-shm", "state.db-wal"]
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}


def test_garbage_file_is_not_a_state_database(tmp_path: Path) -> None:
    """A file that is not SQLite gives a StateError naming the path and saying what is wrong."""
    path = tmp_path / "state.db"
    path.write_bytes(b"this is a text file, not a database\n" * 200)
    with pytest.raises(StateError, match="not a cvat-watch state database") as caught:
        Store.open(path)
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    """An SQLite database of something else is refused, and left untouched."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE notes (body TEXT)")
    other.close()
    with pytest.raises(StateError, match="not a cvat-watch state database"):
        Store.open(path)
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]
    other.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer cvat-watch is refused with a hint to upgrade."""
    path = tmp_path / "state.db"
    Store.open(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    connection.close()
    with pytest.raises(StateError, match=r"schema version 99.*upgrade"):
        Store.open(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_read_only_state_directory(tmp_path: Path) -> None:
    """A state directory we may not write gives a StateError naming the database path."""
    directory = tmp_path / "state"
    directory.mkdir(mode=0o500)
    try:
        with pytest.raises(StateError) as caught:
            Store.open(directory / "state.db")
        assert caught.value.path == str(directory / "state.db")
    finally:
        directory.chmod(0o700)


def test_state_path_below_a_regular_file(tmp_path: Path) -> None:
    """A state path whose directory is a regular file gives a StateError naming the path (even for root)."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = blocker / "state" / "state.db"
    with pytest.raises(StateError, match="cannot open the state database") as caught:
        Store.open(path)
    assert caught.value.path == str(path)


def test_closed_store_raises_state_error(tmp_path: Path) -> None:
    """Using a closed store is a StateError, not an sqlite3 exception."""
    store = Store.open(tmp_path / "state.db")
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        store.load_baseline("w")


def test_in_memory_store() -> None:
    """ ":memory:" gives a working throw-away store and creates no file."""
    with Store.open(Path(":memory:")) as store:
        store.commit_reload("w", snapshot("1"), {"task:1": 1}, [event("1")], both, now=1.0)
        assert store.load_baseline("w")[0] == snapshot("1")
    assert not Path(":memory:").exists()


_FILE_SIZE_LIMIT_SCRIPT = """
import resource, signal, sys
from pathlib import Path
from cvat_watch.errors import StateError
from cvat_watch.daemon.snapshot import Snapshot, TaskState
from cvat_watch.daemon.store import Store

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of dying
path = Path(sys.argv[1])
store = Store.open(path)
store.commit_reload("w", Snapshot(watch="w", tasks=[TaskState(id="1")]), {}, [], lambda e: [], 1.0)
limit = max(f.stat().st_size for f in path.parent.iterdir()) + 8192
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
big = Snapshot(watch="w", tasks=[TaskState(id=str(i), name="x" * 1000) for i in range(2000)])
try:
    store.commit_reload("w", big, {}, [], lambda e: [], 2.0)
except StateError as error:
    print("StateError:", error)
"""


def test_a_failed_write_keeps_the_old_baseline(tmp_path: Path) -> None:
    """A write that cannot grow the files (like a full disk) is a StateError and the old baseline stays."""
    path = tmp_path / "state.db"
    result = subprocess.run(
        [sys.executable, "-c", _FILE_SIZE_LIMIT_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    )
    assert result.stdout.startswith(f"StateError: {path}: cannot commit a reload of watch 'w'"), result.stderr
    with Store.open(path) as store:
        baseline, _ = store.load_baseline("w")
        assert baseline == Snapshot(watch="w", tasks=[TaskState(id="1")])


# -- crash safety ----------------------------------------------------------------------------

# Reloads as fast as it can: random task and job states, diffed against the stored baseline,
# committed, and some deliveries recorded; prints one line per commit.
_RELOAD_LOOP_SCRIPT = """
import random, sys
from pathlib import Path
from cvat_watch.daemon.diff import diff
from cvat_watch.daemon.snapshot import JobState, Snapshot, TaskState
from cvat_watch.daemon.store import Store

rng = random.Random(int(sys.argv[2]))
store = Store.open(Path(sys.argv[1]))
n = 0
while True:
    for watch in ("w1", "w2"):
        old, generations = store.load_baseline(watch)
        tasks = []
        for t in range(40):
            states = [rng.choice(["new", "in progress", "completed", "completed"]) for _ in range(2)]
            jobs = [JobState(id=f"{t}{j}", state=s) for j, s in enumerate(states)]
            tasks.append(TaskState(id=str(t), completed=all(s == "completed" for s in states), jobs=jobs))
        new = Snapshot(watch=watch, tasks=tasks)
        result = diff(
            old, new, generations=generations, timestamp=str(n), notify_existing=True, job_events=True
        )
        store.commit_reload(watch, new, result.generations, result.events, lambda e: ["a", "b"], float(n))
        for row in store.due_deliveries("a", float(n), limit=7):
            store.record_delivered(row.id, float(n))
        n += 1
        print(n, flush=True)
"""


def _check_invariants(path: Path) -> int:
    """Integrity, and every event the baselines imply is in the outbox with both deliveries."""
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        events = {row[0] for row in connection.execute("SELECT id FROM events")}
        targets: dict[str, list[str]] = {}
        for event_key, handler in connection.execute("SELECT event_id, handler_key FROM deliveries"):
            targets.setdefault(event_key, []).append(handler)
        assert set(targets) == events
        assert all(sorted(handlers) == ["a", "b"] for handlers in targets.values())
    finally:
        connection.close()
    with Store.open(path) as store:
        for watch in ("w1", "w2"):
            baseline, generations = store.load_baseline(watch)
            if baseline is None:
                continue
            for task in baseline.tasks:
                generation = generations.get(f"task:{task.id}", 0)
                if task.completed:
                    # notify_existing: every completed task was announced at its current generation.
                    assert event_id(watch, task.id, TASK_COMPLETED, generation) in events
                elif generation:
                    assert event_id(watch, task.id, TASK_REOPENED, generation) in events
                for job in task.jobs:
                    changes = generations.get(f"job:{job.id}", 0)
                    if changes:
                        transition = f"job:{job.id}:{job.state}"
                        assert event_id(watch, task.id, transition, changes, job.id) in events
    return len(events)


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    """A process killed with SIGKILL mid-reload leaves a sound database whose baseline matches its outbox."""
    path = tmp_path / "state.db"
    rng = random.Random(20240501)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    counts = []
    for round_ in range(6):
        child = subprocess.Popen(
            [sys.executable, "-c", _RELOAD_LOOP_SCRIPT, str(path), str(round_)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            # Kill after a random number of commits; the child keeps running while we read, so
            # the signal lands at an arbitrary point of its next transaction.
            for _ in range(rng.randint(1, 25)):
                line = child.stdout.readline()  # type: ignore[union-attr]
                assert line, child.stderr.read()  # type: ignore[union-attr]
        finally:
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL
        counts.append(_check_invariants(path))
    assert counts == sorted(counts)
    assert counts[-1] > 0
