"""What every handler shares: the protocol, the canonical body, URL redaction, flat fields.

A handler makes exactly one delivery attempt per ``deliver`` call. It returns on success
and raises :class:`~cvat_watch.errors.DeliveryError` on failure, saying whether another
attempt may help. Retrying, sleeping and remembering outcomes belong to the dispatcher.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from cvat_watch.eventtypes import EVENT_SUMMARIES

__all__ = ["EVENT_FIELDS", "GroupHandler", "Handler", "event_body", "event_fields", "redact_url"]


@runtime_checkable
class Handler(Protocol):
    """Delivers events to one target, one attempt per call."""

    def deliver(self, event: Mapping[str, Any]) -> None:
        """Make one delivery attempt; return on success, raise ``DeliveryError`` otherwise."""
        ...

    def close(self) -> None:
        """Release what the handler holds (connections, clients); idempotent."""
        ...


@runtime_checkable
class GroupHandler(Handler, Protocol):
    """A handler that can also send several events as one message (a digest)."""

    def deliver_group(self, events: Sequence[Mapping[str, Any]], *, group_id: str) -> None:
        """One attempt at sending ``events`` together; ``group_id`` is the same on every retry."""
        ...


def event_body(event: Mapping[str, Any]) -> bytes:
    """The canonical JSON bytes of an event: the exact bytes that are signed and sent."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: no user info, no query, no fragment.

    Query strings and user info routinely carry tokens, so messages and logs name a
    target only through this function. The path is kept because it is what tells two
    targets on the same host apart.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        # A URL too broken to split might still hold a secret anywhere: show nothing of it.
        return "<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    if parts.scheme:
        return f"{parts.scheme}://{netloc}{parts.path}"
    return f"{netloc}{parts.path}" if netloc else parts.path


#: The names of the flat, string-valued view of an event that templates and log lines use.
EVENT_FIELDS: tuple[str, ...] = (
    "type",
    "summary",
    "id",
    "timestamp",
    "watch",
    "project_id",
    "project_name",
    "task_id",
    "task_name",
    "task_subset",
    "task_url",
    "image_count",
    "shape_count",
    "jobs_total",
    "jobs_completed",
    "job_id",
    "job_state",
    "previous_state",
    "project_url",
    "task_count",
)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def event_fields(event: Mapping[str, Any]) -> dict[str, str]:
    """Flatten an event into :data:`EVENT_FIELDS`; every value is a string, missing ones ``""``.

    Tolerant of missing or ``None`` parts so that a template never fails on an event shape
    it did not expect.
    """
    project = _mapping(event.get("project"))
    task = _mapping(event.get("task"))
    job = _mapping(event.get("job"))
    raw_jobs = task.get("jobs")
    jobs = [j for j in raw_jobs if isinstance(j, Mapping)] if isinstance(raw_jobs, list) else []
    event_type = _text(event.get("type"))
    return {
        "type": event_type,
        "summary": EVENT_SUMMARIES.get(event_type, event_type.replace(".", " ").replace("_", " ")),
        "id": _text(event.get("id")),
        "timestamp": _text(event.get("timestamp")),
        "watch": _text(event.get("watch")),
        "project_id": _text(project.get("id")),
        "project_name": _text(project.get("name")),
        "task_id": _text(task.get("id")),
        "task_name": _text(task.get("name")),
        "task_subset": _text(task.get("subset")),
        "task_url": _text(task.get("url")),
        # A project event has no task: its counts are the project's.
        "image_count": _text(task.get("image_count") if task else project.get("image_count")),
        "shape_count": _text(task.get("shape_count") if task else project.get("shape_count")),
        "jobs_total": str(len(jobs)) if isinstance(raw_jobs, list) else "",
        "jobs_completed": (
            str(sum(1 for j in jobs if j.get("state") == "completed")) if isinstance(raw_jobs, list) else ""
        ),
        "job_id": _text(job.get("id")),
        "job_state": _text(job.get("state")),
        "previous_state": _text(event.get("previous_state")),
        "project_url": _text(project.get("url")),
        "task_count": _text(project.get("task_count")),
    }
