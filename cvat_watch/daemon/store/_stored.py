"""The stored baseline's task rows read straight into TaskStates, without cattrs.

At 100,000 tasks and 500,000 jobs, structuring the rows with the package's cattrs converter took
about 3 s of a start and a few hundred MB of dicts held at once. The rows are this package's own
``to_dict`` output, so they are read here row by row, a row's dicts freed before the next is read.
Anything but exactly that shape (a key more or less, a value of another type) gives None: the
caller then reads the rows through cattrs, which accepts or refuses them as it always did.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from cvat_watch.daemon.snapshot import JobState, TaskState

_TASK_KEYS = ("id", "name", "subset", "completed", "jobs", "image_count", "shape_count")
_JOB_KEYS = ("id", "state", "stage", "assignee", "type")
_TEXT_OR_NONE = frozenset((str, type(None)))


def stored_tasks(rows: Iterable[tuple[Any, ...]]) -> list[TaskState] | None:
    """The TaskStates of ``rows`` (the task's JSON last in each), or None to leave them to cattrs."""
    tasks: list[TaskState] = []
    # Job states, stages, assignees and types repeat all over a baseline: one str per value.
    shared: dict[str, str] = {}
    share = shared.setdefault
    try:
        for row in rows:
            data = json.loads(row[-1])
            if type(data) is not dict or tuple(data) != _TASK_KEYS:
                return None
            task_id, name, subset, completed, jobs, image_count, shape_count = data.values()
            if not (
                type(task_id) is str
                and type(name) in _TEXT_OR_NONE
                and type(subset) in _TEXT_OR_NONE
                and type(completed) is bool
                and type(jobs) is list
                and type(image_count) is int
                and type(shape_count) is int
            ):
                return None
            states = []
            for job in jobs:
                if type(job) is not dict or tuple(job) != _JOB_KEYS:
                    return None
                job_id, state, stage, assignee, job_type = job.values()
                if not (
                    type(job_id) is str
                    and type(state) is str
                    and type(stage) in _TEXT_OR_NONE
                    and type(assignee) in _TEXT_OR_NONE
                    and type(job_type) in _TEXT_OR_NONE
                ):
                    return None
                states.append(
                    JobState(
                        job_id,
                        share(state, state),
                        stage if stage is None else share(stage, stage),
                        assignee if assignee is None else share(assignee, assignee),
                        job_type if job_type is None else share(job_type, job_type),
                    )
                )
            tasks.append(
                TaskState(
                    task_id,
                    name,
                    subset if subset is None else share(subset, subset),
                    completed,
                    states,
                    image_count,
                    shape_count,
                )
            )
    except (ValueError, RecursionError, TypeError):
        return None
    return tasks
