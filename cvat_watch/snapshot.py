"""What the daemon compares between two reloads: per task, its jobs, counts and completion.

A :class:`Snapshot` is small (no shapes, no labels) so that the store can keep the last one of
every watch as the baseline for the next diff. It is built from an export summary and the job
status beside it; nothing here reads files or the clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from cvat_watch.model import Annotations, CompletionRule, ExportSummary, JobStatus

__all__ = ["JobState", "Snapshot", "TaskState", "build_snapshot", "id_sort_key"]

_DIGITS = re.compile(r"\d+")


def id_sort_key(value: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key that orders ``"9"`` before ``"10"``: runs of digits compare as numbers."""
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


def _sorted_tuple(items: Iterable[Any]) -> tuple[Any, ...]:
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
    summary: ExportSummary,
    jobs: Sequence[JobStatus],
    rule: CompletionRule = "completed",
    base_url: str | None = None,
) -> Snapshot:
    """The snapshot of one reload: the export's tasks that have an id, with their counting jobs.

    A task is completed when it has at least one counting job and every one is done under
    ``rule``. Jobs of tasks the export does not describe are ignored; when the job-status file
    names a job twice, its last record wins (files are appended to, not rewritten in order).
    """
    jobs_by_task: dict[str, dict[str, JobStatus]] = {}
    for job in jobs:
        if job.counts:
            jobs_by_task.setdefault(job.task_id, {})[job.job_id] = job

    tasks: dict[str, TaskState] = {}
    for task in summary.tasks:
        if task.id is None or task.id in tasks:
            continue
        records = list(jobs_by_task.get(task.id, {}).values())
        tasks[task.id] = TaskState(
            id=task.id,
            name=task.name,
            subset=task.subset,
            completed=bool(records) and all(job.is_done(rule) for job in records),
            jobs=[
                JobState(
                    id=job.job_id,
                    state=job.state,
                    stage=job.stage,
                    assignee=job.assignee,
                    type=job.type,
                )
                for job in records
            ],
            image_count=summary.image_counts.get(task.id, 0),
            shape_count=summary.shape_counts.get(task.id, 0),
        )

    project = summary.project
    return Snapshot(
        watch=watch,
        project_id=project.id if project is not None else None,
        project_name=project.name if project is not None else None,
        # The model owns the rule for an export's own base URL; a shapeless Annotations of the
        # summary's tasks is enough to ask it.
        base_url=(
            base_url.rstrip("/") if base_url else Annotations(tasks=summary.tasks).default_base_url()
        ),
        tasks=tasks.values(),
    )
