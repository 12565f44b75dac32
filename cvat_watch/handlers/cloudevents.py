"""CloudEvents 1.0 envelopes for our events (HTTP binding, binary and structured content modes).

The attributes come from the event itself, so a redelivery carries the same envelope:

- ``id``: the event id (stable across retries and restarts, like ``webhook-id``);
- ``source``: where in CVAT the event happened — the project's URL for project events, the
  task's URL for task and job events (the watch's base URL + ``/projects/{id}`` or
  ``/tasks/{id}``); without a known base URL a relative reference
  ``/cvat-watch/{watch}/tasks/{id}``, which CloudEvents allows;
- ``type``: ``ai.cvat.watch.`` + the event type (``ai.cvat.watch.task.completed``);
- ``time``: the event's timestamp; ``subject``: ``jobs/{id}`` for job events;
- ``datacontenttype``: ``application/json``; the data is the event JSON every handler gets.

Binary mode puts the attributes in ``ce-*`` headers and the event JSON as the body; structured
mode sends one ``application/cloudevents+json`` document holding the attributes and ``data``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cvat_watch.eventtypes import PROJECT_EVENTS
from cvat_watch.handlers.base import _mapping, event_body

__all__ = [
    "CLOUDEVENTS_FORMATS",
    "STRUCTURED_CONTENT_TYPE",
    "TYPE_PREFIX",
    "binary_headers",
    "cloudevent_attributes",
    "structured_body",
]

#: Prefix of our CloudEvents ``type`` (reverse-DNS, as the spec recommends).
TYPE_PREFIX = "ai.cvat.watch."
#: The webhook ``format`` values that send CloudEvents.
CLOUDEVENTS_FORMATS: tuple[str, ...] = ("cloudevents", "cloudevents-structured")
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def _source(event: Mapping[str, Any]) -> str:
    event_type = str(event.get("type") or "")
    watch = str(event.get("watch") or "")
    if event_type in PROJECT_EVENTS:
        project = _mapping(event.get("project"))
        return str(project.get("url") or f"/cvat-watch/{watch}/projects/{project.get('id')}")
    task = _mapping(event.get("task"))
    return str(task.get("url") or f"/cvat-watch/{watch}/tasks/{task.get('id')}")


def cloudevent_attributes(event: Mapping[str, Any]) -> dict[str, str]:
    """The CloudEvents context attributes of one event (without ``data``)."""
    attributes = {
        "specversion": "1.0",
        "id": str(event.get("id") or ""),
        "source": _source(event),
        "type": TYPE_PREFIX + str(event.get("type") or ""),
        "time": str(event.get("timestamp") or ""),
        "datacontenttype": "application/json",
    }
    job = _mapping(event.get("job"))
    if job.get("id") is not None:
        attributes["subject"] = f"jobs/{job['id']}"
    if not attributes["time"]:
        del attributes["time"]
    return attributes


def binary_headers(event: Mapping[str, Any]) -> dict[str, str]:
    """The headers of binary content mode: ``ce-*`` for each attribute and the content type."""
    headers = {}
    for name, value in cloudevent_attributes(event).items():
        if name == "datacontenttype":
            headers["content-type"] = value
        else:
            # Header values are ASCII; the spec's percent-encoding for the rest.
            headers[f"ce-{name}"] = _percent_encode(value)
    return headers


def structured_body(event: Mapping[str, Any]) -> bytes:
    """The JSON document of structured content mode: the attributes and the event as ``data``."""
    return event_body({**cloudevent_attributes(event), "data": event})


def _percent_encode(value: str) -> str:
    """Percent-encode what may not appear in a header value: non-ASCII, controls, '%', '"'."""
    return "".join(
        character
        if 0x20 <= ord(character) < 0x7F and character not in '%"'
        else "".join(f"%{byte:02X}" for byte in character.encode("utf-8"))
        for character in value
    )
