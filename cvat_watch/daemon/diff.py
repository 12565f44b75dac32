"""The pure diff: two snapshots of one watch in, the events between them out.

No clock and no I/O: the caller passes the timestamp and the generation counters, and stores
the counters this returns together with the new baseline. A generation counts completions of
a task (key ``task:<id>``) or state changes of a job (key ``job:<id>``); it goes into the event
id, which is what makes ids stable across retries yet new for a second completion after a reopen.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping

import attrs

from cvat_watch.daemon.events import (
    JOB_STATE_CHANGED,
    PROJECT_COMPLETED,
    PROJECT_REOPENED,
    TASK_COMPLETED,
    TASK_REOPENED,
    Event,
    JobInfo,
    ProjectInfo,
    TaskInfo,
    event_id,
    job_url,
    project_event_id,
    project_url,
    task_url,
)
from cvat_watch.daemon.snapshot import JobState, Snapshot, TaskState

__all__ = ["DiffResult", "diff", "job_key", "project_complete", "project_key", "task_key"]

#: The state CVAT gives a job that nobody has touched: a job that appears in it is no news.
_NEW_JOB_STATE = "new"


def task_key(task_id: str) -> str:
    return f"task:{task_id}"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def project_key(project_id: str) -> str:
    return f"project:{project_id}"


def project_complete(snapshot: Snapshot | None, project_id: str | None) -> bool:
    """Whether ``snapshot`` is an export of project ``project_id`` with tasks, all complete."""
    return (
        snapshot is not None
        and project_id is not None
        and snapshot.project_id == project_id
        and bool(snapshot.tasks)
        and all(task.completed for task in snapshot.tasks)
    )


@attrs.frozen
class DiffResult:
    """The events of one reload, in delivery order, and the generation counters to store with it."""

    events: tuple[Event, ...]
    generations: Mapping[str, int]


def diff(
    old: Snapshot | None,
    new: Snapshot,
    *,
    generations: Mapping[str, int],
    timestamp: str,
    epoch: str,
    notify_existing: bool = False,
    job_events: bool = False,
    project_events: bool = False,
) -> DiffResult:
    """The events between the baseline ``old`` and ``new``.

    * ``old`` None (first start): nothing, or with ``notify_existing`` a ``task.completed`` for
      every completed task;
    * a task completed in ``new`` but not in ``old`` (or absent from it): ``task.completed``;
    * completed in ``old`` and present but not completed in ``new``: ``task.reopened``;
    * a task missing from ``new`` produces nothing;
    * every id includes ``epoch``, the state database's (see events.event_id);
    * with ``job_events``: ``job.state_changed`` for every job whose state differs, and for a
      job that appears in a state other than ``new`` (never on first start);
    * with ``project_events``, for a project export (one with a project id), after the task events:
      ``project.completed`` when it has tasks and all are completed but was not so in ``old``
      (on first start only with ``notify_existing``), ``project.reopened`` when it was so in
      ``old`` and is not any more (a task reopened, or a new task that is not completed).
    """
    counters = dict(generations)
    project = (
        ProjectInfo(id=new.project_id, name=new.project_name)
        if new.project_id is not None or new.project_name is not None
        else None
    )
    # Each task of ``new`` with its state in ``old`` (None: not there), except the tasks whose state
    # is the very object of ``old``: the snapshot builder carries unchanged tasks over, and at
    # 100,000 tasks even a dictionary of them costs more than the whole diff of a one-job change.
    pairs: list[tuple[TaskState, TaskState | None]]
    olds, news = (old.tasks if old is not None else ()), new.tasks
    places = (
        list(itertools.compress(itertools.count(), map(operator.is_not, news, olds)))
        if len(olds) == len(news)
        else None
    )
    if places is not None and all(news[place].id == olds[place].id for place in places):
        pairs = [(news[place], olds[place]) for place in places]
    else:
        before = old.by_id() if old is not None else {}
        pairs = [(task, before.get(task.id)) for task in news]
    # Snapshots keep tasks and jobs sorted by id, so walking them gives the delivery order:
    # task by task, and within a task its job changes before the task event they explain.
    events: list[Event] = []

    def make(
        kind: str,
        task: TaskState,
        generation: int,
        *,
        transition: str | None = None,
        job: JobState | None = None,
        previous_state: str | None = None,
    ) -> Event:
        return Event(
            type=kind,
            id=event_id(
                new.watch,
                task.id,
                transition or kind,
                generation,
                job.id if job is not None else None,
                epoch=epoch,
            ),
            timestamp=timestamp,
            watch=new.watch,
            project=project,
            task=_task_info(task, new.base_url),
            job=_job_info(task, job, new.base_url) if job is not None else None,
            previous_state=previous_state,
        )

    for task, previous in pairs:
        if previous is task:
            # The snapshot builder reuses an unchanged task's state object: nothing to compare.
            continue
        if job_events and old is not None:
            for job in task.jobs:
                old_job = previous.job(job.id) if previous is not None else None
                old_state = old_job.state if old_job is not None else None
                if job.state == old_state or (old_job is None and job.state == _NEW_JOB_STATE):
                    continue
                key = job_key(job.id)
                counters[key] = counters.get(key, 0) + 1
                events.append(
                    make(
                        JOB_STATE_CHANGED,
                        task,
                        counters[key],
                        # The new state is part of the transition so that a→b and b→a differ
                        # even if a counter were ever reset.
                        transition=f"job:{job.id}:{job.state}",
                        job=job,
                        previous_state=old_state,
                    )
                )

        was_completed = previous is not None and previous.completed
        key = task_key(task.id)
        if task.completed and not was_completed and (old is not None or notify_existing):
            counters[key] = counters.get(key, 0) + 1
            events.append(make(TASK_COMPLETED, task, counters[key]))
        elif was_completed and not task.completed:
            events.append(make(TASK_REOPENED, task, counters.get(key, 0)))

    if project_events:
        project_event = _project_event(
            old, new, counters, timestamp=timestamp, epoch=epoch, notify_existing=notify_existing
        )
        if project_event is not None:
            events.append(project_event)
    return DiffResult(events=tuple(events), generations=counters)


def _project_event(
    old: Snapshot | None,
    new: Snapshot,
    counters: dict[str, int],
    *,
    timestamp: str,
    epoch: str,
    notify_existing: bool,
) -> Event | None:
    """``project.completed``/``project.reopened`` between the snapshots, counting completions."""
    project_id = new.project_id
    if project_id is None:
        return None
    was_complete = project_complete(old, project_id)
    is_complete = project_complete(new, project_id)
    key = project_key(project_id)
    if is_complete and not was_complete and (old is not None or notify_existing):
        counters[key] = counters.get(key, 0) + 1
        kind = PROJECT_COMPLETED
    elif was_complete and not is_complete:
        kind = PROJECT_REOPENED
    else:
        return None
    return Event(
        type=kind,
        id=project_event_id(new.watch, project_id, kind, counters.get(key, 0), epoch=epoch),
        timestamp=timestamp,
        watch=new.watch,
        project=ProjectInfo(
            id=project_id,
            name=new.project_name,
            url=project_url(new.base_url, project_id),
            task_count=len(new.tasks),
            image_count=sum(task.image_count for task in new.tasks),
            shape_count=sum(task.shape_count for task in new.tasks),
        ),
        task=None,
    )


def _job_info(task: TaskState, job: JobState, base_url: str | None) -> JobInfo:
    return JobInfo(
        id=job.id,
        state=job.state,
        stage=job.stage,
        assignee=job.assignee,
        url=job_url(base_url, task.id, job.id),
    )


def _task_info(task: TaskState, base_url: str | None) -> TaskInfo:
    return TaskInfo(
        id=task.id,
        name=task.name,
        subset=task.subset,
        url=task_url(base_url, task.id),
        image_count=task.image_count,
        shape_count=task.shape_count,
        jobs=tuple(_job_info(task, job, base_url) for job in task.jobs),
    )
