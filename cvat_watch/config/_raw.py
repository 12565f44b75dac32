"""The raw file schema (what a person writes), strictly structured, and the handler hooks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from cattrs.errors import AttributeValidationNote, ClassValidationError

from cvat_watch.config._model import (
    AppriseHandlerConfig,
    CommandHandlerConfig,
    HandlerConfig,
    LogHandlerConfig,
    NatsHandlerConfig,
    WebhookHandlerConfig,
)
from cvat_watch.converter import converter


@attrs.frozen(kw_only=True)
class _RawCvat:
    url: str
    project: int | None = None
    task: int | None = None
    token_env: str | None = None
    token_file: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    organization: str | None = None
    poll_interval: float = 30.0
    export: str = "on-completion"
    export_timeout: float = 600.0
    page_size: int = 500
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    verify_tls: bool = True
    ca_file: str | None = None
    webhook_secret_env: str | None = None
    webhook_secret_file: str | None = None


@attrs.frozen(kw_only=True)
class _RawHttp:
    listen: str = "127.0.0.1:8765"


@attrs.frozen(kw_only=True)
class _RawWatch:
    name: str
    annotations: str
    job_status: str | None = None
    completion: str = "completed"
    notify_existing: bool = False
    poll: bool = False
    poll_interval: float = 1.0
    base_url: str | None = None
    debounce: float = 0.5
    max_wait: float = 5.0
    recheck_interval: float = 30.0
    cvat: _RawCvat | None = None


@attrs.frozen(kw_only=True)
class _RawLog:
    type: str
    name: str | None = None
    events: tuple[str, ...] | None = None
    format: str = "text"


@attrs.frozen(kw_only=True)
class _RawWebhook:
    type: str
    name: str | None = None
    events: tuple[str, ...] | None = None
    url: str
    # Each takes one name, or a list of them to sign with several keys during a rotation.
    secret: str | tuple[str, ...] | None = None
    secret_env: str | tuple[str, ...] | None = None
    secret_file: str | tuple[str, ...] | None = None
    cvat_signature: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 15.0
    timeout: float = 30.0
    retry_delays: tuple[float, ...] | None = None
    verify_tls: bool = True
    ca_file: str | None = None
    headers: dict[str, str] = attrs.Factory(dict)
    format: str = "json"


@attrs.frozen(kw_only=True)
class _RawApprise:
    type: str
    name: str | None = None
    events: tuple[str, ...] | None = None
    urls: tuple[str, ...] | None = None
    urls_env: str | None = None
    urls_file: str | None = None
    title: str | None = None
    body: str | None = None
    timeout: float = 60.0
    retry_delays: tuple[float, ...] | None = None
    group_wait: float | str | None = None
    group_max: int | None = None


@attrs.frozen(kw_only=True)
class _RawCommand:
    type: str
    name: str | None = None
    events: tuple[str, ...] | None = None
    command: tuple[str, ...]
    timeout: float = 60.0
    retry_delays: tuple[float, ...] | None = None
    cwd: str | None = None


@attrs.frozen(kw_only=True)
class _RawNats:
    type: str
    name: str | None = None
    events: tuple[str, ...] | None = None
    url: str
    subject: str
    stream: str | None = None
    stream_subjects: tuple[str, ...] | None = None
    create_stream: bool = True
    duplicate_window: float | None = None
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    token_env: str | None = None
    token_file: str | None = None
    creds_file: str | None = None
    connect_timeout: float = 5.0
    ack_timeout: float = 5.0
    retry_delays: tuple[float, ...] | None = None


_RawHandler = _RawLog | _RawWebhook | _RawApprise | _RawCommand | _RawNats


@attrs.frozen(kw_only=True)
class _RawFile:
    state_dir: str | None = None
    retention_days: float = 30.0
    watch: tuple[_RawWatch, ...] = ()
    handler: tuple[_RawHandler, ...] = ()
    http: _RawHttp | None = None


# --- the "type" tag that picks a handler class --------------------------------------------

_RAW_HANDLER_TYPES: dict[str, type[Any]] = {
    "log": _RawLog,
    "webhook": _RawWebhook,
    "apprise": _RawApprise,
    "command": _RawCommand,
    "nats": _RawNats,
}
_HANDLER_TYPES: dict[str, type[Any]] = {
    "log": LogHandlerConfig,
    "webhook": WebhookHandlerConfig,
    "apprise": AppriseHandlerConfig,
    "command": CommandHandlerConfig,
    "nats": NatsHandlerConfig,
}
_HANDLER_TAGS: dict[type[Any], str] = {cls: tag for tag, cls in _HANDLER_TYPES.items()}


def _type_error(cls: type[Any], message: str) -> ClassValidationError:
    """An error on the ``type`` key, shaped like cattrs' own so paths come out right."""
    exc = ValueError(message)
    exc.__notes__ = [AttributeValidationNote("Structuring the type tag", "type", str)]
    return ClassValidationError(f"While structuring {cls.__name__}", [exc], cls)


def _tagged_structure(classes: Mapping[str, type[Any]], *, keep_tag: bool) -> Callable[[Any, Any], Any]:
    choices = ", ".join(classes)

    def structure(value: Any, union: Any) -> Any:
        if not isinstance(value, Mapping):
            raise TypeError("expected a table")
        tag = value.get("type")
        if tag is None:
            raise _type_error(dict, f"required key is missing (one of: {choices})")
        if not isinstance(tag, str) or tag not in classes:
            raise _type_error(dict, f"unknown handler type (expected one of: {choices})")
        data = value if keep_tag else {k: v for k, v in value.items() if k != "type"}
        return converter.structure(data, classes[tag])

    return structure


def _unstructure_handler(handler: HandlerConfig) -> dict[str, Any]:
    return {"type": _HANDLER_TAGS[type(handler)], **converter.unstructure(handler, type(handler))}


converter.register_structure_hook(_RawHandler, _tagged_structure(_RAW_HANDLER_TYPES, keep_tag=True))
converter.register_structure_hook(HandlerConfig, _tagged_structure(_HANDLER_TYPES, keep_tag=False))
converter.register_unstructure_hook(HandlerConfig, _unstructure_handler)
