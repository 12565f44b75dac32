"""What the daemon compares between two reloads: per task, its jobs, counts and completion.

A :class:`Snapshot` is small (no shapes, no labels) so that the store can keep the last one of
every watch as the baseline for the next diff. It is built from an export summary and the job
status beside it; nothing here reads files or the clock. :class:`SnapshotBuilder` builds the
snapshots of one watch one reload after the other and rebuilds only the tasks whose inputs
changed; :func:`build_snapshot` is the same thing without a memory of the last reload.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from cvat_watch.model import (
    CompletionRule,
    ExportBrief,
    ExportSummary,
    JobStatus,
    TaskBrief,
    is_task_complete,
    task_of_job,
)

__all__ = [
    "JobState",
    "Snapshot",
    "SnapshotBuilder",
    "TaskState",
    "build_snapshot",
    "id_sort_key",
]

_DIGITS = re.compile(r"\d+")


def id_sort_key(value: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders ``"9"`` before ``"10"``: runs of digits compare as numbers."""
    # CVAT's ids are integers: a string of digits only is one numeric piece, the same one the
    # loop below would make (\d and isdecimal() accept the same characters), without a regex.
    if value.isdecimal():
        return ((0, int(value), value),)
    # Each piece is (kind, number, text) so numbers and text never compare with each other.
    pieces: list[tuple[int, int, str]] = []
    position = 0
    for match in _DIGITS.finditer(value):
        if match.start() > position:
            pieces.append((1, 0, value[position : match.start()]))
        pieces.append((0, int(match.group()), match.group()))
        position = match.end()
    if position < len(value):
        pieces.append((1, 0, value[position:]))
    return tuple(pieces)


class _InIdOrder(tuple[Any, ...]):
    """Items the caller guarantees are already sorted by :func:`id_sort_key` of their ids.

    Only :class:`SnapshotBuilder` makes these, from the sorted tasks of its last snapshot with
    some replaced in place: sorting ten thousand tasks again on every reload costs milliseconds.
    """

    __slots__ = ()


def _sorted_tuple(items: Iterable[Any]) -> tuple[Any, ...]:
    if type(items) is _InIdOrder:
        return tuple(items)
    return tuple(sorted(items, key=lambda item: id_sort_key(item.id)))


@attrs.frozen
class JobState:
    """One counting job of a task, as the job-status file reported it."""

    id: str
    state: str
    stage: str | None = None
    assignee: str | None = None
    type: str | None = None


@attrs.frozen
class TaskState:
    """One task of the export: what it is, whether it is completed, and its counting jobs."""

    id: str
    name: str | None = None
    subset: str | None = None
    completed: bool = False
    jobs: tuple[JobState, ...] = attrs.field(factory=tuple, converter=_sorted_tuple)
    image_count: int = 0
    shape_count: int = 0

    def job(self, job_id: str) -> JobState | None:
        for job in self.jobs:
            if job.id == job_id:
                return job
        return None


@attrs.frozen
class Snapshot:
    """Everything one watch's diff needs from one reload; ``tasks`` sorted by id."""

    watch: str
    project_id: str | None = None
    project_name: str | None = None
    base_url: str | None = None
    tasks: tuple[TaskState, ...] = attrs.field(factory=tuple, converter=_sorted_tuple)

    def by_id(self) -> dict[str, TaskState]:
        return {task.id: task for task in self.tasks}

    @property
    def completed_ids(self) -> list[str]:
        return [task.id for task in self.tasks if task.completed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the package's one cattrs converter)."""
        from cvat_watch.converter import to_dict

        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Snapshot:
        """The snapshot :meth:`to_dict` described; cattrs' validation errors propagate."""
        from cvat_watch.converter import from_dict

        return from_dict(cls, data)

    def __repr__(self) -> str:
        # A project export has hundreds of tasks; the default repr would print every job.
        done = sum(1 for task in self.tasks if task.completed)
        return f"<Snapshot {self.watch!r}: {len(self.tasks)} tasks, {done} completed>"


def build_snapshot(
    *,
    watch: str,
    summary: ExportSummary | ExportBrief,
    jobs: Sequence[JobStatus],
    rule: CompletionRule = "completed",
    base_url: str | None = None,
) -> Snapshot:
    """The snapshot of one reload: the export's tasks that have an id, with their counting jobs.

    A task is completed when it has at least one counting job and every one is done under
    ``rule``. Jobs of tasks the export does not describe are ignored; when the job-status file
    names a job twice, its last record wins (files are appended to, not rewritten in order).
    """
    return SnapshotBuilder().build(watch=watch, summary=summary, jobs=jobs, rule=rule, base_url=base_url)


@attrs.frozen(eq=False)
class _Built:
    """One build's inputs and the indexes that let the next build change only what differs."""

    watch: str
    summary: ExportBrief
    rule: CompletionRule
    base_url: str | None
    jobs: tuple[JobStatus, ...]
    snapshot: Snapshot
    #: Per task id in ``jobs``: the places of its records there, in order.
    job_places: Mapping[str, list[int]]
    #: Per task of the snapshot: its place in ``snapshot.tasks``.
    task_places: Mapping[str, int]
    #: Per task of the snapshot: the records that made its TaskState (counting ones, last per job id).
    records: Mapping[str, tuple[JobStatus, ...]]


# Beyond this many changed records and this share of all, regrouping every record is as cheap as patching.
_PATCH_COUNT = 32
_PATCH_SHARE = 8


@attrs.define
class SnapshotBuilder:
    """Builds the snapshots of one watch, reusing every TaskState whose inputs did not change.

    The result is always what :func:`build_snapshot` returns for the same arguments. Records
    are recognised by identity: a :class:`~cvat_watch.jobstatus.JobStatusParser` hands back the same
    :class:`~cvat_watch.model.JobStatus` object for a record that did not change, and the runner
    the same summary while the export is unchanged; then only the tasks of changed records are
    built again, and unchanged TaskState objects carry over (the store keeps their JSON).
    """

    _last: _Built | None = attrs.field(default=None, repr=False)
    # The last full summary given and its brief: the same summary again gives the same brief,
    # which tells the build that the export did not change.
    _briefed: tuple[ExportSummary, ExportBrief] | None = attrs.field(default=None, repr=False)

    def build(
        self,
        *,
        watch: str,
        summary: ExportSummary | ExportBrief,
        jobs: Sequence[JobStatus],
        rule: CompletionRule = "completed",
        base_url: str | None = None,
    ) -> Snapshot:
        """The snapshot of ``summary`` and ``jobs`` (see :func:`build_snapshot`)."""
        if isinstance(summary, ExportSummary):
            if self._briefed is None or self._briefed[0] is not summary:
                self._briefed = (summary, summary.brief())
            summary = self._briefed[1]
        jobs = tuple(jobs)
        last = self._last
        built = None
        if (
            last is not None
            and last.summary is summary
            and len(last.jobs) == len(jobs)
            and last.watch == watch
            and last.rule == rule
            and last.base_url == base_url
        ):
            built = _patched(last, jobs)
        if built is None:
            built = _regrouped(last, watch=watch, summary=summary, jobs=jobs, rule=rule, base_url=base_url)
        self._last = built
        return built.snapshot

    def forget(self) -> None:
        """Drop what the last build remembered; the next one starts from scratch."""
        self._last = None
        self._briefed = None

    def unknown_task_ids(self) -> set[str]:
        """The task ids that records of the last build name but its export does not hold.

        Their jobs were left out of the snapshot: a job listing ahead of the export (a task
        created or finished since the export was written) announces nothing until the export
        holds the task.
        """
        if self._last is None:
            return set()
        # Per task, not per record: the builder's indexes already hold both sets of ids.
        return set(self._last.job_places.keys() - self._last.task_places.keys())


def _changed_places(jobs: tuple[JobStatus, ...], last: tuple[JobStatus, ...]) -> list[int]:
    """The places where ``jobs`` holds another object than ``last`` (same lengths), found in C."""
    return list(itertools.compress(itertools.count(), map(operator.is_not, jobs, last)))


def _patched(last: _Built, jobs: tuple[JobStatus, ...]) -> _Built | None:
    """The next build when only some records changed in place; None when that is not the case."""
    if last.summary.kind == "job":
        return None  # its one task hangs on one record (job → task): always regroup, it is small
    changed = _changed_places(jobs, last.jobs)
    if not changed:
        return attrs.evolve(last, jobs=jobs)
    if len(changed) > _PATCH_COUNT and len(changed) * _PATCH_SHARE > len(jobs):
        return None
    affected: set[str] = set()
    for index in changed:
        task_id = jobs[index].task_id
        if task_id != last.jobs[index].task_id:
            return None  # a record moved to another task: the per-task places are stale
        if task_id in last.task_places:
            affected.add(task_id)
    if not affected:
        return attrs.evolve(last, jobs=jobs)
    tasks = list(last.snapshot.tasks)
    records = dict(last.records)
    for task_id in affected:
        counting = _counting(jobs[i] for i in last.job_places[task_id])
        records[task_id] = counting
        place = last.task_places[task_id]
        old = tasks[place]
        tasks[place] = _task_state(
            task_id, old.name, old.subset, counting, last.rule, old.image_count, old.shape_count
        )
    snapshot = attrs.evolve(last.snapshot, tasks=_InIdOrder(tasks))
    return attrs.evolve(last, jobs=jobs, snapshot=snapshot, records=records)


def _regrouped(
    last: _Built | None,
    *,
    watch: str,
    summary: ExportBrief,
    jobs: tuple[JobStatus, ...],
    rule: CompletionRule,
    base_url: str | None,
) -> _Built:
    """A build that groups every record again; TaskStates equal to the last build's are kept."""
    same_jobs = last is not None and len(last.jobs) == len(jobs) and not _changed_places(jobs, last.jobs)
    last_records: Mapping[str, tuple[JobStatus, ...]] = {}
    if last is not None and same_jobs:
        # Only the export changed: the records of every task are those of the last build.
        job_places = last.job_places
        last_records = last.records
    else:
        job_places = {}
        for index, job in enumerate(jobs):
            same_task = job_places.get(job.task_id)
            if same_task is None:
                job_places[job.task_id] = [index]
            else:
                same_task.append(index)

    metas: dict[str, TaskBrief] = {}
    image_counts = summary.image_counts
    shape_counts = summary.shape_counts
    if summary.kind == "job":
        metas, image_counts, shape_counts = _job_export_task(summary, jobs)
    else:
        for task in summary.tasks:
            if task.id is not None and task.id not in metas:
                metas[task.id] = task
    reusable = last is not None and last.rule == rule
    previous = last.snapshot.by_id() if last is not None and reusable else {}
    previous_records = last.records if last is not None and reusable else {}
    states: list[TaskState] = []
    records: dict[str, tuple[JobStatus, ...]] = {}
    for task_id, meta in metas.items():
        counting = last_records.get(task_id)
        if counting is None:
            counting = _counting(jobs[i] for i in job_places.get(task_id, ()))
        records[task_id] = counting
        image_count = image_counts.get(task_id, 0)
        shape_count = shape_counts.get(task_id, 0)
        old = previous.get(task_id)
        if (
            old is not None
            and _same_records(previous_records.get(task_id), counting)
            and old.name == meta.name
            and old.subset == meta.subset
            and old.image_count == image_count
            and old.shape_count == shape_count
        ):
            states.append(old)
        else:
            states.append(
                _task_state(task_id, meta.name, meta.subset, counting, rule, image_count, shape_count)
            )

    if last is not None and last.summary is summary and last.base_url == base_url:
        resolved_base_url = last.snapshot.base_url
    elif base_url:
        resolved_base_url = base_url.rstrip("/")
    else:
        resolved_base_url = summary.base_url
    snapshot = Snapshot(
        watch=watch,
        project_id=summary.project_id,
        project_name=summary.project_name,
        base_url=resolved_base_url,
        tasks=states,
    )
    return _Built(
        watch=watch,
        summary=summary,
        rule=rule,
        base_url=base_url,
        jobs=jobs,
        snapshot=snapshot,
        job_places=job_places,
        task_places={task.id: place for place, task in enumerate(snapshot.tasks)},
        records=records,
    )


def _job_export_task(
    summary: ExportBrief, jobs: Sequence[JobStatus]
) -> tuple[dict[str, TaskBrief], Mapping[str | None, int], Mapping[str | None, int]]:
    """A job export as its task: the job's meta under the task id the job-status records give
    the job, with the export's counts (kept under None: the file names no task). Nothing while no
    record names the job."""
    task_id = task_of_job(summary.job_id, jobs)
    if task_id is None or not summary.tasks:
        return {}, {}, {}
    meta = summary.tasks[0]
    name = meta.name
    if name is None:
        name = next((job.task_name for job in reversed(jobs) if job.job_id == summary.job_id), None)
    task = attrs.evolve(meta, id=task_id, name=name)
    return (
        {task_id: task},
        {task_id: summary.image_counts.get(None, 0)},
        {task_id: summary.shape_counts.get(None, 0)},
    )


def _counting(jobs: Iterable[JobStatus]) -> tuple[JobStatus, ...]:
    """The counting records among ``jobs`` (in order), the last one of a job id replacing earlier ones."""
    by_id: dict[str, JobStatus] = {}
    for job in jobs:
        if job.counts:
            by_id[job.job_id] = job
    return tuple(by_id.values())


def _same_records(old: tuple[JobStatus, ...] | None, new: tuple[JobStatus, ...]) -> bool:
    return old is not None and len(old) == len(new) and all(map(operator.is_, old, new))


def _task_state(
    task_id: str,
    name: str | None,
    subset: str | None,
    records: tuple[JobStatus, ...],
    rule: CompletionRule,
    image_count: int,
    shape_count: int,
) -> TaskState:
    return TaskState(
        id=task_id,
        name=name,
        subset=subset,
        completed=is_task_complete(records, rule),
        jobs=[
            JobState(id=job.job_id, state=job.state, stage=job.stage, assignee=job.assignee, type=job.type)
            for job in records
        ],
        image_count=image_count,
        shape_count=shape_count,
    )
