"""The store's two promises that a crash test only sometimes catches, made deterministic: a
reload's outbox rows and its baseline are one transaction, and commits are durable (FULL sync).

Faults come from the database itself: a trigger makes SQLite refuse one of the writes, which
aborts whatever transaction it is part of. Whatever was committed before that write stays.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cvat_watch.daemon.events import TASK_COMPLETED, Event, ProjectInfo, TaskInfo
from cvat_watch.daemon.snapshot import Snapshot, TaskState
from cvat_watch.daemon.store import Store
from cvat_watch.errors import StateError
from cvat_watch.testing.ids import documented_event_id


def _snapshot(*completed: str) -> Snapshot:
    return Snapshot(watch="w", tasks=[TaskState(id=t, completed=t in completed) for t in ("1", "2")])


def _event(task: str) -> Event:
    return Event(
        type=TASK_COMPLETED,
        id=documented_event_id("w", task, TASK_COMPLETED, 1),
        timestamp="2026-01-01T00:00:00.000000Z",
        watch="w",
        project=ProjectInfo(id="1", name="p"),
        task=TaskInfo(id=task),
    )


def _refuse(path: Path, table: str) -> None:
    """From now on, SQLite refuses every write to ``table`` (a trigger; the store is not touched)."""
    connection = sqlite3.connect(path)
    for action in ("INSERT", "UPDATE"):
        connection.execute(
            f"CREATE TRIGGER refuse_{action.lower()}_{table} BEFORE {action} ON {table}"
            " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    connection.commit()
    connection.close()


@pytest.mark.parametrize(
    "table", ["baselines", "baseline_tasks", "baseline_generations", "deliveries", "events"]
)
def test_a_reload_commits_its_events_deliveries_and_baseline_together_or_not_at_all(
    tmp_path: Path, table: str
) -> None:
    """Whichever of the three writes of a reload fails, none of them is left: no event in the
    outbox without the baseline that produced it, no baseline past an event not in the outbox."""
    path = tmp_path / "state.db"
    with Store.open(path) as store:
        store.commit_reload("w", _snapshot(), {}, [], lambda _e: ["hook"], now=1.0)
        _refuse(path, table)
        with pytest.raises(StateError, match="refused by the test"):
            store.commit_reload(
                "w",
                _snapshot("1", "2"),
                {"task:1": 1, "task:2": 1},
                [_event("1"), _event("2")],
                lambda _e: ["hook"],
                2.0,
            )
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert connection.execute("SELECT count(*) FROM events").fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
        assert connection.execute("SELECT count(*) FROM baseline_generations").fetchone() == (0,)
    finally:
        connection.close()
    with Store.open(path) as store:
        assert store.load_baseline("w") == (_snapshot(), {})


def test_commits_are_durable_wal_with_full_sync(tmp_path: Path) -> None:
    """The store's own connection runs in WAL mode with synchronous=FULL (2) and foreign keys on:
    with NORMAL or OFF, a commit that returned could be lost by a power cut."""
    with Store.open(tmp_path / "state.db") as store:
        assert store.durability() == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1}
