"""The names of the events cvat-watch announces: the one place they are spelled.

Kept in the library (not the daemon) because the configuration names them too (a handler's
``events = [...]``) and the library never imports the daemon.
"""

from __future__ import annotations

__all__ = [
    "ALL_EVENTS",
    "DEFAULT_EVENTS",
    "EVENT_SUMMARIES",
    "JOB_STATE_CHANGED",
    "PROJECT_COMPLETED",
    "PROJECT_EVENTS",
    "PROJECT_REOPENED",
    "TASK_COMPLETED",
    "TASK_REOPENED",
]

TASK_COMPLETED = "task.completed"
TASK_REOPENED = "task.reopened"
JOB_STATE_CHANGED = "job.state_changed"
#: Every task of a watched project export is complete (by the watch's rule) / no longer is.
PROJECT_COMPLETED = "project.completed"
PROJECT_REOPENED = "project.reopened"
#: The events about a whole project rather than one task.
PROJECT_EVENTS: tuple[str, ...] = (PROJECT_COMPLETED, PROJECT_REOPENED)

#: What a handler receives when its configuration names no events.
DEFAULT_EVENTS: tuple[str, ...] = (TASK_COMPLETED, TASK_REOPENED)
#: Every event type, in the order the documentation lists them.
ALL_EVENTS: tuple[str, ...] = (*DEFAULT_EVENTS, JOB_STATE_CHANGED, *PROJECT_EVENTS)

#: A few words for each type, for chat titles and log lines.
EVENT_SUMMARIES: dict[str, str] = {
    TASK_COMPLETED: "task completed",
    TASK_REOPENED: "task reopened",
    JOB_STATE_CHANGED: "job state changed",
    PROJECT_COMPLETED: "project completed",
    PROJECT_REOPENED: "project reopened",
}
