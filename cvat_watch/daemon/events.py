"""The events cvat-watch announces, their stable ids and the payload every handler receives.

An event is a value: the diff builds it, the store keeps its :meth:`Event.to_payload` as JSON,
and the dispatcher hands that stored payload to handlers, so a redelivery after a restart sends
exactly the bytes of the first attempt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import attrs

from cvat_watch.eventtypes import ALL_EVENTS, JOB_STATE_CHANGED, TASK_COMPLETED, TASK_REOPENED
from cvat_watch.model import job_url, task_url  # re-exported: the model owns the link rules

__all__ = [
    "EVENT_TYPES",
    "JOB_STATE_CHANGED",
    "TASK_COMPLETED",
    "TASK_REOPENED",
    "Event",
    "JobInfo",
    "ProjectInfo",
    "TaskInfo",
    "event_id",
    "job_url",
    "task_url",
]

EVENT_TYPES = frozenset(ALL_EVENTS)


def event_id(
    watch: str, task_id: str, transition: str, generation: int, job_id: str | None = None, *, epoch: str
) -> str:
    """``evt_`` and 32 hex digits derived from what the event is about, never from when.

    The same (epoch, watch, task, transition, generation) gives the same id on every retry and
    after every restart, which lets receivers drop duplicates; a second completion after a
    reopen has a higher generation and so a new id. ``epoch`` is the state database's random
    epoch (Store.epoch): when the state is lost or reset the generations start again, and the
    new epoch keeps the ids they give from repeating ids receivers already hold.
    """
    # A JSON array keeps the parts apart: ("a:b", "c") and ("a", "b:c") must not collide.
    material = json.dumps([epoch, watch, task_id, transition, generation, job_id], ensure_ascii=False)
    return "evt_" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


@attrs.frozen
class JobInfo:
    """A job as an event describes it."""

    id: str
    state: str
    stage: str | None = None
    assignee: str | None = None
    url: str | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "stage": self.stage,
            "assignee": self.assignee,
            "url": self.url,
        }


def _jobs(jobs: Iterable[JobInfo]) -> tuple[JobInfo, ...]:
    return tuple(jobs)


@attrs.frozen
class TaskInfo:
    """A task as an event describes it: identity, link, counts and its counting jobs."""

    id: str
    name: str | None = None
    subset: str | None = None
    url: str | None = None
    image_count: int = 0
    shape_count: int = 0
    jobs: tuple[JobInfo, ...] = attrs.field(factory=tuple, converter=_jobs)

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "subset": self.subset,
            "url": self.url,
            "image_count": self.image_count,
            "shape_count": self.shape_count,
            "jobs": [job.to_payload() for job in self.jobs],
        }


@attrs.frozen
class ProjectInfo:
    id: str | None = None
    name: str | None = None


@attrs.frozen
class Event:
    """One announcement: a task completed or reopened, or (opt-in) a job's state changed."""

    type: str
    id: str
    timestamp: str
    watch: str
    project: ProjectInfo | None
    task: TaskInfo
    job: JobInfo | None = None
    previous_state: str | None = None

    def to_payload(self) -> dict[str, Any]:
        """The JSON-ready dict handlers receive; ``job`` and ``previous_state`` only for job events."""
        payload: dict[str, Any] = {
            "type": self.type,
            "id": self.id,
            "timestamp": self.timestamp,
            "watch": self.watch,
            "project": (None if self.project is None else {"id": self.project.id, "name": self.project.name}),
            "task": self.task.to_payload(),
        }
        if self.type == JOB_STATE_CHANGED:
            payload["job"] = None if self.job is None else self.job.to_payload()
            payload["previous_state"] = self.previous_state
        return payload
