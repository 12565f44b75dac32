"""The writer: the model as CVAT XML, reproducing what was read.

Every XML-derived model object carries ``xml_layout``, the child element names (meta containers) or
attribute names (images, shapes, tracks) in file order, and the writer emits exactly those, in that
order. Objects built in code (``xml_layout=None``) are written in the layout of current CVAT. Values
the layout does not mention but that differ from their defaults (a model edited after loading) are
appended, so an edit is never silently dropped.

``Annotations.xml_layout`` holds the children of ``<annotations>`` and of ``<meta>`` as tokens:
``version``, ``meta``, ``meta/<child>`` for each child of ``<meta>``, one ``image`` and one ``track``
token where the first image and track appeared, and the tag of any unknown root-level element.
Unknown elements of ``<meta>`` and of ``<annotations>`` are both kept in ``meta_extra``, in
document order; the tokens say which goes where.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import operator
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from cvat_watch._queries import _single_task_id
from cvat_watch.cvatxml._base import PathLike, os_error
from cvat_watch.cvatxml._vocab import (
    BOX_COORDS,
    COMMON,
    ELLIPSE_COORDS,
    IMAGE_ATTRS_KNOWN,
    IMAGE_KNOWN,
    KIND_OF_CLASS,
    LABEL_ATTRIBUTE_FIELDS,
    LABEL_ATTRIBUTE_LAYOUT,
    LABEL_FIELDS,
    LABEL_LAYOUT,
    MASK_INTS,
    NODE_KNOWN,
    PROJECT_FIELDS,
    PROJECT_LAYOUT,
    SEGMENT_FIELDS,
    SEGMENT_LAYOUT,
    SHAPE_FIELD,
    TASK_FIELDS,
    TASK_LAYOUT,
    TRACK_ATTRS_KNOWN,
    TRACKED_KNOWN,
    TRACKED_VALUES,
    USER_FIELDS,
    USER_LAYOUT,
    Content,
    is_unknown_token,
    split_children,
)
from cvat_watch.errors import AnnotationsError
from cvat_watch.model import (
    CUBOID_COORDINATES,
    Annotations,
    Attribute,
    ImageAnnotation,
    Project,
    SkeletonPoint,
    Task,
    Track,
    TrackedShape,
    XmlElement,
)

_ATTR_SPECIAL = re.compile(r'[&<>"\n\r\t]')
_TEXT_SPECIAL = re.compile(r"[&<>\r]")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ATTR_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "\n": "&#10;",
    "\r": "&#13;",
    "\t": "&#9;",
}
_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}


#: Names the reader gets back as written: no namespace prefix (the parser resolves those) and no
#: xmlns attribute (the parser consumes those).
_XML_NAME = re.compile(r"(?!xmlns)[^\W\d][\w.-]*\Z")


def _check_name(name: str) -> str:
    if _XML_NAME.match(name) is None:
        raise AnnotationsError(f"cannot write {name!r} as an XML element or attribute name")
    return name


def _escape_attr(value: str) -> str:
    if _ATTR_SPECIAL.search(value) is None:
        return value
    return _ATTR_SPECIAL.sub(lambda m: _ATTR_ESCAPES[m.group()], value)


def _escape_text(value: str) -> str:
    if _TEXT_SPECIAL.search(value) is None:
        return value
    return _TEXT_SPECIAL.sub(lambda m: _TEXT_ESCAPES[m.group()], value)


def _fmt_float(value: float) -> str:
    """CVAT's two decimals when they say exactly the same number, else the shortest exact repr."""
    text = f"{value:.2f}"
    if float(text) == value:
        return text
    return repr(float(value))


def _fmt_points(points: Iterable[tuple[float, float]]) -> str:
    return ";".join(f"{_fmt_float(x)},{_fmt_float(y)}" for x, y in points)


def _fmt_bool(value: bool) -> str:
    return "1" if value else "0"


def _fmt_int(value: int) -> str:
    return str(int(value))


_INDENTS = ["\n" + "  " * level for level in range(32)]


def _indent(level: int) -> str:
    return _INDENTS[level] if level < len(_INDENTS) else "\n" + "  " * level


#: How one attribute of a model object is written: getter, formatter, default, needs escaping.
_AttrSpec = tuple[Callable[[Any], Any], Callable[[Any], str], Any, bool]


def _field(name: str, fmt: Callable[[Any], str], default: Any) -> _AttrSpec:
    return (operator.attrgetter(name), fmt, default, fmt is str)


def _value(name: str, fmt: Callable[[Any], str]) -> _AttrSpec:
    def get(shape: TrackedShape) -> Any:
        for key, value in shape.values:
            if key == name:
                return value
        return None

    return (get, fmt, None, fmt is str)


_NO_DEFAULT = object()
_COMMON_SPECS: dict[str, _AttrSpec] = {
    "label": _field("label", str, _NO_DEFAULT),
    "source": _field("source", str, "manual"),
    "occluded": _field("occluded", _fmt_bool, False),
    "z_order": _field("z_order", _fmt_int, 0),
    "group_id": _field("group_id", _fmt_int, None),
}


def _specs(
    *names: str,
    floats: Iterable[str] = (),
    ints: Iterable[str] = (),
    extra: dict[str, _AttrSpec] | None = None,
) -> dict[str, _AttrSpec]:
    specs = {name: _COMMON_SPECS[name] for name in names}
    specs.update({name: _field(name, _fmt_float, _NO_DEFAULT) for name in floats})
    specs.update({name: _field(name, _fmt_int, _NO_DEFAULT) for name in ints})
    specs.update(extra or {})
    return specs


_ROTATION = _field("rotation", _fmt_float, 0.0)
_POINTS = _field("points", _fmt_points, _NO_DEFAULT)
_IMAGE_SPECS: dict[str, dict[str, _AttrSpec]] = {
    "box": _specs(*COMMON, floats=BOX_COORDS, extra={"rotation": _ROTATION}),
    "polygon": _specs(*COMMON, extra={"points": _POINTS}),
    "polyline": _specs(*COMMON, extra={"points": _POINTS}),
    "points": _specs(*COMMON, extra={"points": _POINTS}),
    "ellipse": _specs(*COMMON, floats=ELLIPSE_COORDS, extra={"rotation": _ROTATION}),
    "cuboid": _specs(*COMMON, floats=CUBOID_COORDINATES),
    "mask": _specs(*COMMON, ints=MASK_INTS, extra={"rle": _field("rle", str, _NO_DEFAULT)}),
    "skeleton": _specs(*COMMON, extra={"rotation": _ROTATION, "points": _field("points", _fmt_points, ())}),
    "tag": _specs("label", "source", "group_id"),
}
#: Current CVAT's attribute order; names in _CONDITIONAL are written only when not the default.
_IMAGE_DEFAULT_LAYOUTS: dict[str, tuple[str, ...]] = {
    "box": ("label", "source", "occluded", *BOX_COORDS, "rotation", "z_order", "group_id"),
    "polygon": ("label", "source", "occluded", "points", "z_order", "group_id"),
    "polyline": ("label", "source", "occluded", "points", "z_order", "group_id"),
    "points": ("label", "source", "occluded", "points", "z_order", "group_id"),
    "ellipse": ("label", "source", "occluded", *ELLIPSE_COORDS, "rotation", "z_order", "group_id"),
    "cuboid": ("label", "source", "occluded", *CUBOID_COORDINATES, "z_order", "group_id"),
    "mask": ("label", "source", "occluded", "rle", *MASK_INTS, "z_order", "group_id"),
    "skeleton": ("label", "source", "z_order", "group_id"),
    "tag": ("label", "source", "group_id"),
}
assert _IMAGE_SPECS.keys() == _IMAGE_DEFAULT_LAYOUTS.keys() == set(KIND_OF_CLASS.values())
_CONDITIONAL = frozenset(("group_id", "rotation"))

_ELEMENT_SPECS = _specs(
    *COMMON,
    extra={"outside": _field("outside", _fmt_bool, False), "points": _POINTS},
)
_ELEMENT_LAYOUT = ("label", "source", "outside", "occluded", "points")
# In a track CVAT gives skeleton nodes a keyframe (kept in extra_attributes) and no source.
_TRACK_ELEMENT_LAYOUT = ("label", "keyframe", "outside", "occluded", "points")

_TRACKED_BASE: dict[str, _AttrSpec] = {
    "frame": _field("frame", _fmt_int, _NO_DEFAULT),
    "outside": _field("outside", _fmt_bool, False),
    "occluded": _field("occluded", _fmt_bool, False),
    "keyframe": _field("keyframe", _fmt_bool, True),
    "z_order": _field("z_order", _fmt_int, 0),
    "rotation": _ROTATION,
}


def _tracked_specs(kind: str) -> dict[str, _AttrSpec]:
    specs = dict(_TRACKED_BASE)
    for name in TRACKED_VALUES[kind]:
        if name == "points":
            specs[name] = _value(name, _fmt_points)
        elif name == "rle":
            specs[name] = _value(name, str)
        elif name in MASK_INTS:
            specs[name] = _value(name, _fmt_int)
        else:
            specs[name] = _value(name, _fmt_float)
    return specs


_TRACKED_SPECS = {kind: _tracked_specs(kind) for kind in TRACKED_VALUES}
_TRACKED_DEFAULT_LAYOUTS: dict[str, tuple[str, ...]] = {
    kind: (
        ("frame", "keyframe", "points", "z_order")
        if kind == "skeleton"
        else ("frame", "keyframe", "outside", "occluded", *names, "rotation", "z_order")
    )
    for kind, names in TRACKED_VALUES.items()
}

_IMAGE_ATTR_SPECS: dict[str, _AttrSpec] = {
    "id": _field("id", str, _NO_DEFAULT),
    "name": _field("name", str, _NO_DEFAULT),
    "subset": _field("subset", str, None),
    "task_id": _field("task_id", str, None),
    "width": _field("width", _fmt_int, None),
    "height": _field("height", _fmt_int, None),
}
_IMAGE_ATTR_LAYOUT = ("id", "name", "subset", "task_id", "width", "height")
_TRACK_ATTR_SPECS: dict[str, _AttrSpec] = {
    "id": _field("id", str, _NO_DEFAULT),
    "label": _field("label", str, _NO_DEFAULT),
    "source": _field("source", str, "manual"),
    "task_id": _field("task_id", str, None),
    "subset": _field("subset", str, None),
    "group_id": _field("group_id", _fmt_int, None),
}
_TRACK_ATTR_LAYOUT = ("id", "label", "source", "task_id", "subset", "group_id")

# The writer's tables keep their own order (it decides how edited values are written), but their
# names must be the reader's: a name read into a field and missing here would be dropped on save.
assert {kind: set(specs) for kind, specs in _IMAGE_SPECS.items()} == IMAGE_KNOWN
assert {kind: set(specs) for kind, specs in _TRACKED_SPECS.items()} == TRACKED_KNOWN
assert set(_ELEMENT_SPECS) == NODE_KNOWN
assert set(_IMAGE_ATTR_SPECS) == IMAGE_ATTRS_KNOWN
assert set(_TRACK_ATTR_SPECS) == TRACK_ATTRS_KNOWN


#: For one (spec table, layout): the layout's entries in order (name, spec or None for an extra
#: attribute, written only when not the default), the known attributes the layout leaves out, and
#: the layout's names.
_WritePlan = tuple[
    tuple[tuple[str, _AttrSpec | None, bool], ...], tuple[tuple[str, _AttrSpec], ...], frozenset[str]
]
_write_plans: dict[tuple[int, tuple[str, ...]], _WritePlan] = {}


def _write_plan(
    specs: dict[str, _AttrSpec], layout: tuple[str, ...] | None, default_layout: tuple[str, ...]
) -> _WritePlan:
    names = layout if layout is not None else default_layout
    key = (id(specs) if layout is not None else -id(specs), names)
    plan = _write_plans.get(key)
    if plan is None:
        if len(_write_plans) > 4096:  # a bound for pathological inputs; real exports have a handful
            _write_plans.clear()
        entries: list[tuple[str, _AttrSpec | None, bool]] = []
        for name in dict.fromkeys(names):
            entries.append((name, specs.get(name), layout is None and name in _CONDITIONAL))
        listed = frozenset(names)
        rest = tuple((name, spec) for name, spec in specs.items() if name not in listed)
        plan = _write_plans[key] = (tuple(entries), rest, listed)
    return plan


def _attributes(
    obj: Any,
    specs: dict[str, _AttrSpec],
    layout: tuple[str, ...] | None,
    default_layout: tuple[str, ...],
    skip: Callable[[str, Any], bool] | None = None,
) -> str:
    """The attribute string ` a="…" b="…"` of one element."""
    entries, rest, listed = _write_plan(specs, layout, default_layout)
    extras = obj.extra_attributes
    parts: list[str] = []
    for name, spec, conditional in entries:
        if spec is None:
            for extra_name, text in extras:
                if extra_name == name:
                    parts.append(f' {name}="{_escape_attr(text)}"')
                    break
            continue
        value = spec[0](obj)
        if value is None or (conditional and value == spec[2]) or (skip is not None and skip(name, value)):
            continue
        text = spec[1](value)
        parts.append(f' {name}="{_escape_attr(text) if spec[3] else text}"')
    # Whatever the layout does not mention but the object says: edits are never dropped.
    for name, spec in rest:
        value = spec[0](obj)
        if value is None or value == spec[2] or (skip is not None and skip(name, value)):
            continue
        text = spec[1](value)
        parts.append(f' {name}="{_escape_attr(text) if spec[3] else text}"')
    for name, text in extras:
        if name not in listed and name not in specs:
            parts.append(f' {_check_name(name)}="{_escape_attr(text)}"')
    return "".join(parts)


def _z_order(shape: Any) -> int:
    return int(shape.z_order)


class Writer:
    def __init__(self, annotations: Annotations) -> None:
        self.annotations = annotations
        self.out: list[str] = []
        tasks = annotations.tasks
        single = _single_task_id(annotations.kind, tasks)
        self.default_task_id = single if annotations.kind != "project" else None
        self.leftover: list[XmlElement] = []

    # -- generic pieces ----------------------------------------------------------------------

    def leaf(self, level: int, tag: str, text: str) -> None:
        self.out.append(f"{_indent(level)}<{tag}>{_escape_text(text)}</{tag}>")

    def element(self, level: int, element: XmlElement) -> None:
        out = self.out
        _check_name(element.tag)
        attributes = "".join(
            f' {_check_name(name)}="{_escape_attr(value)}"' for name, value in element.attributes
        )
        text = _escape_text(element.text) if element.text is not None else ""
        if not element.children:
            out.append(f"{_indent(level)}<{element.tag}{attributes}>{text}</{element.tag}>")
            return
        out.append(f"{_indent(level)}<{element.tag}{attributes}>{text}")
        for child in element.children:
            self.element(level + 1, child)
        out.append(f"{_indent(level)}</{element.tag}>")

    def attribute_values(self, level: int, attributes: Iterable[Attribute]) -> None:
        indent = _indent(level)
        for attribute in attributes:
            self.out.append(
                f'{indent}<attribute name="{_escape_attr(attribute.name)}">'
                f"{_escape_text(attribute.value)}</attribute>"
            )

    # -- meta --------------------------------------------------------------------------------

    def container(
        self,
        level: int,
        tag: str,
        obj: Any,
        fields: dict[str, Content],
        default_layout: tuple[str, ...],
    ) -> None:
        """A meta element: its known children in layout order, its extra elements where they were."""
        out = self.out
        out.append(f"{_indent(level)}<{tag}>")
        layout = obj.xml_layout
        extra = list(getattr(obj, "extra", ()))
        extra.reverse()
        written: set[str] = set()
        wrote_child = False
        for name in layout if layout is not None else default_layout:
            how = fields.get(name)
            if how is None:
                if layout is not None and extra:
                    self.element(level + 1, extra.pop())
                    wrote_child = True
                continue
            if self.write_field(level + 1, name, how, obj, layout is not None):
                written.add(name)
                wrote_child = True
        for name, how in fields.items():
            if name not in written and self.write_field(level + 1, name, how, obj, False):
                wrote_child = True
        while extra:
            self.element(level + 1, extra.pop())
            wrote_child = True
        if wrote_child:
            out.append(f"{_indent(level)}</{tag}>")
        else:
            out.append(f"</{tag}>")

    def write_field(self, level: int, name: str, how: Content, obj: Any, listed: bool) -> bool:
        """Write one known child; ``listed`` (the layout names it) writes empty containers too."""
        if how is Content.TASKS:
            tasks = self.annotations.tasks
            if not tasks and not listed:
                return False
            self.out.append(f"{_indent(level)}<tasks>")
            for task in tasks:
                self.task(level + 1, "task", task)
            self.out.append(f"{_indent(level)}</tasks>")
            return True
        value = getattr(obj, name)
        if value is None:
            return False
        if how is Content.TEXT:
            self.leaf(level, name, value)
        elif how is Content.INT:
            self.leaf(level, name, str(int(value)))
        elif how is Content.USER:
            self.container(level, name, value, USER_FIELDS, USER_LAYOUT)
        elif how is Content.SIZE:
            self.out.append(f"{_indent(level)}<{name}>")
            self.leaf(level + 1, "width", str(int(value.width)))
            self.leaf(level + 1, "height", str(int(value.height)))
            self.out.append(f"{_indent(level)}</{name}>")
        else:
            if not value and not listed and not (how is Content.LABEL_ATTRIBUTES and obj.xml_layout is None):
                return False
            self.out.append(f"{_indent(level)}<{name}>")
            for item in value:
                if how is Content.SEGMENTS:
                    self.container(level + 1, "segment", item, SEGMENT_FIELDS, SEGMENT_LAYOUT)
                elif how is Content.LABELS:
                    self.container(level + 1, "label", item, LABEL_FIELDS, LABEL_LAYOUT)
                else:
                    self.container(
                        level + 1, "attribute", item, LABEL_ATTRIBUTE_FIELDS, LABEL_ATTRIBUTE_LAYOUT
                    )
            self.out.append(f"{_indent(level)}</{name}>")
        return True

    def task(self, level: int, tag: str, task: Task) -> None:
        self.container(level, tag, task, TASK_FIELDS, TASK_LAYOUT)

    def project(self, level: int, project: Project) -> None:
        self.container(level, "project", project, PROJECT_FIELDS, PROJECT_LAYOUT)

    # -- images ------------------------------------------------------------------------------

    def image(self, image: ImageAnnotation) -> None:
        out = self.out
        default_task_id = self.default_task_id
        layout = image.xml_layout
        children = None
        if layout is not None:
            layout, children = split_children(layout)
        # The reader fills in a task/job export's own task id where the image has none; leave it
        # implied unless the file wrote it.
        implied_task_id = layout is None or "task_id" not in layout

        def implied(name: str, value: Any) -> bool:
            return implied_task_id and name == "task_id" and value == default_task_id

        attributes = _attributes(image, _IMAGE_ATTR_SPECS, layout, _IMAGE_ATTR_LAYOUT, implied)
        out.append(f"\n  <image{attributes}>")
        if children:
            self.image_in_order(image, children)
        else:
            self.image_shapes(image)
        out.append("\n  </image>")

    def image_shapes(self, image: ImageAnnotation, kinds: Iterable[Any] | None = None) -> None:
        """The shapes in the order CVAT would give them: stably by z_order, then the tags.

        A merge keeps each kind's own order even where it is not sorted, so reading back gives the
        same tuples.
        """
        if kinds is None:
            kinds = [getattr(image, SHAPE_FIELD[kind]) for kind in SHAPE_FIELD]
        *shapes, tags = kinds
        shapes = [kind for kind in shapes if kind]
        ordered: Iterable[Any] = shapes[0] if len(shapes) == 1 else heapq.merge(*shapes, key=_z_order)
        for shape in ordered:
            self.image_shape(shape)
        for tag in tags:
            self.image_shape(tag)

    def image_in_order(self, image: ImageAnnotation, children: tuple[tuple[str, int], ...]) -> None:
        """The shapes in the document order the reader recorded; any it did not see (the model was
        edited since) after them, in the writer's own order."""
        left = {kind: iter(getattr(image, field)) for kind, field in SHAPE_FIELD.items()}
        for kind, count in children:
            shapes = left.get(kind)
            if shapes is not None:
                for shape in itertools.islice(shapes, count):
                    self.image_shape(shape)
        self.image_shapes(image, [list(shapes) for shapes in left.values()])

    def image_shape(self, shape: Any) -> None:
        kind = KIND_OF_CLASS[type(shape)]
        layout = shape.xml_layout
        attributes = _attributes(shape, _IMAGE_SPECS[kind], layout, _IMAGE_DEFAULT_LAYOUTS[kind])
        out = self.out
        out.append(f"\n    <{kind}{attributes}>")
        if kind == "skeleton":
            for element in shape.elements:
                self.skeleton_element(3, element, _ELEMENT_LAYOUT)
        self.attribute_values(3, shape.attributes)
        out.append(f"\n    </{kind}>")

    def skeleton_element(self, level: int, element: SkeletonPoint, default_layout: tuple[str, ...]) -> None:
        attributes = _attributes(element, _ELEMENT_SPECS, element.xml_layout, default_layout)
        indent = _indent(level)
        self.out.append(f"{indent}<points{attributes}>")
        self.attribute_values(level + 1, element.attributes)
        self.out.append(f"{indent}</points>")

    # -- tracks ------------------------------------------------------------------------------

    def track(self, level: int, track: Track) -> None:
        layout, children = split_children(track.xml_layout) if track.xml_layout else (None, None)
        attributes = _attributes(track, _TRACK_ATTR_SPECS, layout, _TRACK_ATTR_LAYOUT)
        indent = _indent(level)
        out = self.out
        out.append(f"{indent}<track{attributes}>")
        # In the document order the reader recorded, if it recorded one (shapes and element tracks
        # interleaved); then whatever is left, shapes before element tracks.
        shapes: Iterator[TrackedShape] = iter(track.shapes)
        tracks: Iterator[Track] = iter(track.tracks)
        for kind, count in children or ():
            if kind == "track":
                for element_track in itertools.islice(tracks, count):
                    self.track(level + 1, element_track)
            else:
                self.tracked_shapes(level + 1, itertools.islice(shapes, count))
        self.tracked_shapes(level + 1, shapes)
        for element_track in tracks:
            self.track(level + 1, element_track)
        out.append(f"{indent}</track>")

    def tracked_shapes(self, level: int, shapes: Iterable[TrackedShape]) -> None:
        out = self.out
        indent = _indent(level)
        for shape in shapes:
            kind = shape.kind
            specs = _TRACKED_SPECS.get(kind)
            if specs is None:
                raise AnnotationsError(
                    f"cannot write a tracked shape of unknown kind {kind!r}", path=self.annotations.path
                )
            attributes = _attributes(shape, specs, shape.xml_layout, _TRACKED_DEFAULT_LAYOUTS[kind])
            out.append(f"{indent}<{kind}{attributes}>")
            for element in shape.elements:
                self.skeleton_element(level + 1, element, _TRACK_ELEMENT_LAYOUT)
            self.attribute_values(level + 1, shape.attributes)
            out.append(f"{indent}</{kind}>")

    # -- the document ------------------------------------------------------------------------

    def document(self) -> str:
        annotations = self.annotations
        out = self.out
        out.append('<?xml version="1.0" encoding="utf-8"?>\n<annotations>')
        tokens = annotations.xml_layout
        if tokens is None:
            tokens = self.default_tokens()
        # Extras the layout places (one per unknown token) in document order; any more were
        # added in code and go at the end of <meta>.
        placed = sum(1 for token in tokens if is_unknown_token(token))
        extra = list(annotations.meta_extra[:placed])
        extra.reverse()
        self.leftover = list(annotations.meta_extra[placed:])
        tasks = list(annotations.tasks) if annotations.kind != "project" else []
        tasks.reverse()
        wrote = dict.fromkeys(("meta", "image", "track", "project", "dumped", "source"), False)
        if "version" not in tokens and annotations.version != "1.1":
            self.leaf(1, "version", annotations.version)
        index = 0
        while index < len(tokens):
            token = tokens[index]
            index += 1
            if token == "version":
                self.leaf(1, "version", annotations.version)
            elif token == "meta":
                out.append("\n  <meta>")
                while index < len(tokens) and tokens[index].startswith("meta/"):
                    self.meta_child(tokens[index][5:], tasks, extra, wrote)
                    index += 1
                if not wrote["meta"]:
                    self.meta_rest(tasks, extra, wrote)
                wrote["meta"] = True
                out.append("\n  </meta>")
            elif token == "image":
                if not wrote["image"]:
                    for image in annotations.images:
                        self.image(image)
                wrote["image"] = True
            elif token == "track":
                if not wrote["track"]:
                    for track in annotations.tracks:
                        self.track(1, track)
                wrote["track"] = True
            elif token.startswith("meta/"):
                continue  # a meta child outside <meta>: cannot happen in a layout we wrote
            elif extra:
                self.element(1, extra.pop())
        if not wrote["meta"] and (
            tasks or self.leftover or annotations.project or annotations.dumped or annotations.source
        ):
            out.append("\n  <meta>")
            self.meta_rest(tasks, extra, wrote)
            out.append("\n  </meta>")
        if not wrote["image"]:
            for image in annotations.images:
                self.image(image)
        if not wrote["track"]:
            for track in annotations.tracks:
                self.track(1, track)
        out.append("\n</annotations>\n")
        return "".join(out)

    def default_tokens(self) -> tuple[str, ...]:
        annotations = self.annotations
        tokens = ["version", "meta"]
        if annotations.kind == "project":
            tokens.append("meta/project")
        else:
            tokens.extend(f"meta/{annotations.kind}" for _ in annotations.tasks)
        if annotations.dumped is not None:
            tokens.append("meta/dumped")
        if annotations.source is not None:
            tokens.append("meta/source")
        tokens.extend(f"meta/{element.tag}" for element in annotations.meta_extra)
        tokens.extend(("image", "track"))
        return tuple(tokens)

    def meta_child(
        self, tag: str, tasks: list[Task], extra: list[XmlElement], wrote: dict[str, bool]
    ) -> None:
        annotations = self.annotations
        if tag == "project":
            if annotations.kind == "project" and not wrote["project"]:
                self.project(2, annotations.project or Project())
                wrote["project"] = True
        elif tag in ("task", "job"):
            if tasks:
                self.task(2, "job" if annotations.kind == "job" else "task", tasks.pop())
        elif tag == "dumped":
            if annotations.dumped is not None and not wrote["dumped"]:
                self.leaf(2, "dumped", annotations.dumped)
                wrote["dumped"] = True
        elif tag == "source":
            if annotations.source is not None and not wrote["source"]:
                self.leaf(2, "source", annotations.source)
                wrote["source"] = True
        elif extra:
            self.element(2, extra.pop())

    def meta_rest(self, tasks: list[Task], extra: list[XmlElement], wrote: dict[str, bool]) -> None:
        """What the layout did not place inside <meta>."""
        annotations = self.annotations
        if annotations.kind == "project" and not wrote["project"]:
            self.meta_child("project", tasks, extra, wrote)
        while tasks:
            self.meta_child("task", tasks, extra, wrote)
        self.meta_child("dumped", tasks, extra, wrote)
        self.meta_child("source", tasks, extra, wrote)
        for element in self.leftover:
            self.element(2, element)
        self.leftover = []


def dumps(annotations: Annotations) -> bytes:
    """The export as CVAT XML bytes (UTF-8, 2-space indentation like CVAT)."""
    try:
        text = Writer(annotations).document()
    except RecursionError:
        raise AnnotationsError(
            "cannot write the export: unknown elements are nested too deeply", path=annotations.path
        ) from None
    bad = _NOT_XML.search(text)
    if bad is not None:
        raise AnnotationsError(
            f"cannot write U+{ord(bad.group()):04X} in XML: it is not a character XML can carry",
            path=annotations.path,
        )
    return text.encode("utf-8")


def save(annotations: Annotations, path: PathLike) -> None:
    """Write the export atomically: a temporary file beside the target, fsync, then rename.

    An existing target keeps its permission bits; a symlink keeps pointing at the replaced file.
    """
    target = Path(os.path.realpath(path))
    data = dumps(annotations)
    mode: int | None
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise os_error(exc, path, "cannot write") from exc
    directory = target.parent
    temporary = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        # O_EXCL: never write through someone else's file; 0o666 lets the umask decide for new files.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise os_error(exc, path, "cannot write") from exc
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            if mode is not None:
                os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise os_error(exc, path, "cannot write") from exc
        raise
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
