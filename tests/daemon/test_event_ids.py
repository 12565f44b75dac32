"""Event ids against the documented formula, computed independently of the code under test."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

from cvat_watch.daemon.diff import diff
from cvat_watch.daemon.events import JOB_STATE_CHANGED, TASK_COMPLETED, TASK_REOPENED
from cvat_watch.daemon.snapshot import JobState, Snapshot, TaskState
from cvat_watch.testing.ids import documented_event_id

TS = "2024-05-01T10:00:00.000000Z"
EPOCH = "5f0c" * 8


def snap(states: Mapping[str, tuple[str, ...]], *, watch: str = "wätch") -> Snapshot:
    """Tasks with jobs ``<task>0``, ``<task>1``, … in the given states."""
    tasks = [
        TaskState(
            id=task,
            completed=all(state == "completed" for state in jobs),
            jobs=[JobState(id=f"{task}{index}", state=state) for index, state in enumerate(jobs)],
        )
        for task, jobs in states.items()
    ]
    return Snapshot(watch=watch, tasks=tasks)


def test_the_documented_formula_by_hand() -> None:
    """The helper itself, on values worked out outside Python:
    ``printf '%s' '["w", "39", "task.completed", 1, null]' | sha256sum | cut -c1-32``."""
    assert documented_event_id("w", "39", TASK_COMPLETED, 1) == "evt_10453001b9c3e15fd8e9c4bc315617e8"
    assert (
        documented_event_id("w", "39", TASK_COMPLETED, 1, epoch="e1")
        == "evt_ffaea4fc219bba137bc6ef0c1b9c145a"
    )


def test_a_completion_a_reopen_and_a_second_completion_have_the_documented_ids() -> None:
    """Through complete, reopen, complete again (with job events), every id the diff gives is the
    documented one: the generation counts completions, a reopen shares the completion's, a job
    event's transition names the job and its new state."""
    states = [
        {"1": ("new", "completed"), "2": ("new",)},
        {"1": ("completed", "completed"), "2": ("new",)},
        {"1": ("rejected", "completed"), "2": ("completed",)},
        {"1": ("completed", "completed"), "2": ("completed",)},
    ]
    generations: Mapping[str, int] = {}
    got = []
    for old, new in itertools.pairwise(states):
        result = diff(
            snap(old), snap(new), generations=generations, timestamp=TS, epoch=EPOCH, job_events=True
        )
        generations = result.generations
        got.extend((event.type, event.id) for event in result.events)
    w = "wätch"
    assert got == [
        (JOB_STATE_CHANGED, documented_event_id(w, "1", "job:10:completed", 1, "10", epoch=EPOCH)),
        (TASK_COMPLETED, documented_event_id(w, "1", TASK_COMPLETED, 1, epoch=EPOCH)),
        (JOB_STATE_CHANGED, documented_event_id(w, "1", "job:10:rejected", 2, "10", epoch=EPOCH)),
        (TASK_REOPENED, documented_event_id(w, "1", TASK_REOPENED, 1, epoch=EPOCH)),
        (JOB_STATE_CHANGED, documented_event_id(w, "2", "job:20:completed", 1, "20", epoch=EPOCH)),
        (TASK_COMPLETED, documented_event_id(w, "2", TASK_COMPLETED, 1, epoch=EPOCH)),
        (JOB_STATE_CHANGED, documented_event_id(w, "1", "job:10:completed", 3, "10", epoch=EPOCH)),
        (TASK_COMPLETED, documented_event_id(w, "1", TASK_COMPLETED, 2, epoch=EPOCH)),
    ]
    assert len({event_id for _kind, event_id in got}) == len(got)
