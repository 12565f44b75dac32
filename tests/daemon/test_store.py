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
from cvat_watch.daemon.store import StateLock, Store
from cvat_watch.daemon.store._stored import stored_tasks
from cvat_watch.errors import StateError, StateLockedError, StateLostError
from cvat_watch.model import ExportBrief, TaskBrief

ROOT = Path(__file__).resolve().parents[2]
EPOCH = "e" * 32


def event(task_id: str, kind: str = TASK_COMPLETED, generation: int = 1, watch: str = "w") -> Event:
    return Event(
        type=kind,
        id=event_id(watch, task_id, kind, generation, epoch=EPOCH),
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


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        # What this package writes: read row by row without cattrs.
        ('{"id":"5","name":"n","subset":"Train","completed":true,"jobs":[{"id":"50","state":"completed",'
         '"stage":"acceptance","assignee":"ann","type":null}],"image_count":2,"shape_count":3}',
         TaskState(id="5", name="n", subset="Train", completed=True, image_count=2, shape_count=3,
                   jobs=[JobState(id="50", state="completed", stage="acceptance", assignee="ann")])),
        # Keys left out (defaults) and in another order: left to cattrs, which reads them as always.
        ('{"jobs":[{"state":"new","id":"50"}],"id":"5"}', TaskState(id="5", jobs=[JobState(id="50", state="new")])),
        # A value of another type: cattrs refuses it, as always.
        ('{"id":"5","name":null,"subset":null,"completed":"yes","jobs":[],"image_count":0,"shape_count":0}', None),
        ('{"id":"5","name":null,"subset":null,"completed":false,"jobs":[{"id":50,"state":"new","stage":null,'
         '"assignee":null,"type":null}],"image_count":0,"shape_count":0}', None),
        ('{"id":"5","name":null,"subset":null,"completed":false,"jobs":[],"image_count":true,"shape_count":0}', None),
    ],
)  # fmt: skip
def test_stored_task_rows_read_as_cattrs_reads_them(
    tmp_path: Path, row: str, expected: TaskState | None
) -> None:
    """load_baseline reads the rows it wrote without cattrs; any other row through cattrs, so that
    what is accepted, with which defaults, and what is refused stays the same."""
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        store.commit_reload("w", _many(3), {}, [], both, now=1.0)
    connection = sqlite3.connect(path)
    with connection:
        connection.execute("UPDATE baseline_tasks SET task = ? WHERE task_id = '1'", (row,))
    connection.close()
    with Store.open(path) as store:
        if expected is None:
            with pytest.raises(StateError, match="baseline of watch 'w' is unreadable"):
                store.load_baseline("w")
            return
        loaded, _ = store.load_baseline("w")
    assert loaded is not None
    assert [task.id for task in loaded.tasks] == ["0", "2", "5"]
    assert loaded.by_id()["5"] == expected


def _schema_2_database(path: Path, baselines: Sequence[tuple[str, str, str]]) -> None:
    """A database as cvat-watch with schema 2 left it: each watch's baseline one row of JSON."""
    with Store.open(path) as store:
        store.commit_reload("w", snapshot("1"), {"task:1": 1}, [event("1")], both, now=1.0)
    connection = sqlite3.connect(path)
    try:
        connection.executescript(
            "DROP TABLE baselines; DROP TABLE baseline_tasks; DROP TABLE baseline_generations;"
            " CREATE TABLE baselines (watch TEXT PRIMARY KEY, snapshot TEXT NOT NULL,"
            " generations TEXT NOT NULL, updated_at REAL NOT NULL); PRAGMA user_version = 2;"
        )
        connection.executemany(
            "INSERT INTO baselines (watch, snapshot, generations, updated_at) VALUES (?, ?, ?, 1.0)",
            baselines,
        )
        connection.commit()
    finally:
        connection.close()


def test_a_schema_2_database_is_migrated_with_its_baselines_and_outbox(tmp_path: Path) -> None:
    """Opening a schema-2 database splits each one-row baseline into rows per task and counter; the
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
    _schema_2_database(
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
        assert connection.execute("PRAGMA user_version").fetchone() == (3,)
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {
            name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        assert "baselines_schema_2" not in tables
    finally:
        connection.close()


def test_a_schema_2_database_with_an_unreadable_baseline_is_refused_and_left_as_it_was(
    tmp_path: Path,
) -> None:
    """A migration that cannot read a baseline is a StateError, and the file stays at schema 2."""
    path = tmp_path / "state.db"
    _schema_2_database(path, [("w", "{not json", "{}")])
    with pytest.raises(StateError, match="cannot migrate"):
        Store.open(path)
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA user_version").fetchone() == (2,)
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
            old, new, generations=generations, timestamp=str(n), epoch=store.epoch, notify_existing=True, job_events=True
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
        for event_key, handler in connection.execute("SELECT event_id, handler_id FROM deliveries"):
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
                    assert event_id(watch, task.id, TASK_COMPLETED, generation, epoch=store.epoch) in events
                elif generation:
                    assert event_id(watch, task.id, TASK_REOPENED, generation, epoch=store.epoch) in events
                for job in task.jobs:
                    changes = generations.get(f"job:{job.id}", 0)
                    if changes:
                        transition = f"job:{job.id}:{job.state}"
                        assert (
                            event_id(watch, task.id, transition, changes, job.id, epoch=store.epoch) in events
                        )
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


# -- integrity: the lock, the epoch, the file's identity, handler binding, retention, migration -------


def test_the_epoch_is_random_per_database_and_kept_across_reopening(tmp_path: Path) -> None:
    """A new database gets a random epoch; reopening it gives the same one; another database another."""
    with Store.open(tmp_path / "a.db") as first:
        epoch = first.epoch
    with Store.open(tmp_path / "a.db") as again:
        assert again.epoch == epoch
    with Store.open(tmp_path / "b.db") as other:
        assert other.epoch != epoch
    assert len(epoch) == 32


def test_a_second_lock_on_one_state_folder_is_refused_naming_the_holder(tmp_path: Path) -> None:
    """While one StateLock is held, another (even in the same process) fails at once with
    StateLockedError naming the holder; after release it succeeds, and the file stays."""
    lock = StateLock.acquire(tmp_path / "state", command="cvat-watch run --config /etc/a.toml")
    with pytest.raises(StateLockedError) as caught:
        StateLock.acquire(tmp_path / "state", command="cvat-watch once --config /etc/a.toml")
    assert caught.value.holder == f"pid {os.getpid()}: cvat-watch run --config /etc/a.toml"
    assert caught.value.holder in str(caught.value)
    lock.release()
    lock.release()  # idempotent
    with StateLock.acquire(tmp_path / "state", command="again"):
        assert (tmp_path / "state" / "cvat-watch.lock").exists()


def test_the_lock_is_released_when_its_process_dies(tmp_path: Path) -> None:
    """A lock held by a process that is SIGKILLed is free at once: no stale lock file blocks a restart."""
    code = (
        "import sys, time; from pathlib import Path; from cvat_watch.daemon.store import StateLock;"
        " lock = StateLock.acquire(Path(sys.argv[1]), command='child'); print('locked', flush=True);"
        " time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        with pytest.raises(StateLockedError, match=f"pid {child.pid}: child"):
            StateLock.acquire(tmp_path, command="parent")
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    StateLock.acquire(tmp_path, command="parent").release()


def test_a_deleted_or_replaced_database_file_is_noticed_before_any_commit(tmp_path: Path) -> None:
    """verify() and every write raise StateLostError once the file at the path is not the one opened."""
    path = tmp_path / "state.db"
    store = Store.open(path)
    store.verify()
    path.unlink()
    with pytest.raises(StateLostError, match="deleted"):
        store.verify()
    with pytest.raises(StateLostError):
        store.commit_reload("w", snapshot("1"), {}, [event("1")], both, now=1.0)
    store.close()

    store = Store.open(path)
    other = tmp_path / "other.db"
    Store.open(other).close()
    os.replace(other, path)
    with pytest.raises(StateLostError, match="replaced"):
        store.record_delivered(1, 1.0)
    store.close()


@pytest.mark.parametrize("content", ["empty", "empty sqlite", "text"])
def test_an_existing_file_that_is_not_our_database_is_refused_untouched(tmp_path: Path, content: str) -> None:
    """A file at the state path that is not a whole cvat-watch database (emptied, an empty SQLite
    database, anything else) is an error, never a first start, and is left as it was."""
    path = tmp_path / "state.db"
    if content == "empty sqlite":
        connection = sqlite3.connect(path)
        connection.execute("VACUUM")  # a valid SQLite file with a header and no tables
        connection.close()
    else:
        path.write_bytes(b"" if content == "empty" else b"notes\n")
    before = path.read_bytes()
    with pytest.raises(StateError, match="not a cvat-watch state database"):
        Store.open(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db"]


def test_a_new_database_appears_whole_and_a_crashed_creation_leaves_no_trace_at_the_path(
    tmp_path: Path,
) -> None:
    """A database is built beside the path and linked into place complete; a temporary file left by
    a crash halfway does not stop the next creation."""
    path = tmp_path / "state.db"
    (tmp_path / f".state.db.{os.getpid()}.new").write_bytes(b"half")
    with Store.open(path) as store:
        assert store.epoch
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("state.db-")) == ["state.db"]


def test_rows_are_bound_to_their_handler_identity_and_listed_as_orphaned_when_it_is_gone(
    store: Store,
) -> None:
    """due_deliveries only hands out rows of the asked identity; with the configured identities,
    `deliveries` shows another handler's pending rows as orphaned (and in the failed listing)."""
    store.register_handlers({"webhook:aaaa": "hook", "webhook:bbbb": "hook2"}, 1.0)
    store.commit_reload("w", snapshot("1"), {}, [event("1")], lambda _: ["webhook:aaaa"], now=1.0)
    assert store.due_deliveries("webhook:bbbb", now=2.0) == []
    (row,) = store.due_deliveries("webhook:aaaa", now=2.0)
    assert (row.handler_id, row.handler_key, row.status) == ("webhook:aaaa", "hook", "pending")
    (listed,) = store.deliveries(configured={"webhook:bbbb"})
    assert listed.status == "orphaned"
    assert [r.status for r in store.deliveries(failed_only=True, configured={"webhook:bbbb"})] == ["orphaned"]
    assert store.deliveries(failed_only=True, configured={"webhook:aaaa"}) == []
    assert store.deliveries()[0].status == "pending"


def test_prune_deletes_old_settled_rows_and_unneeded_events_only(store: Store) -> None:
    """Delivered and dead rows settled before the cut are deleted, then events no row needs; pending
    and gone rows, and the events they need, stay; the baseline is untouched."""
    events = [event(task) for task in ("1", "2", "3")]
    store.commit_reload("w", snapshot("1", "2", "3"), {"task:1": 1}, events, lambda _: ["a"], now=10.0)
    rows = {row.task_id: row for row in store.due_deliveries("a", now=10.0)}
    store.record_delivered(rows["1"].id, 20.0)
    store.record_failure(rows["2"].id, "400", 20.0, None)  # dead
    # Task 3's row stays pending.
    assert store.prune(older_than=15.0) == (0, 0)  # settled after the cut: kept
    assert store.prune(older_than=30.0) == (2, 2)
    assert [(row.task_id, row.status) for row in store.deliveries()] == [("3", "pending")]
    assert store.load_baseline("w") == (snapshot("1", "2", "3"), {"task:1": 1})
    # Replaying the same reload after the prune re-inserts the pruned events: only a crash
    # replay of an uncommitted reload does that, and then nothing of it was ever sent.
    store.commit_reload("w", snapshot("1", "2", "3"), {"task:1": 1}, [], lambda _: ["a"], now=40.0)
    assert len(store.deliveries()) == 1


_SCHEMA_1 = """
CREATE TABLE baselines (watch TEXT PRIMARY KEY, snapshot TEXT NOT NULL, generations TEXT NOT NULL,
    updated_at REAL NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL,
    watch TEXT NOT NULL, task_id TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL REFERENCES events (id),
    handler_key TEXT NOT NULL, watch TEXT NOT NULL, task_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead', 'gone')),
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL, last_attempt_at REAL, last_error TEXT,
    created_at REAL NOT NULL, delivered_at REAL, UNIQUE (event_id, handler_key));
CREATE INDEX deliveries_queue ON deliveries (handler_key, status, watch, task_id, id);
CREATE INDEX deliveries_status ON deliveries (status, id);
CREATE TABLE handlers (key TEXT PRIMARY KEY, status TEXT NOT NULL CHECK (status IN ('active', 'gone')),
    reason TEXT, changed_at REAL NOT NULL);
PRAGMA application_id = 1129731924;
PRAGMA user_version = 1;
"""


def test_a_schema_1_database_is_migrated_and_its_rows_adopted_by_name_once(tmp_path: Path) -> None:
    """Schema 1 rows (bound to a name) are kept under "legacy:<name>", sent to nobody, until a handler
    of that name registers: then it adopts them with its gone mark; other names stay orphaned."""
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path)
    connection.executescript(_SCHEMA_1)
    connection.execute(
        "INSERT INTO events (id, type, watch, task_id, payload, created_at) VALUES ('evt_1', 'task.completed',"
        " 'w', '1', '{}', 1.0)"
    )
    for key in ("hook", "old-hook"):
        connection.execute(
            "INSERT INTO deliveries (event_id, handler_key, watch, task_id, status, next_attempt_at, created_at)"
            " VALUES ('evt_1', ?, 'w', '1', 'pending', 1.0, 1.0)",
            (key,),
        )
    connection.execute("INSERT INTO handlers VALUES ('hook', 'gone', '410', 1.0)")
    connection.commit()
    connection.close()
    with Store.open(path) as store:
        assert store.epoch
        assert {row.handler_id for row in store.deliveries()} == {"legacy:hook", "legacy:old-hook"}
        assert store.due_deliveries("webhook:new", now=5.0) == []
        store.register_handlers({"webhook:new": "hook"}, 5.0)
        assert {row.handler_id for row in store.deliveries()} == {"webhook:new", "legacy:old-hook"}
        assert store.handler_status()["hook"] == "gone: 410"
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone() == (3,)
    connection.close()


def test_checkpoint_empties_the_wal_into_the_database_file(tmp_path: Path) -> None:
    """After checkpoint() the database file alone holds every commit (a copy of it without the WAL
    has the events)."""
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        store.commit_reload("w", snapshot("1"), {}, [event("1")], both, now=1.0)
        store.checkpoint()
        copy = tmp_path / "copy.db"
        copy.write_bytes(path.read_bytes())
    connection = sqlite3.connect(copy)
    assert connection.execute("SELECT count(*) FROM events").fetchone() == (1,)
    connection.close()


def test_claim_names_the_configuration_that_used_the_state_before(store: Store) -> None:
    """claim() returns the previous configuration only when it was another one."""
    assert store.claim("/etc/a.toml") is None
    assert store.claim("/etc/a.toml") is None
    assert store.claim("/etc/b.toml") == "/etc/a.toml"
    assert store.claim("/etc/b.toml") is None


def test_rows_as_written_skip_cattrs(tmp_path: Path) -> None:
    """The rows a commit writes are all of the shape read without cattrs (the start at 100,000 tasks
    depends on it), with each repeated job state kept once."""
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        store.commit_reload("w", _many(5, completed=[1, 3]), {}, [], both, now=1.0)
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute("SELECT task FROM baseline_tasks").fetchall()
    finally:
        connection.close()
    states = stored_tasks(rows)
    assert states is not None and len(states) == 5
    assert len({id(task.jobs[0].state) for task in states}) == 2


@pytest.mark.parametrize("kind", ["project", "task", "job"])
def test_a_stored_brief_is_the_brief_given(tmp_path: Path, kind: str) -> None:
    """commit_reload stores the brief under the export's digest; load_brief gives an equal brief for
    that digest only, with counts under a None task id (a job export's) too; a row that is not a
    brief this version wrote gives None (the export is parsed again)."""
    brief = ExportBrief(
        kind=kind,  # type: ignore[arg-type]
        project_id="7" if kind == "project" else None,
        project_name="p" if kind == "project" else None,
        tasks=(TaskBrief("1", "ä", "Train", "http://c"), TaskBrief(None, None, None, None)),
        image_counts={"1": 3, None: 2},
        shape_counts={"1": 0},
    )
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        assert store.load_brief("w", "ab") is None
        store.commit_reload("w", _many(2), {}, [], both, now=1.0, brief=("ab", brief))
        assert store.load_brief("w", "ab") == brief
        assert store.load_brief("w", "cd") is None
        assert store.load_brief("v", "ab") is None
    connection = sqlite3.connect(path)
    with connection:
        connection.execute('UPDATE export_briefs SET brief = \'{"kind":"task"}\'')
    connection.close()
    with Store.open(path) as store:
        assert store.load_brief("w", "ab") is None
