"""The log handler: one line per event on a text stream (stderr by default)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import attrs

from cvat_watch.errors import DeliveryError
from cvat_watch.eventtypes import JOB_STATE_CHANGED, PROJECT_EVENTS
from cvat_watch.handlers.base import event_body, event_fields

__all__ = ["LogHandler"]

# Names and paths come from other people's files; one event must stay one line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def _one_line(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _plural(count: str, word: str) -> str:
    return f"{count} {word}" if count == "1" else f"{count} {word}s"


def format_line(event: Mapping[str, Any]) -> str:
    """The human-readable line for ``event``, without a trailing newline."""
    f = event_fields(event)
    if f["type"] in PROJECT_EVENTS:
        return _project_line(f)
    subject = f"task {_one_line(f['task_id'])} {_quoted(f['task_name'])}"
    where = [f"watch {_one_line(f['watch'])}"]
    if f["project_name"] or f["project_id"]:
        where.insert(0, f"project {_quoted(f['project_name'] or f['project_id'])}")
    details = []
    url = f["task_url"]
    if f["type"] == JOB_STATE_CHANGED:
        subject = f"job {_one_line(f['job_id'])} of {subject}"
        details.append(f"{_one_line(f['previous_state'] or '?')} → {_one_line(f['job_state'])}")
        job = event.get("job")
        if isinstance(job, Mapping) and job.get("url"):
            url = str(job["url"])
    else:
        if f["image_count"]:
            details.append(_plural(f["image_count"], "image"))
        if f["jobs_total"]:
            details.append(f"{f['jobs_completed']}/{f['jobs_total']} jobs completed")
    parts = [f"{_one_line(f['type'])}: {subject} ({', '.join(where)})"]
    if details:
        parts.append(", ".join(details))
    if url:
        parts.append(_one_line(url))
    return " — ".join(parts)


def _project_line(f: Mapping[str, str]) -> str:
    subject = (
        f"project {_one_line(f['project_id'])} {_quoted(f['project_name'])} (watch {_one_line(f['watch'])})"
    )
    details = []
    if f["task_count"]:
        details.append(_plural(f["task_count"], "task"))
    if f["image_count"]:
        details.append(_plural(f["image_count"], "image"))
    parts = [f"{_one_line(f['type'])}: {subject}"]
    if details:
        parts.append(", ".join(details))
    if f["project_url"]:
        parts.append(_one_line(f["project_url"]))
    return " — ".join(parts)


@attrs.define(kw_only=True, eq=False)
class LogHandler:
    """Writes one line per event to ``stream`` and flushes it.

    ``stream`` defaults to whatever ``sys.stderr`` is at delivery time, so redirections made
    after construction are honoured. With ``json_lines`` the line is the canonical event body.
    The stream is borrowed, not owned: :meth:`close` leaves it open.
    """

    _stream: TextIO | None = attrs.field(default=None, alias="stream")
    _json_lines: bool = attrs.field(default=False, alias="json_lines")

    def deliver(self, event: Mapping[str, Any]) -> None:
        """Write and flush the event's line; only a failing stream raises (retry=True)."""
        line = event_body(event).decode("utf-8") if self._json_lines else format_line(event)
        stream = self._stream if self._stream is not None else sys.stderr
        try:
            try:
                stream.write(line + "\n")
            except UnicodeEncodeError:
                # A stream with a narrow encoding still gets the line, with escapes.
                stream.write(line.encode("ascii", "backslashreplace").decode("ascii") + "\n")
            stream.flush()
        except (OSError, ValueError) as exc:
            # ValueError is what a closed stream raises; another attempt may find it reopened.
            raise DeliveryError(f"log: could not write to the stream: {exc}", retry=True) from exc

    def close(self) -> None:
        """Nothing to release: the stream belongs to the caller."""
