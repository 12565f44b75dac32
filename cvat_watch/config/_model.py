"""The public configuration tree: frozen classes, the retry schedule, the default state folder."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs

from cvat_watch.converter import Secret

# Seconds to wait before each retry: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h
# (about three days in all, the same span as the Standard Webhooks schedule).
#: The state database's file name inside a state folder.
STATE_FILE_NAME = "cvat-watch.db"

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (
    5.0,
    300.0,
    1800.0,
    7200.0,
    18000.0,
    36000.0,
    50400.0,
    72000.0,
    86400.0,
)


# --- public tree -------------------------------------------------------------------------


@attrs.frozen
class CvatSourceConfig:
    """``[watch.cvat]``: cvat-watch keeps the watch's two files fresh from a CVAT server itself."""

    url: str
    project: int | None = None
    task: int | None = None
    token: Secret | None = None
    username: str | None = None
    password: Secret | None = None
    organization: str | None = None
    poll_interval: float = 30.0
    export: Literal["on-completion", "on-change", "never"] = "on-completion"
    export_timeout: float = 600.0
    page_size: int = 500
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    verify_tls: bool = True
    ca_file: Path | None = None
    webhook_secret: Secret | None = None


@attrs.frozen
class HttpConfig:
    """``[http]``: the daemon's one HTTP listener (CVAT's webhooks, health, metrics)."""

    listen: str = "127.0.0.1:8765"
    host: str = "127.0.0.1"
    port: int = 8765


@attrs.frozen
class WatchConfig:
    """One exported task folder to watch: an annotations file and its job status."""

    name: str
    annotations: Path
    job_status: Path | None = None
    completion: Literal["completed", "accepted"] = "completed"
    notify_existing: bool = False
    poll: bool = False
    poll_interval: float = 1.0
    base_url: str | None = None
    debounce: float = 0.5
    max_wait: float = 5.0
    recheck_interval: float = 30.0
    cvat: CvatSourceConfig | None = None


@attrs.frozen
class LogHandlerConfig:
    """Write each event to the log (text or one JSON object per line)."""

    key: str
    events: tuple[str, ...]
    format: Literal["text", "json"] = "text"


@attrs.frozen
class WebhookHandlerConfig:
    """POST each event as JSON to a URL, signed when a secret is configured."""

    key: str
    events: tuple[str, ...]
    url: str
    #: The signing secret; with several (a key rotation), the first listed.
    secret: Secret | None = None
    cvat_signature: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    #: The whole attempt, however slowly the receiver answers.
    timeout: float = 30.0
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    verify_tls: bool = True
    ca_file: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()
    #: The other secrets of a key rotation: each signs every request too.
    extra_secrets: tuple[Secret, ...] = ()
    #: The envelope: the event JSON, or CloudEvents 1.0 in binary or structured mode.
    format: Literal["json", "cloudevents", "cloudevents-structured"] = "json"


@attrs.frozen
class AppriseHandlerConfig:
    """Send each event to chat services through Apprise URLs (which hold credentials)."""

    key: str
    events: tuple[str, ...]
    urls: tuple[Secret, ...]
    title: str | None = None
    body: str | None = None
    #: The whole attempt: a chat service that never answers does not hold the handler.
    timeout: float = 60.0
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    #: Seconds to gather events into one digest message; None sends one message per event.
    group_wait: float | None = None
    #: The most events in one digest.
    group_max: int = 50


@attrs.frozen
class CommandHandlerConfig:
    """Run a program (no shell) with the event as JSON on its standard input."""

    key: str
    events: tuple[str, ...]
    command: tuple[str, ...]
    timeout: float = 60.0
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    cwd: Path | None = None


@attrs.frozen
class NatsHandlerConfig:
    """Publish each event to NATS JetStream, with the event id as ``Nats-Msg-Id``."""

    key: str
    events: tuple[str, ...]
    url: str
    subject: str
    stream: str | None = None
    stream_subjects: tuple[str, ...] = ()
    create_stream: bool = True
    #: Seconds the created stream remembers message ids; default: the retry schedule plus a day.
    duplicate_window: float = 0.0
    user: str | None = None
    password: Secret | None = None
    token: Secret | None = None
    creds_file: Path | None = None
    connect_timeout: float = 5.0
    ack_timeout: float = 5.0
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS


HandlerConfig = (
    LogHandlerConfig | WebhookHandlerConfig | AppriseHandlerConfig | CommandHandlerConfig | NatsHandlerConfig
)


@attrs.frozen
class Config:
    """The whole configuration, with every path absolute and every secret resolved."""

    path: Path
    state_dir: Path
    watches: tuple[WatchConfig, ...]
    handlers: tuple[HandlerConfig, ...]
    warnings: tuple[str, ...] = ()
    #: Delivered and dead outbox rows (and events no row needs) older than this are deleted.
    retention_days: float = 30.0
    http: HttpConfig | None = None


def default_state_dir(environ: Mapping[str, str] | None = None, *, config_file: Path | None = None) -> Path:
    """Where the state database lives when the config file does not say.

    ``$STATE_DIRECTORY`` (set by systemd's ``StateDirectory=``; the first entry if
    several are ``:``-separated), else a folder of its own per configuration file under
    ``$XDG_STATE_HOME/cvat-watch``, else under ``~/.local/state/cvat-watch``: named after the
    file and a short hash of its absolute path (``prod-1a2b3c4d``), so that two configurations
    never share a state by accident. Without ``config_file``, the shared parent folder.
    """
    env = os.environ if environ is None else environ
    state_directory = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state_directory:
        return Path(state_directory)
    xdg = env.get("XDG_STATE_HOME", "")
    home = env.get("HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        base = Path(xdg) / "cvat-watch"
    else:
        base = (Path(home) if home else Path.home()) / ".local" / "state" / "cvat-watch"
    if config_file is None:
        return base
    absolute = os.path.abspath(config_file)
    digest = hashlib.sha256(os.fsencode(absolute)).hexdigest()[:8]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(absolute).stem) or "config"
    return base / f"{stem}-{digest}"


# --- raw file schema (what a person writes) ----------------------------------------------
