"""The status page (``GET /``): one small HTML document, no script, no external asset.

It shows per watch a progress bar of completed tasks (with the numbers as text), the completion
rule, the tasks in progress with their jobs' states, the last reload and the last error; per
handler the deliveries pending, retrying and given up on, with the oldest pending age. It
reloads itself every few seconds (``<meta http-equiv="refresh">``). Every text that comes from
an export, a configuration or an error message is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

import attrs

from cvat_watch.daemon.store import OutboxSummary

__all__ = ["HandlerView", "StatusView", "TaskView", "WatchView", "render"]

#: How many tasks in progress a watch lists; a project of thousands would make the page useless.
MAX_TASKS_SHOWN = 25


@attrs.frozen
class TaskView:
    """A task in progress: its jobs as (id, state, stage)."""

    id: str
    name: str | None
    jobs: tuple[tuple[str, str, str | None], ...]
    jobs_done: int


@attrs.frozen
class WatchView:
    name: str
    rule: str
    tasks: int
    completed: int
    in_progress: tuple[TaskView, ...]
    #: Tasks in progress beyond those listed.
    more_in_progress: int
    last_reload_at: float | None
    last_outcome: str | None
    last_success_at: float | None
    last_error: str | None
    loaded: bool


@attrs.frozen
class HandlerView:
    key: str
    outbox: OutboxSummary


@attrs.frozen
class StatusView:
    generated_at: float
    started_at: float
    state: str
    watches: tuple[WatchView, ...]
    handlers: tuple[HandlerView, ...]
    config_ok: bool
    config_error: str | None
    config_loaded_at: float | None


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em}h2{font-size:1.1em;margin:0 0 .4em}
.meta{color:#666;margin-bottom:1em}section.watch{background:#fff;border:1px solid #ddd;
border-radius:6px;padding:.8em 1em;margin-bottom:1em;max-width:60em}
.bar{display:inline-block;vertical-align:middle;background:#e4e4e4;border-radius:4px;height:1.1em;width:60%;max-width:36em;overflow:hidden}
.bar>span{display:block;height:100%;background:#3a8f4b}
.count{font-weight:600;margin-left:.5em}table{border-collapse:collapse;margin-top:.4em}
td,th{padding:.15em .7em .15em 0;text-align:left;vertical-align:top}th{color:#555;font-weight:600}
td.n{text-align:right}.error{color:#a40000}.ok{color:#2d6e3a}.job{white-space:nowrap;margin-right:.6em}
.state-completed{color:#2d6e3a}.state-rejected{color:#a40000}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _watch(watch: WatchView) -> str:
    percent = 100.0 * watch.completed / watch.tasks if watch.tasks else 0.0
    parts = [
        f'<section class="watch" data-watch="{_e(watch.name)}">',
        f'<h2 class="watch-name">{_e(watch.name)}</h2>',
        f'<div class="progress"><div class="bar" role="progressbar" aria-valuemin="0"'
        f' aria-valuemax="{watch.tasks}" aria-valuenow="{watch.completed}">'
        f'<span style="width:{percent:.1f}%"></span></div>'
        f'<span class="count">{watch.completed}/{watch.tasks}</span> tasks completed'
        f' (rule: <span class="rule">{_e(watch.rule)}</span>)</div>',
    ]
    if not watch.loaded:
        parts.append('<p class="error">not loaded yet: waiting for valid files</p>')
    outcome = _e(watch.last_outcome or "none")
    parts.append(
        f'<p>Last reload: <span class="last-reload">{_when(watch.last_reload_at)}</span>,'
        f' <span class="outcome">{outcome}</span>; last success: {_when(watch.last_success_at)}</p>'
    )
    if watch.last_error:
        parts.append(f'<p class="error last-error">Last error: {_e(watch.last_error)}</p>')
    else:
        parts.append('<p class="ok last-error">No error.</p>')
    if watch.in_progress:
        parts.append('<table class="in-progress"><tr><th>Task</th><th>Name</th><th>Jobs</th></tr>')
        for task in watch.in_progress:
            jobs = " ".join(
                f'<span class="job state-{_e(state.replace(" ", "-"))}">#{_e(job)}: {_e(state)}'
                + (f" ({_e(stage)})" if stage else "")
                + "</span>"
                for job, state, stage in task.jobs
            )
            parts.append(
                f'<tr class="task" data-task="{_e(task.id)}"><td>{_e(task.id)}</td>'
                f"<td>{_e(task.name or '')}</td><td>{task.jobs_done}/{len(task.jobs)} done: {jobs}</td></tr>"
            )
        parts.append("</table>")
        if watch.more_in_progress:
            parts.append(f"<p>… and {watch.more_in_progress} more tasks in progress</p>")
    elif watch.loaded:
        parts.append('<p class="none-in-progress">No task in progress.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _handlers(handlers: Sequence[HandlerView]) -> str:
    if not handlers:
        return "<p>No handler configured: events are recorded, nobody is told.</p>"
    rows = [
        '<table class="handlers"><tr><th>Handler</th><th>Pending</th><th>Retrying</th>'
        "<th>Dead</th><th>Gone</th><th>Delivered</th><th>Oldest pending</th></tr>"
    ]
    for handler in handlers:
        box = handler.outbox
        rows.append(
            f'<tr class="handler" data-handler="{_e(handler.key)}"><td>{_e(handler.key)}</td>'
            f'<td class="n pending">{box.pending}</td><td class="n retrying">{box.retrying}</td>'
            f'<td class="n dead">{box.dead}</td><td class="n gone">{box.gone}</td>'
            f'<td class="n delivered">{box.delivered}</td>'
            f'<td class="n oldest">{_age(box.oldest_pending_age)}</td></tr>'
        )
    rows.append("</table>")
    return "\n".join(rows)


def render(view: StatusView, *, refresh: int = 5) -> str:
    """The whole page."""
    config = (
        f'<span class="ok">loaded {_when(view.config_loaded_at)}</span>'
        if view.config_ok
        else f'<span class="error">last reload failed: {_e(view.config_error or "")}'
        " (the previous configuration keeps running)</span>"
    )
    body = "\n".join(_watch(watch) for watch in view.watches) or "<p>No watch configured.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{int(refresh)}">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>cvat-watch status</title><style>{_STYLE}</style></head>
<body>
<h1>cvat-watch</h1>
<p class="meta">Updated {_when(view.generated_at)} · running since {_when(view.started_at)}
 · state {_e(view.state)} · configuration {config}</p>
{body}
<h2>Deliveries</h2>
{_handlers(view.handlers)}
</body></html>
"""
