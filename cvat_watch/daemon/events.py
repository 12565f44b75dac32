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

from cvat_watch.eventtypes import (
    ALL_EVENTS,
    JOB_STATE_CHANGED,
    PROJECT_COMPLETED,
    PROJECT_EVENTS,
    PROJECT_REOPENED,
    TASK_COMPLETED,
    TASK_REOPENED,
)
from cvat_watch.model import job_url, project_url, task_url  # re-exported: the model owns the link rules

__all__ = [
    "EVENT_TYPES",
    "JOB_STATE_CHANGED",
    "PROJECT_COMPLETED",
    "PROJECT_REOPENED",
    "TASK_COMPLETED",
    "TASK_REOPENED",
    "Event",
    "JobInfo",
    "ProjectInfo",
    "TaskInfo",
    "event_id",
    "job_url",
    "project_event_id",
    "project_url",
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


def project_event_id(watch: str, project_id: str, transition: str, generation: int, *, epoch: str) -> str:
    """The id of a project event: like :func:`event_id`, from what it is about, never from when.

    The material is tagged ``"project"`` and has its own shape, so a project id can never
    produce the id of a task event whatever the two ids look like; ``epoch`` as for task events.
    """
    material = json.dumps(["project", epoch, watch, project_id, transition, generation], ensure_ascii=False)
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
    """The project of an export; project events also carry its link and counts."""

    id: str | None = None
    name: str | None = None
    url: str | None = None
    task_count: int | None = None
    image_count: int | None = None
    shape_count: int | None = None

    def to_payload(self, *, whole: bool = False) -> dict[str, Any]:
        """``id`` and ``name``; with ``whole`` (project events) also ``url`` and the counts."""
        payload: dict[str, Any] = {"id": self.id, "name": self.name}
        if whole:
            payload.update(
                url=self.url,
                task_count=self.task_count,
                image_count=self.image_count,
                shape_count=self.shape_count,
            )
        return payload


@attrs.frozen
class Event:
    """One announcement: a task completed or reopened, (opt-in) a job's state changed, or
    (opt-in) every task of a project export became complete or stopped being so.

    Project events have a ``project`` and no ``task``; every other event has a ``task``.
    """

    type: str
    id: str
    timestamp: str
    watch: str
    project: ProjectInfo | None
    task: TaskInfo | None
    job: JobInfo | None = None
    previous_state: str | None = None

    @property
    def order_key(self) -> str:
        """What the outbox keeps in order: the task for task and job events, else the project.

        A handler receives the events of one key in the order they happened, even across
        retries (``project:`` keeps project ids apart from task ids).
        """
        if self.task is not None:
            return self.task.id
        return f"project:{self.project.id if self.project is not None else ''}"

    def to_payload(self) -> dict[str, Any]:
        """The JSON-ready dict handlers receive; ``job`` and ``previous_state`` only for job events."""
        if self.type in PROJECT_EVENTS:
            return {
                "type": self.type,
                "id": self.id,
                "timestamp": self.timestamp,
                "watch": self.watch,
                "project": None if self.project is None else self.project.to_payload(whole=True),
            }
        payload: dict[str, Any] = {
            "type": self.type,
            "id": self.id,
            "timestamp": self.timestamp,
            "watch": self.watch,
            "project": None if self.project is None else self.project.to_payload(),
            "task": None if self.task is None else self.task.to_payload(),
        }
        if self.type == JOB_STATE_CHANGED:
            payload["job"] = None if self.job is None else self.job.to_payload()
            payload["previous_state"] = self.previous_state
        return payload
