"""The Apprise handler: one chat or push notification per event through one Apprise URL.

Apprise URLs carry their tokens everywhere (host, path, query), so our messages and repr
name a target by its scheme only (``apprise tgram://…``). Apprise itself logs through
the ``apprise`` logger with its own masking.

Title and body are ``str.format_map`` templates over :data:`TEMPLATE_FIELDS`; every field is
a string and a value the event lacks is ``""``.
"""

from __future__ import annotations

import inspect
import re
import string
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.eventtypes import TASK_COMPLETED, TASK_REOPENED
from cvat_watch.handlers.base import EVENT_FIELDS, event_fields

if TYPE_CHECKING:
    import apprise as apprise_lib

__all__ = [
    "DEFAULT_BODY",
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
    _title: str = attrs.field(default=DEFAULT_TITLE, alias="title")
    _body: str = attrs.field(default=DEFAULT_BODY, alias="body")
    _label: str = attrs.field(init=False)
    _apprise: apprise_lib.Apprise = attrs.field(init=False)
    _lib: Any = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._label = _label(self._url)
        validate_template(self._title, key="title")
        validate_template(self._body, key="body")
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
        if event_type == TASK_COMPLETED:
            return kinds.SUCCESS
        if event_type == TASK_REOPENED:
            return kinds.WARNING
        return kinds.INFO

    def deliver(self, event: Mapping[str, Any]) -> None:
        """Send one notification; a refusal or error raises ``DeliveryError(retry=True)``."""
        fields = event_fields(event)
        title = self._title.format_map(fields)
        body = self._body.format_map(fields)
        try:
            result = self._apprise.notify(
                body=body,
                title=title,
                notify_type=self._notify_type(fields["type"]),
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

    def close(self) -> None:
        """Forget the loaded service."""
        self._apprise.clear()
