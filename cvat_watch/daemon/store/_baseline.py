"""A watch's baseline: which rows one commit changes, and writing them."""

from __future__ import annotations

import itertools
import operator
import sqlite3
from collections.abc import Mapping, Sequence

import attrs

from cvat_watch.daemon.snapshot import Snapshot, TaskState
from cvat_watch.daemon.store._schema import _dumps


@attrs.frozen(eq=False)
class _Written:
    """One watch's baseline as the database holds it: the snapshot's head, its tasks, its counters.

    Tasks are recognised by identity first: the snapshot builder carries unchanged TaskState
    objects from one reload to the next, and a frozen object cannot change.
    """

    head: str
    tasks: dict[str, TaskState]
    #: The tasks in the order of the snapshot that was written, to find the changed ones in C.
    order: tuple[TaskState, ...]
    generations: dict[str, int]


@attrs.frozen(eq=False)
class _BaselineChange:
    """The rows one commit writes, and the memory once it committed."""

    head: str | None  # None: unchanged
    upsert: list[tuple[str, str]]  # (task_id, task JSON)
    delete: list[str]  # task ids; None written before means every row is replaced
    counters: list[tuple[str, int]]
    dropped_counters: list[str]
    after: _Written


def _baseline_change(
    written: _Written | None, snapshot: Snapshot, generations: Mapping[str, int]
) -> _BaselineChange:
    from cvat_watch.converter import to_dict

    head = _dumps(to_dict(attrs.evolve(snapshot, tasks=())))
    tasks = snapshot.tasks
    suspects: Sequence[TaskState] = tasks
    if written is None:
        changed: Sequence[TaskState] = tasks
        removed: list[str] = []
        old_counters: dict[str, int] = {}
    else:
        old = written.tasks
        if len(tasks) == len(written.order):
            # Mostly the same objects at the same places: find the others in C.
            suspects = [
                tasks[index]
                for index in itertools.compress(itertools.count(), map(operator.is_not, tasks, written.order))
            ]
        else:
            suspects = list(tasks)
        # An equal object is as good as the same one (after a restart the builder makes new ones).
        changed = [task for task in suspects if old.get(task.id) != task]
        removed = []
        if len(tasks) != len(old) or any(task.id not in old for task in changed):
            present = {task.id for task in tasks}
            removed = [task_id for task_id in old if task_id not in present]
        old_counters = written.generations
    if written is None or len(suspects) == len(tasks):
        by_id = {task.id: task for task in tasks}
    else:
        # A copy in C and the few changed entries: rebuilding it costs more than the rest of a commit.
        by_id = written.tasks.copy()
        by_id.update((task.id, task) for task in suspects)
        for task_id in removed:
            del by_id[task_id]
    counters = dict(generations)
    return _BaselineChange(
        head=None if written is not None and written.head == head else head,
        upsert=[(task.id, _dumps(to_dict(task))) for task in changed],
        delete=removed,
        counters=[(key, value) for key, value in counters.items() if old_counters.get(key) != value],
        dropped_counters=[key for key in old_counters if key not in counters],
        after=_Written(head=head, tasks=by_id, order=tasks, generations=counters),
    )


def _write_baseline(
    connection: sqlite3.Connection, watch: str, written: _Written | None, change: _BaselineChange, now: float
) -> None:
    """Write the rows of ``change``; without a memory of the stored baseline, replace all of it."""
    if written is None:
        # Nothing read or written yet in this process: whatever is stored goes.
        connection.execute("DELETE FROM baseline_tasks WHERE watch = ?", (watch,))
        connection.execute("DELETE FROM baseline_generations WHERE watch = ?", (watch,))
    if change.head is not None or written is None:
        connection.execute(
            "INSERT INTO baselines (watch, snapshot, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (watch) DO UPDATE SET snapshot = excluded.snapshot,"
            " updated_at = excluded.updated_at",
            (watch, change.after.head, now),
        )
    elif change.upsert or change.delete or change.counters or change.dropped_counters:
        connection.execute("UPDATE baselines SET updated_at = ? WHERE watch = ?", (now, watch))
    connection.executemany(
        "INSERT INTO baseline_tasks (watch, task_id, task) VALUES (?, ?, ?)"
        " ON CONFLICT (watch, task_id) DO UPDATE SET task = excluded.task",
        [(watch, task_id, text) for task_id, text in change.upsert],
    )
    connection.executemany(
        "DELETE FROM baseline_tasks WHERE watch = ? AND task_id = ?",
        [(watch, task_id) for task_id in change.delete],
    )
    connection.executemany(
        "INSERT INTO baseline_generations (watch, key, value) VALUES (?, ?, ?)"
        " ON CONFLICT (watch, key) DO UPDATE SET value = excluded.value",
        [(watch, key, value) for key, value in change.counters],
    )
    connection.executemany(
        "DELETE FROM baseline_generations WHERE watch = ? AND key = ?",
        [(watch, key) for key in change.dropped_counters],
    )
