"""NATS subjects: the ``subject`` template of a NATS handler, and how stream filters match.

Shared by the configuration (which checks a template against every watch and event type it
will be used with) and the NATS handler (which renders it per event). Pure string rules, so
the library can check a configuration without importing a NATS client.

A subject is dot-separated tokens; a token is not empty and holds no whitespace. A published
subject holds no wildcards; a stream's filter may use ``*`` (one token) and ``>`` (one or more
trailing tokens).
"""

from __future__ import annotations

import re
import string

__all__ = [
    "SUBJECT_FIELDS",
    "default_stream_subjects",
    "render_subject",
    "subject_error",
    "subject_matches",
    "template_error",
]

#: The names a subject template may use: ``{watch}`` (the watch's name) and ``{type}`` (the
#: event type, e.g. ``task.completed``, which is itself two tokens).
SUBJECT_FIELDS: tuple[str, ...] = ("watch", "type")

_BAD_CHARACTER = re.compile(r"[\s\x00]")


def template_error(template: str) -> str | None:
    """Why ``template`` cannot be a subject template, or ``None`` when it can."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        return f"is not a valid template ({exc}); write {{watch}} and {{type}} for the fields"
    for _literal, field, spec, conversion in parts:
        if field is None:
            continue
        if field not in SUBJECT_FIELDS:
            return f"uses {{{field}}}; a subject template knows only {{watch}} and {{type}}"
        if spec or conversion:
            return f"{{{field}}} must be written plain, without a format spec or conversion"
    # Whatever the fields become, the literal parts must already make a valid subject.
    return subject_error(render_subject(template, watch="w", event_type="t"))


def render_subject(template: str, *, watch: str, event_type: str) -> str:
    """The subject for one event; check it with :func:`subject_error`."""
    return template.format(watch=watch, type=event_type)


def subject_error(subject: str) -> str | None:
    """Why ``subject`` cannot be published to, or ``None`` when it can."""
    if not subject:
        return "is empty"
    if _BAD_CHARACTER.search(subject):
        return "must not contain whitespace"
    tokens = subject.split(".")
    if any(not token for token in tokens):
        return "has an empty token (a leading, trailing or doubled '.')"
    if any(token in ("*", ">") for token in tokens):
        return "must not contain the wildcards '*' or '>' (they are for stream filters)"
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a stream filter (``*`` one token, ``>`` the rest) captures ``subject``."""
    wanted = pattern.split(".")
    tokens = subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(tokens) > index
        if index >= len(tokens) or (token != "*" and token != tokens[index]):
            return False
    return len(wanted) == len(tokens)


def default_stream_subjects(template: str) -> tuple[str, ...] | None:
    """The filter a created stream gets when none is configured, or ``None`` if none is safe.

    A template without fields is its own filter; otherwise the literal tokens before the first
    field followed by ``>`` (``cvat.{watch}.{type}`` → ``cvat.>``). A template that starts with
    a field, or whose field sits inside a token, has no safe default: a stream on ``>`` would
    capture every subject of the account.
    """
    prefix, field, _spec, _conversion = next(iter(string.Formatter().parse(template)), ("", None, "", ""))
    if field is None:
        return (template,)
    if not prefix.endswith(".") or prefix == ".":
        return None
    return (prefix + ">",)
