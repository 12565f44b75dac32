"""The Apprise handler: one chat or push notification per event through one Apprise URL.

Apprise URLs carry their tokens everywhere (host, path, query), so our messages and repr
name a target by its scheme only (``apprise tgram://…``). Apprise itself logs through
the ``apprise`` logger with its own masking.

Title and body are ``str.format_map`` templates over :data:`TEMPLATE_FIELDS`; every field is
a string and a value the event lacks is ``""``.

With a group wait configured, the dispatcher hands over several events at once
(:meth:`AppriseHandler.deliver_group`): one digest message, one line per event.
"""

from __future__ import annotations

import inspect
import re
import string
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.eventtypes import (
    PROJECT_COMPLETED,
    PROJECT_EVENTS,
    PROJECT_REOPENED,
    TASK_COMPLETED,
    TASK_REOPENED,
)
from cvat_watch.handlers.base import EVENT_FIELDS, event_fields
from cvat_watch.handlers.log import format_line

if TYPE_CHECKING:
    import apprise as apprise_lib

__all__ = [
    "DEFAULT_BODY",
    "DEFAULT_PROJECT_BODY",
    "DEFAULT_PROJECT_TITLE",
    "DEFAULT_TITLE",
    "TEMPLATE_FIELDS",
    "AppriseHandler",
    "validate_template",
]

#: The names a title or body template may use.
TEMPLATE_FIELDS: tuple[str, ...] = EVENT_FIELDS

DEFAULT_TITLE = "CVAT {summary}: {task_name}"
DEFAULT_BODY = (
    "Task: {task_name} (#{task_id})\n"
    "Project: {project_name}\n"
    "Watch: {watch}\n"
    "Images: {image_count}, jobs completed: {jobs_completed}/{jobs_total}\n"
    "{task_url}"
)

#: The built-in message for project events (a configured title or body is used for every event).
DEFAULT_PROJECT_TITLE = "CVAT {summary}: {project_name}"
DEFAULT_PROJECT_BODY = (
    "Project: {project_name} (#{project_id})\n"
    "Watch: {watch}\n"
    "Tasks: {task_count}, images: {image_count}\n"
    "{project_url}"
)

_MISSING_EXTRA = "the apprise handler needs the optional extra: pip install 'cvat-watch[chat]'"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
_FORMATTER = string.Formatter()


def _field_names(text: str) -> Iterator[str]:
    for _literal, name, spec, _conversion in _FORMATTER.parse(text):
        if name is not None:
            yield name
        if spec:
            # A spec may itself hold fields, e.g. "{task_name:>{image_count}}".
            yield from _field_names(spec)


def validate_template(text: str, *, key: str | None = None) -> None:
    """Raise :class:`ConfigError` if ``text`` is not a template over :data:`TEMPLATE_FIELDS`.

    Names the first unknown field. ``key`` is passed on to the error (e.g. ``"title"``).
    """
    try:
        names = list(_field_names(text))
    except ValueError as exc:
        raise ConfigError(f"invalid template: {exc}", key=key) from None
    for name in names:
        if name == "" or name.isdigit():
            raise ConfigError(
                "template fields must be named, e.g. {task_name}; positional {} is not allowed",
                key=key,
            )
        if name not in TEMPLATE_FIELDS:
            hint = (
                "attribute and index access are not allowed"
                if "." in name or "[" in name
                else "known fields: " + ", ".join(TEMPLATE_FIELDS)
            )
            raise ConfigError(f"unknown template field {{{name}}} ({hint})", key=key)
    try:
        # Catches a spec that cannot format a string, e.g. "{image_count:d}".
        text.format_map(dict.fromkeys(TEMPLATE_FIELDS, ""))
    except (ValueError, KeyError, IndexError) as exc:
        raise ConfigError(f"invalid template: {exc}", key=key) from None


def _asset_options(apprise: Any) -> dict[str, Any]:
    """Settings that keep Apprise to one synchronous attempt in the caller's thread."""
    # async_mode off and no service deadline: the service runs in our thread, not in Apprise's
    # process-wide pools; the dispatcher owns concurrency and the plugin keeps its HTTP timeouts.
    options: dict[str, Any] = {"async_mode": False}
    accepted = inspect.signature(apprise.AppriseAsset).parameters
    if "service_timeout" in accepted:
        options["service_timeout"] = 0
    if "storage_mode" in accepted:
        # Memory only: handlers never persist; the outbox is our one store.
        options["storage_mode"] = "memory"
    return options


def _label(url: str) -> str:
    scheme, sep, _rest = url.partition("://")
    return f"apprise {scheme}://…" if sep and _SCHEME.fullmatch(scheme) else "apprise <url>"


@attrs.define(kw_only=True, eq=False, repr=False)
class AppriseHandler:
    """Sends each event as one notification to one Apprise URL.

    ``notify()`` failing is worth retrying: Apprise folds a bad token and a network outage into
    the same ``False``, and the dispatcher's retry limit ends hopeless cases.
    """

    _url: str = attrs.field(alias="url")
    # None: the built-in message for the event's kind (task or project).
    _title: str | None = attrs.field(default=None, alias="title")
    _body: str | None = attrs.field(default=None, alias="body")
    _label: str = attrs.field(init=False)
    _apprise: apprise_lib.Apprise = attrs.field(init=False)
    _lib: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._label = _label(self._url)
        for key, template in (("title", self._title), ("body", self._body)):
            if template is not None:
                validate_template(template, key=key)
        try:
            # Imported here so that cvat-watch works without the [chat] extra.
            import apprise
        except ImportError:
            raise ConfigError(_MISSING_EXTRA) from None
        self._lib = apprise
        self._apprise = apprise.Apprise(asset=apprise.AppriseAsset(**_asset_options(apprise)))
        with warnings.catch_warnings():
            # The first add() loads every Apprise plugin; on Python 3.11 one of them imports
            # the deprecated imghdr module. Nothing our users can act on, so keep it quiet.
            warnings.filterwarnings("ignore", message="'imghdr' is deprecated", category=DeprecationWarning)
            accepted = self._apprise.add(self._url)
        if not accepted:
            raise ConfigError(f"Apprise does not accept the {self._label} URL", key="url")
        if len(self._apprise) != 1:
            raise ConfigError(
                f"an apprise target holds exactly one URL, this one holds {len(self._apprise)}",
                key="url",
            )

    def __repr__(self) -> str:
        return f"AppriseHandler(target={self._label!r})"

    def _notify_type(self, event_type: str) -> Any:
        kinds = self._lib.NotifyType
        if event_type in (TASK_COMPLETED, PROJECT_COMPLETED):
            return kinds.SUCCESS
        if event_type in (TASK_REOPENED, PROJECT_REOPENED):
            return kinds.WARNING
        return kinds.INFO

    def deliver(self, event: Mapping[str, Any]) -> None:
        """Send one notification; a refusal or error raises ``DeliveryError(retry=True)``."""
        fields = event_fields(event)
        project = fields["type"] in PROJECT_EVENTS
        title = (self._title or (DEFAULT_PROJECT_TITLE if project else DEFAULT_TITLE)).format_map(fields)
        body = (self._body or (DEFAULT_PROJECT_BODY if project else DEFAULT_BODY)).format_map(fields)
        self._notify(title, body, self._notify_type(fields["type"]))

    def _notify(self, title: str, body: str, notify_type: Any) -> None:
        try:
            result = self._apprise.notify(
                body=body,
                title=title,
                notify_type=notify_type,
                body_format=self._lib.NotifyFormat.TEXT,
            )
        except Exception as exc:  # a plugin bug must not stop the dispatcher
            # The exception text may quote the URL; its type is enough to go on.
            raise DeliveryError(
                f"{self._label}: notification failed ({type(exc).__name__})", retry=True
            ) from None
        if not result:
            status = getattr(getattr(result, "status", None), "name", "FAILURE")
            raise DeliveryError(
                f"{self._label}: notification failed ({status}; see the apprise log)", retry=True
            )

    def deliver_group(self, events: Sequence[Mapping[str, Any]], *, group_id: str) -> None:
        """Send ``events`` as one digest: a title counting them, one line each, and the group id.

        The lines are the log handler's (task, project, counts, link); the group id at the end
        is the same on every retry, so a repeated digest can be told from a new one.
        """
        if len(events) == 1:
            # A group of one reads best as the ordinary message.
            self.deliver(events[0])
            return
        kinds: dict[str, int] = {}
        for event in events:
            summary = event_fields(event)["summary"]
            kinds[summary] = kinds.get(summary, 0) + 1
        title = "CVAT: " + ", ".join(f"{count}× {summary}" for summary, count in kinds.items())
        lines = [format_line(event) for event in events]
        body = "\n".join([*lines, f"(digest {group_id})"])
        types = {str(event.get("type")) for event in events}
        if types & {TASK_REOPENED, PROJECT_REOPENED}:
            notify_type = self._lib.NotifyType.WARNING
        elif types <= {TASK_COMPLETED, PROJECT_COMPLETED}:
            notify_type = self._lib.NotifyType.SUCCESS
        else:
            notify_type = self._lib.NotifyType.INFO
        self._notify(title, body, notify_type)

    def close(self) -> None:
        """Forget the loaded service."""
        self._apprise.clear()
