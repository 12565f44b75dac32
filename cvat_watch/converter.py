"""The one configured cattrs converter of cvat-watch.

Every module that turns attrs values into plain data (JSON event payloads, ``--json``
output) or plain data into attrs values (the TOML configuration) goes through
:data:`converter`, so that one set of rules holds everywhere:

* unstructuring: tuples and lists become lists, paths become strings, datetimes ISO 8601
  strings, nothing is omitted, and a :class:`Secret` becomes ``"***"``;
* structuring is strict: unknown keys are errors (``forbid_extra_keys``), and values are
  never coerced across kinds (``"5"`` is not a number, ``1`` is not a boolean, a string
  is not a list of characters). Whole numbers are accepted where a float is expected.

:func:`error_paths` turns the exception group cattrs raises into ``(key path, message)``
pairs, e.g. ``("watch[0].anotations", "unknown key (did you mean 'annotations'?)")``.

Other modules register their own classes on :data:`converter`; this module stays
generic and knows no configuration or event class.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any, TypeVar, get_args, get_origin

import attrs
from cattrs.cols import homogenous_tuple_structure_factory, list_structure_factory
from cattrs.errors import (
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.preconf.json import JsonConverter, make_converter

__all__ = [
    "REDACTED",
    "Secret",
    "converter",
    "error_paths",
    "from_dict",
    "to_dict",
]

T = TypeVar("T")

REDACTED = "***"


@attrs.frozen(repr=False)
class Secret:
    """A credential read from the configuration; shown everywhere as ``Secret('***')``.

    It lives here rather than in ``config.py`` so that the converter can redact it
    without importing upwards; ``cvat_watch.config`` re-exports it. Only the code that
    actually signs or sends something calls :meth:`reveal`.
    """

    value: str

    def reveal(self) -> str:
        """Return the secret itself (for signing or sending, never for printing)."""
        return self.value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    __str__ = __repr__


def _kind(value: object) -> str:
    """Name the kind of a plain value the way a TOML or JSON author thinks of it."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    # TOML dates and times arrive as datetime objects.
    return f"a {type(value).__name__}"


def _wrong(expected: str, value: object) -> TypeError:
    # The value itself is never quoted: it may be a secret typed into the wrong key.
    return TypeError(f"expected {expected}, got {_kind(value)}")


def _structure_str(value: object, _: type) -> str:
    if not isinstance(value, str):
        raise _wrong("a string", value)
    return value


def _structure_bool(value: object, _: type) -> bool:
    if not isinstance(value, bool):
        raise _wrong("a boolean (true or false)", value)
    return value


def _structure_int(value: object, _: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong("an integer", value)
    return value


def _structure_float(value: object, _: type) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong("a number", value)
    return float(value)


def _structure_path(value: object, _: type) -> Path:
    if not isinstance(value, str | PurePath):
        raise _wrong("a path string", value)
    return Path(value)


def _structure_secret(value: object, _: type) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise _wrong("a string", value)
    return Secret(value)


def _is_homogeneous_sequence(type_: Any) -> bool:
    origin = get_origin(type_)
    if origin is list:
        return True
    if origin is tuple:
        args = get_args(type_)
        return len(args) == 2 and args[1] is Ellipsis
    return False


def _strict_sequence_factory(type_: Any, conv: Any) -> Callable[[Any, Any], Any]:
    """Structure lists and ``tuple[X, ...]`` only from lists: a string is not a list."""
    if get_origin(type_) is list:
        inner = list_structure_factory(type_, conv)
    else:
        inner = homogenous_tuple_structure_factory(type_, conv)

    def structure_sequence(value: Any, _: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise _wrong("a list", value)
        return inner(value, type_)

    return structure_sequence


def _is_dict(type_: Any) -> bool:
    return get_origin(type_) is dict


def _strict_mapping_factory(type_: Any, conv: Any) -> Callable[[Any, Any], Any]:
    inner = conv.gen_structure_mapping(type_)

    def structure_mapping(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _wrong("a table", value)
        return inner(value, type_)

    return structure_mapping


def _strict_attrs_factory(type_: Any, conv: Any) -> Callable[[Any, Any], Any]:
    inner = conv.gen_structure_attrs_fromdict(type_)

    def structure_attrs(value: Any, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _wrong("a table", value)
        return inner(value, type_)

    return structure_attrs


def _make() -> JsonConverter:
    conv = make_converter(
        forbid_extra_keys=True,
        omit_if_default=False,
        detailed_validation=True,
        unstruct_collection_overrides={tuple: list},
    )
    for type_, hook in (
        (str, _structure_str),
        (bool, _structure_bool),
        (int, _structure_int),
        (float, _structure_float),
    ):
        conv.register_structure_hook(type_, hook)
    conv.register_structure_hook(Path, _structure_path)
    conv.register_unstructure_hook(Path, str)
    conv.register_structure_hook(Secret, _structure_secret)
    conv.register_unstructure_hook(Secret, lambda _secret: REDACTED)
    conv.register_structure_hook_factory(attrs.has, _strict_attrs_factory)
    conv.register_structure_hook_factory(_is_homogeneous_sequence, _strict_sequence_factory)
    conv.register_structure_hook_factory(_is_dict, _strict_mapping_factory)
    return conv


converter: JsonConverter = _make()


def to_dict(obj: Any) -> dict[str, Any]:
    """Unstructure an attrs instance into JSON-ready plain data (secrets redacted)."""
    data = converter.unstructure(obj)
    if not isinstance(data, dict):
        raise TypeError(f"to_dict() needs an attrs instance, got {type(obj).__name__}")
    return data


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Structure plain data into ``cls``; cattrs' validation errors propagate.

    Use :func:`error_paths` on the raised exception to describe it.
    """
    return converter.structure(data, cls)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, part: str | int) -> str:
    if isinstance(part, int):
        return f"{path}[{part}]"
    # Keys that are not bare TOML keys are quoted so the path stays unambiguous.
    name = part if _BARE_KEY.fullmatch(part) else f'"{part}"'
    return f"{path}.{name}" if path else name


def _did_you_mean(key: str, cls: type) -> str:
    if not attrs.has(cls):
        return ""
    known = [a.alias or a.name for a in attrs.fields(cls)]
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _walk(exc: BaseException, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(exc, ClassValidationError | IterableValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            part = note.name if hasattr(note, "name") else note.index
            yield from _walk(sub, _join(path, part))
        for sub in without:
            yield from _walk(sub, path)
    elif isinstance(exc, BaseExceptionGroup):
        for member in exc.exceptions:
            yield from _walk(member, path)
    elif isinstance(exc, ForbiddenExtraKeysError):
        for key in sorted(exc.extra_fields):
            yield _join(path, key), "unknown key" + _did_you_mean(key, exc.cl)
    elif isinstance(exc, KeyError):
        # cattrs raises a bare KeyError for a required field that is absent.
        yield path, "required key is missing"
    elif isinstance(exc, TypeError | ValueError) and str(exc):
        yield path, str(exc)
    else:
        yield path, f"invalid value ({type(exc).__name__})"


def error_paths(exc: BaseException) -> list[tuple[str, str]]:
    """Flatten a cattrs structuring error into ``(key path, message)`` pairs.

    Paths look like ``watch[0].annotations`` or ``handler[1].headers."X Team"``; the
    empty path means the top level. Messages never quote the offending value.
    """
    return list(_walk(exc, ""))
