"""Building model objects without their ``__init__``: the element readers generated per layout.

A 200 MB export holds millions of shapes, and the attrs-generated ``__init__`` of a frozen class
stores each field through ``object.__setattr__`` and runs the converters: 1.3 µs for a Box, most of
the cost of reading one. The reader instead creates each object as an instance of a private
subclass that adds nothing but plain attribute stores (no slots, no methods but object's
``__setattr__``/``__delattr__``), fills every slot, attaches the children when the end tag arrives
and then assigns ``__class__`` back to the model class (allowed: the layouts are the same). What is
left is exactly the model object, built in a fifth of the time. It is the object ``__init__`` would
make only if ``__init__`` stores the values it is given unchanged: :func:`direct_fields` checks, for
every class built this way, that no field has a validator or is left out of ``__init__``, that each
converter is one of the model's :data:`~cvat_watch.model.PASS_THROUGH_CONVERTERS` (which return an
exact str, tuple or None as it is), that there are no init hooks and that the slots are exactly the
fields; and the reader hands over exactly those types (the str expat made, tuples, None).
tests/cvatxml compares every kind of object read this way with the same object built through
``__init__``.

Each element layout (element name plus its attribute names in file order) gets a generated
function: a straight line of code that converts each attribute and stores each field is several
times faster than a loop over field descriptions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from cvat_watch.cvatxml._vocab import (
    BOOL_FIELDS,
    BOOLS,
    COORD_FIELDS,
    FLOAT_FIELDS,
    INT_FIELDS,
    SHARED_TEXT_FIELDS,
    TRACKED_VALUES,
)
from cvat_watch.model import (
    PASS_THROUGH_CONVERTERS,
    TEXT_POINTS_CLASSES,
    ImageAnnotation,
    SkeletonPoint,
    Track,
    TrackedShape,
    points_from_text,
)
from cvat_watch.model import SHAPE_KINDS as _SHAPE_KINDS

#: The coordinate text a ``points`` slot may keep until first read (model.TEXT_POINTS_CLASSES):
#: x,y pairs of plain decimal numbers, at most 300 digits before the point, so that float() takes
#: every one and none is infinite. Anything else is decoded at once, where a bad value is an error
#: naming its line. Possessive quantifiers: no backtracking, a fifth of the cost of decoding.
_NUMBER = r"-?[0-9]{1,300}+(?:\.[0-9]++)?+"
_PLAIN_POINTS = re.compile(rf"{_NUMBER},{_NUMBER}(?:;{_NUMBER},{_NUMBER})*+", re.ASCII)

#: ``"x,y;x,y"`` → ((x, y), (x, y)); ValueError for anything else (nan and inf included).
parse_points = points_from_text


class SharedStrings(dict[str, str]):
    """One shared str per distinct label, source, subset or task id (they repeat on every shape)."""

    __slots__ = ()

    def __missing__(self, text: str) -> str:
        self[text] = text
        return text


_IMMUTABLE_DEFAULTS = (str, int, float, bool, tuple, type(None))


def direct_fields(cls: type) -> tuple[tuple[str, Any], ...]:
    """(name, default) per field of ``cls``; TypeError if its __init__ does more than store them."""
    problems: list[str] = []
    fields: list[tuple[str, Any]] = []
    for field in attrs.fields(cls):
        if field.validator is not None:
            problems.append(f"{field.name} has a validator")
        if not field.init:
            problems.append(f"{field.name} is not set by __init__")
        if field.converter is not None and field.converter not in PASS_THROUGH_CONVERTERS:
            problems.append(f"{field.name} has a converter the reader does not know")
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = attrs.NOTHING if default.takes_self else default.factory()
        if default is not attrs.NOTHING:
            if field.converter is not None:
                default = field.converter(default)
            if not isinstance(default, _IMMUTABLE_DEFAULTS):
                problems.append(f"{field.name} defaults to a mutable value")
        fields.append((field.name, default))
    for hook in ("__attrs_pre_init__", "__attrs_post_init__"):
        if hasattr(cls, hook):
            problems.append(f"it has {hook}")
    if set(getattr(cls, "__slots__", ())) - {"__weakref__"} != {name for name, _ in fields}:
        problems.append("its slots are not exactly its fields")
    if problems:
        raise TypeError(f"cvat_watch.cvatxml cannot build {cls.__name__} directly: {'; '.join(problems)}")
    return tuple(fields)


def _building_class(cls: type) -> type:
    """The private subclass the reader fills in before an object becomes a ``cls``."""
    namespace = {
        "__slots__": (),
        "__init__": object.__init__,
        "__setattr__": object.__setattr__,
        "__delattr__": object.__delattr__,
    }
    building = type(f"_Building{cls.__name__}", (cls,), namespace)
    probe = building()
    probe.__class__ = cls  # fails here, at import, if this interpreter does not allow it
    return building


#: Model class → (its fields with defaults, its building class).
_DIRECT: dict[type, tuple[tuple[tuple[str, Any], ...], type]] = {
    cls: (direct_fields(cls), _building_class(cls))
    for cls in (
        *(cls for _, cls in _SHAPE_KINDS.values()),
        SkeletonPoint,
        TrackedShape,
        ImageAnnotation,
        Track,
    )
}

#: A compiled element reader: the attrs list expat hands over → the object, of its building class.
Build = Callable[[list[str]], Any]
#: Makes a Build bound to one load's shared strings, points parser and default task id.
Factory = Callable[[SharedStrings, Callable[[str], Any], "str | None"], Build]

_factories: dict[tuple[type, str, tuple[str, ...]], Factory | None] = {}


def _conversion(name: str, source: str) -> str:
    """The expression converting the attribute text ``source`` to the field ``name`` (not a float)."""
    if name in INT_FIELDS:
        return f"int({source})"
    if name in BOOL_FIELDS:
        return f"BOOLS[{source}]"
    if name in COORD_FIELDS:
        return f"parse_points({source})"
    if name in SHARED_TEXT_FIELDS:
        return f"shared[{source}]"
    return source


def factory(
    cls: type, tag: str, names: tuple[str, ...], known: frozenset[str], required: Iterable[str]
) -> Factory | None:
    """The generated reader of one element layout (its attribute names in file order), or None
    when a required attribute is missing.

    Generated once per distinct layout and kept across loads. Only this module's constants, field
    names and integer positions go into the source, never text from a file (names and values from
    the file are bound as globals of the generated function).

    The generated code reads like this for ``<box label=… xtl=… ytl=… xbr=… ybr=… z_order=…>``::

        def make_factory(shared, parse_points, default_task_id):
            def build(attrs):
                float_0 = float(attrs[3])
                ...
                if float_0 - float_0 or ...:
                    raise ValueError('not finite')
                obj = Building()
                obj.label = shared[attrs[1]]
                obj.xtl = float_0
                ...
                obj.xml_layout = LAYOUT
                return obj
            return build
    """
    key = (cls, tag, names)
    if key in _factories:
        return _factories[key]
    # attrs is expat's ordered_attributes list [name, value, name, value…]: the value's position
    position = {name: 2 * index + 1 for index, name in enumerate(names) if name in known}
    if not set(required).issubset(position):
        return None
    fields, building = _DIRECT[cls]
    namespace: dict[str, Any] = {
        "Building": building, "BOOLS": BOOLS, "LAYOUT": names, "KIND": tag,
        "plain_points": _PLAIN_POINTS.fullmatch,
    }  # fmt: skip
    floats: list[str] = []

    def constant(value: Any) -> str:
        name = f"CONSTANT_{len(namespace)}"
        namespace[name] = value
        return name

    def converted(name: str) -> str:
        source = f"attrs[{position[name]}]"
        if name in COORD_FIELDS and cls in TEXT_POINTS_CLASSES:
            # kept as text until first read when it is plain numbers (see model._PointsSlot)
            lines.append(f"        text = {source}")
            return "(text if plain_points(text) is not None else parse_points(text))"
        if name not in FLOAT_FIELDS:
            return _conversion(name, source)
        floats.append(f"float_{len(floats)}")
        # float() first, into a variable, so that one test below refuses nan and ±inf
        lines.append(f"        {floats[-1]} = float({source})")
        return floats[-1]

    lines = ["def make_factory(shared, parse_points, default_task_id):", "    def build(attrs):"]
    stores: list[str] = []
    for name, default in fields:
        if name in position:
            value = converted(name)
        elif name == "kind":
            value = "KIND"
        elif name == "xml_layout":
            value = "LAYOUT"
        elif name == "task_id" and cls is ImageAnnotation:
            value = "default_task_id"  # an image without task_id belongs to a task export's own task
        elif name == "values":
            pairs = [
                f"({constant(item)}, {converted(item)})" for item in TRACKED_VALUES[tag] if item in position
            ]
            value = f"({', '.join(pairs)},)" if pairs else "()"
        elif name == "extra_attributes":
            extras = [
                f"({constant(extra)}, attrs[{2 * index + 1}])"
                for index, extra in enumerate(names)
                if extra not in known
            ]
            value = f"({', '.join(extras)},)" if extras else "()"
        else:
            assert default is not attrs.NOTHING, f"{cls.__name__}.{name} is required"
            value = constant(default)
        stores.append(f"        obj.{name} = {value}")
    if floats:
        # x - x is 0.0 for every finite x and nan for nan and ±inf
        lines.append(f"        if {' or '.join(f'{v} - {v}' for v in floats)}:")
        lines.append("            raise ValueError('not finite')")
    lines += ["        obj = Building()", *stores, "        return obj", "    return build"]
    exec(compile("\n".join(lines) + "\n", f"<cvat_watch.cvatxml {cls.__name__}>", "exec"), namespace)
    # The function's globals must not hold the function itself: that cycle would need the collector.
    made: Factory = namespace.pop("make_factory")
    if len(_factories) > 4096:  # a bound for pathological inputs; real exports have a few dozen
        _factories.clear()
    _factories[key] = made
    return made
