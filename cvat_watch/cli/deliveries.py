"""What ``check-config`` and ``deliveries`` print: readable text that never shows a secret."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from cvat_watch._escape import printable
from cvat_watch.cli.report import align
from cvat_watch.config import (
    AppriseHandlerConfig,
    CommandHandlerConfig,
    Config,
    HandlerConfig,
    LogHandlerConfig,
    NatsHandlerConfig,
    WebhookHandlerConfig,
)
from cvat_watch.daemon.store import Delivery
from cvat_watch.errors import CvatWatchError
from cvat_watch.handlers.base import redact_url

__all__ = ["describe_config", "format_deliveries"]


def describe_config(config: Config) -> tuple[list[str], list[str]]:
    """Lines describing the configuration, and the problems that would stop the daemon."""
    lines = [f"config: {config.path}", f"state: {config.state_dir}"]
    problems: list[str] = []
    for watch in config.watches:
        lines.append(
            f"watch {watch.name}: {watch.annotations}"
            + (f" + {watch.job_status}" if watch.job_status else " (no job-status file)")
        )
        lines.append(
            f"  completion={watch.completion} notify_existing={watch.notify_existing}"
            f" poll={watch.poll} debounce={watch.debounce}s"
        )
        cvat = watch.cvat
        if cvat is not None:
            scope = f"project {cvat.project}" if cvat.project is not None else f"task {cvat.task}"
            who = "a token" if cvat.token is not None else f"user {cvat.username} (password)"
            org = f", organization {cvat.organization}" if cvat.organization else ""
            pushed = (
                f"CVAT webhooks on /cvat/webhook/{watch.name}" if cvat.webhook_secret else "no CVAT webhooks"
            )
            lines.append(f"  cvat: {redact_url(cvat.url)} {scope} as {who}{org}")
            lines.append(f"  cvat: poll every {cvat.poll_interval:g}s, export {cvat.export}, {pushed}")
        for path in (watch.annotations, watch.job_status):
            if path is not None and not path.exists():
                what = "the CVAT source writes it" if cvat is not None else "the daemon waits for it"
                lines.append(f"  note: {path} does not exist yet; {what}")
    if config.http is not None:
        lines.append(f"http: listening on {config.http.listen} (status page /, /metrics, /healthz, /readyz)")
    for handler in config.handlers:
        lines.append(f"handler {handler.key}: {_describe_handler(handler)}")
        lines.append(f"  events: {', '.join(handler.events)}")
        problems.extend(_handler_problems(handler))
    # The configuration's warnings (no handler, an inline secret...) were logged once on
    # stderr when it was loaded; printing them here too showed each one twice.
    return lines, problems


def _describe_handler(handler: HandlerConfig) -> str:
    if isinstance(handler, WebhookHandlerConfig):
        keys = 1 + len(handler.extra_secrets)
        signed = ("signed" if keys == 1 else f"signed with {keys} keys") if handler.secret else "unsigned"
        return f"webhook POST {redact_url(handler.url)} ({signed}), timeout {handler.timeout:g}s"
    if isinstance(handler, AppriseHandlerConfig):
        schemes = sorted({url.reveal().split("://", 1)[0] for url in handler.urls})
        digest = (
            f", digest of up to {handler.group_max} events every {handler.group_wait:g}s"
            if handler.group_wait is not None
            else ""
        )
        targets = ", ".join(scheme + "://…" for scheme in schemes)
        return f"apprise, {len(handler.urls)} URL(s): {targets}{digest}, timeout {handler.timeout:g}s"
    if isinstance(handler, CommandHandlerConfig):
        return f"command {handler.command[0]} (+{len(handler.command) - 1} args), timeout {handler.timeout}s"
    if isinstance(handler, LogHandlerConfig):
        return f"log ({handler.format})"
    if isinstance(handler, NatsHandlerConfig):
        stream = f", stream {handler.stream}" if handler.stream else ""
        auth = (
            "user"
            if handler.user
            else "token"
            if handler.token
            else "creds"
            if handler.creds_file
            else "none"
        )
        return (
            f"nats {redact_url(handler.url)} subject {handler.subject}{stream}"
            f" (auth: {auth}, duplicate window {handler.duplicate_window:g}s)"
        )
    return type(handler).__name__


def _handler_problems(handler: HandlerConfig) -> list[str]:
    problems = []
    if isinstance(handler, WebhookHandlerConfig) and handler.verify_tls and handler.ca_file is not None:
        # The daemon loads it when it starts the handler; a file that is there but holds no
        # certificate would pass the config check and stop `run`.
        try:
            ssl.create_default_context(cafile=handler.ca_file)
        except (OSError, ssl.SSLError) as error:
            reason = getattr(error, "reason", None) or error.strerror or type(error).__name__
            problems.append(
                f"handler {handler.key}: CA file {handler.ca_file} holds no usable certificate ({reason})"
            )
    if isinstance(handler, CommandHandlerConfig):
        program = handler.command[0]
        if shutil.which(program) is None:
            problems.append(f"handler {handler.key}: program {program!r} not found or not executable")
    if isinstance(handler, NatsHandlerConfig):
        try:
            import nats  # noqa: F401
        except ImportError:
            problems.append(f"handler {handler.key}: needs nats-py: pip install 'cvat-watch[nats]'")
    if isinstance(handler, AppriseHandlerConfig):
        try:
            from cvat_watch.handlers.apprise import validate_template

            for template in (handler.title, handler.body):
                if template is not None:
                    validate_template(template)
        except CvatWatchError as error:
            problems.append(f"handler {handler.key}: {error}")
    return problems


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


_HEADER = ("ID", "STATUS", "TRIES", "HANDLER", "EVENT", "TASK", "NEXT / DONE", "LAST ERROR")
_RIGHT = {0, 2}


def _one_line(text: str, width: int = 80) -> str:
    # A receiver's error text may hold newlines and control characters: one cell, one line.
    # Task ids come from the export: a newline must not forge a row, a bidi override reorder one.
    flat = printable(text)
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_deliveries(rows: Sequence[Delivery], handlers: Mapping[str, str]) -> str:
    """A table of deliveries, newest first as the store returns them, and the gone handlers.

    Columns are as wide as their widest cell; the last error is shown only for rows not
    delivered (a delivered row's old error is history, not a problem).
    """
    table = [_HEADER]
    for row in rows:
        when = _when(row.delivered_at if row.status == "delivered" else row.next_attempt_at)
        error = _one_line(row.last_error or "") if row.status != "delivered" else ""
        table.append(
            (
                str(row.id),
                row.status,
                str(row.attempts),
                _one_line(row.handler_key, 40),
                row.event_type,
                _one_line(row.task_id, 20),
                when,
                error,
            )
        )
    lines = align(table, right=_RIGHT)
    if not rows:
        lines.append("(no deliveries)")
    for key, status in sorted(handlers.items()):
        if status != "active":
            lines.append(f"handler {key}: {status}")
    return "\n".join(lines)
