"""CVAT XML ("CVAT for images 1.1" / "CVAT for video 1.1") ⇄ :mod:`cvat_watch.model`.

Reading streams the file through one expat parser that defusedxml configured (DTDs, entity
declarations and external entities refused), with our own start/end/text handlers installed on it:
no element tree is built, the model objects are the only per-element objects. The ``<meta>``
section is small, so it is first captured as plain nodes and then mapped; the images and tracks
are mapped as they stream by, by code generated per attribute layout, into objects built without
their ``__init__`` (see "Building model objects without their __init__" below).

Writing reproduces what was read: every XML-derived model object carries ``xml_layout``, the child
element names (meta containers) or attribute names (images, shapes, tracks) in file order, and the
writer emits exactly those, in that order. Objects built in code (``xml_layout=None``) are written
in the layout of current CVAT. Values the layout does not mention but that differ from their
defaults (a model edited after loading) are appended, so an edit is never silently dropped.

``Annotations.xml_layout`` holds the children of ``<annotations>`` and of ``<meta>`` as tokens:
``version``, ``meta``, ``meta/<child>`` for each child of ``<meta>``, one ``image`` and one ``track``
token where the first image and track appeared, and the tag of any unknown root-level element.
Unknown elements of ``<meta>`` and of ``<annotations>`` are both kept in ``meta_extra``, in
document order; the tokens say which goes where.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import logging
import math
import operator
import os
import re
import secrets
import stat
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from xml.parsers import expat

import attrs
from defusedxml.common import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)
from defusedxml.ElementTree import DefusedXMLParser

from cvat_watch.errors import AnnotationsError
from cvat_watch.model import (
    CUBOID_COORDINATES,
    Annotations,
    Attribute,
    Box,
    Cuboid,
    Ellipse,
    ExportKind,
    ExportSummary,
    ImageAnnotation,
    Label,
    LabelAttribute,
    Mask,
    Points,
    Polygon,
    Polyline,
    Project,
    Segment,
    Size,
    Skeleton,
    SkeletonPoint,
    Tag,
    Task,
    Track,
    TrackedShape,
    User,
    XmlElement,
    _str_or_none,
    _tuple,
)

__all__ = ["dumps", "load", "load_summary", "loads", "loads_summary", "save"]

_log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: How much of the file is handed to expat at a time. Not smaller: expat re-scans an unfinished
#: token on every feed, so one huge attribute value costs (value / chunk) scans of itself —
#: quadratic in practice with 64 KiB (a 50 MB value: ~30 s) and ~2 s with 1 MiB.
CHUNK_SIZE = 1 << 20

#: The deepest nesting accepted. CVAT's own elements go six levels deep; beyond a few hundred the
#: model's ==, hash() and to_dict() would recurse too far, and every open level costs memory.
MAX_DEPTH = 256

# ---------------------------------------------------------------------------------------------
# Vocabulary shared by the reader and the writer
# ---------------------------------------------------------------------------------------------

#: ImageAnnotation's shape fields; _IMAGE_SHAPE_INDEX maps each element name to its position here.
_IMAGE_SHAPE_FIELDS = (
    "boxes", "polygons", "polylines", "points", "ellipses", "cuboids", "masks", "skeletons", "tags",
)  # fmt: skip
_IMAGE_SHAPE_INDEX = {
    "box": 0, "polygon": 1, "polyline": 2, "points": 3, "ellipse": 4,
    "cuboid": 5, "mask": 6, "skeleton": 7, "tag": 8,
}  # fmt: skip
_IMAGE_SHAPE_CLASS: dict[str, type] = {
    "box": Box, "polygon": Polygon, "polyline": Polyline, "points": Points, "ellipse": Ellipse,
    "cuboid": Cuboid, "mask": Mask, "skeleton": Skeleton, "tag": Tag,
}  # fmt: skip
_TRACK_SHAPE_TAGS = frozenset(
    ("box", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")
)
_IMAGE_SHAPE_TAGS = frozenset(_IMAGE_SHAPE_INDEX)

_BOX_COORDS = ("xtl", "ytl", "xbr", "ybr")
_ELLIPSE_COORDS = ("cx", "cy", "rx", "ry")
_MASK_INTS = ("left", "top", "width", "height")
_COMMON = ("label", "source", "occluded", "z_order", "group_id")
#: Attributes each image-level element kind understands; anything else is an extra attribute.
_IMAGE_KNOWN: dict[str, frozenset[str]] = {
    "box": frozenset((*_COMMON, *_BOX_COORDS, "rotation")),
    "polygon": frozenset((*_COMMON, "points")),
    "polyline": frozenset((*_COMMON, "points")),
    "points": frozenset((*_COMMON, "points")),
    "ellipse": frozenset((*_COMMON, *_ELLIPSE_COORDS, "rotation")),
    "cuboid": frozenset((*_COMMON, *CUBOID_COORDINATES)),
    "mask": frozenset((*_COMMON, "rle", *_MASK_INTS)),
    "skeleton": frozenset((*_COMMON, "points", "rotation")),
    "tag": frozenset(("label", "source", "group_id")),
}
_ELEMENT_KNOWN = frozenset(("label", "source", "occluded", "outside", "z_order", "group_id", "points"))
_IMAGE_ATTRS_KNOWN = frozenset(("id", "name", "width", "height", "task_id", "subset"))
_TRACK_ATTRS_KNOWN = frozenset(("id", "label", "source", "group_id", "task_id", "subset"))
_TRACKED_COMMON = ("frame", "outside", "occluded", "keyframe", "z_order", "rotation")
#: The ``values`` names of each tracked kind, in the order the model keeps them.
_TRACKED_VALUES: dict[str, tuple[str, ...]] = {
    "box": _BOX_COORDS,
    "ellipse": _ELLIPSE_COORDS,
    "cuboid": CUBOID_COORDINATES,
    "mask": ("rle", *_MASK_INTS),
    "polygon": ("points",),
    "polyline": ("points",),
    "points": ("points",),
    "skeleton": ("points",),
}
_TRACKED_KNOWN = {kind: frozenset((*_TRACKED_COMMON, *names)) for kind, names in _TRACKED_VALUES.items()}

_BOOLS = {"0": False, "1": True, "false": False, "true": True, "False": False, "True": True}

# Meta containers: child tag → how its content maps to the field of the same name.
_TEXT, _INT, _USER, _SEGMENTS, _LABELS, _LABEL_ATTRIBUTES, _SIZE, _TASKS = range(8)
_PROJECT_FIELDS = {
    "id": _TEXT, "name": _TEXT, "bugtracker": _TEXT, "created": _TEXT, "updated": _TEXT,
    "tasks": _TASKS, "subsets": _TEXT, "owner": _USER, "assignee": _USER, "labels": _LABELS,
}  # fmt: skip
_TASK_FIELDS = {
    "id": _TEXT, "name": _TEXT, "size": _INT, "mode": _TEXT, "overlap": _INT, "bugtracker": _TEXT,
    "created": _TEXT, "updated": _TEXT, "subset": _TEXT, "start_frame": _INT, "stop_frame": _INT,
    "frame_filter": _TEXT, "z_order": _TEXT, "dimension": _TEXT, "segments": _SEGMENTS,
    "owner": _USER, "assignee": _USER, "labels": _LABELS, "original_size": _SIZE,
}  # fmt: skip
_SEGMENT_FIELDS = {"id": _TEXT, "start": _INT, "stop": _INT, "url": _TEXT}
_USER_FIELDS = {"username": _TEXT, "email": _TEXT}
_LABEL_FIELDS = {
    "name": _TEXT, "color": _TEXT, "type": _TEXT, "attributes": _LABEL_ATTRIBUTES,
    "parent": _TEXT, "svg": _TEXT,
}  # fmt: skip
_LABEL_ATTRIBUTE_FIELDS = {
    "name": _TEXT, "mutable": _TEXT, "input_type": _TEXT, "default_value": _TEXT, "values": _TEXT,
}  # fmt: skip
_META_KNOWN = frozenset(("project", "task", "job", "dumped", "source"))
_ROOT_KNOWN = frozenset(("version", "meta", "image", "track"))

# What current CVAT writes, for objects built in code (xml_layout=None).
_PROJECT_LAYOUT = (
    "id", "name", "bugtracker", "created", "updated", "tasks", "subsets", "owner", "assignee", "labels",
)  # fmt: skip
_TASK_LAYOUT = (
    "id", "name", "size", "mode", "overlap", "bugtracker", "created", "updated", "subset",
    "start_frame", "stop_frame", "frame_filter", "z_order", "dimension", "segments", "owner",
    "assignee", "labels", "original_size",
)  # fmt: skip
_SEGMENT_LAYOUT = ("id", "start", "stop", "url")
_USER_LAYOUT = ("username", "email")
_LABEL_LAYOUT = ("name", "color", "type", "attributes", "parent", "svg")
_LABEL_ATTRIBUTE_LAYOUT = ("name", "mutable", "input_type", "default_value", "values")


def _is_unknown_token(token: str) -> bool:
    """A token of ``Annotations.xml_layout`` that stands for the next ``meta_extra`` element."""
    if token.startswith("meta/"):
        return token[5:] not in _META_KNOWN
    return token not in _ROOT_KNOWN


def _is_xml_space(text: str) -> bool:
    return not text.strip(" \t\n\r")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class _Node:
    """One element of ``<meta>`` (or an unknown root-level element) while it is being captured."""

    __slots__ = ("attributes", "children", "column", "element", "line", "tag", "text")

    def __init__(self, tag: str, attributes: list[str], line: int, column: int) -> None:
        self.tag = tag
        self.attributes = attributes
        self.text: list[str] = []
        self.children: list[_Node] = []
        self.line = line
        self.column = column
        self.element: XmlElement | None = None

    def joined_text(self) -> str:
        return "".join(self.text)

    def to_element(self) -> XmlElement:
        # Children were converted when they ended, so this never recurses.
        text: str | None = "".join(self.text)
        if not text or _is_xml_space(text):
            text = None
        pairs = self.attributes
        return XmlElement(
            self.tag,
            tuple(zip(pairs[0::2], pairs[1::2], strict=True)),
            text,
            tuple(child.element for child in self.children if child.element is not None),
        )


# Body contexts: what the innermost open element is.
_ROOT, _IMAGE, _SHAPE, _SKEL_POINT, _TRACK, _TSHAPE, _TSKEL_POINT, _ATTR = range(8)

_HANDLER_NAMES = (
    "StartElementHandler",
    "EndElementHandler",
    "CharacterDataHandler",
    "DefaultHandlerExpand",
    "StartNamespaceDeclHandler",
    "EndNamespaceDeclHandler",
    "CommentHandler",
    "ProcessingInstructionHandler",
)
_GUARD_NAMES = (
    "StartDoctypeDeclHandler",
    "EntityDeclHandler",
    "UnparsedEntityDeclHandler",
    "ExternalEntityRefHandler",
)


def _new_parser() -> tuple[DefusedXMLParser, Any]:
    """defusedxml's expat parser with its guards, stripped of ElementTree's tree-building handlers."""
    defused = DefusedXMLParser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    parser = defused.parser
    for name in _HANDLER_NAMES:
        setattr(parser, name, None)
    parser.buffer_text = True
    parser.ordered_attributes = True
    return defused, parser


class _ReaderBase:
    """Root element, ``<meta>`` capture and mapping, unknown-element capture and skipping."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.defused, self.parser = _new_parser()
        self.kind: ExportKind | None = None
        self.version: str | None = None
        self.project: Project | None = None
        self.tasks: list[Task] = []
        self.dumped: str | None = None
        self.source: str | None = None
        self.meta_extra: list[XmlElement] = []
        self.root_tokens: list[str] = []
        self.layouts: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.default_task_id: str | None = None
        self.single_task_id: str | None = None
        self.finished = False
        self.dropped: dict[str, int] = {}
        # capture state
        self._stack: list[_Node] = []
        self._capture_done: Callable[[_Node], None] | None = None
        self._skip_depth = 0
        self._skip_resume: Any = None

    # -- errors ------------------------------------------------------------------------------

    def error(self, message: str, line: int | None = None, column: int | None = None) -> AnnotationsError:
        if line is None:
            line = self.parser.CurrentLineNumber
            column = self.parser.CurrentColumnNumber + 1
        return AnnotationsError(message, path=self.path, line=line, column=column)

    def node_error(self, node: _Node, message: str) -> AnnotationsError:
        return self.error(message, node.line, node.column)

    # -- layouts -----------------------------------------------------------------------------

    def intern(self, names: tuple[str, ...]) -> tuple[str, ...]:
        # One shared tuple per distinct layout: a big export repeats a handful of layouts.
        return self.layouts.setdefault(names, names)

    # -- handler plumbing --------------------------------------------------------------------

    def body_handlers(self) -> None:
        raise NotImplementedError

    def install(
        self,
        start: Callable[[str, list[str]], None],
        end: Callable[[str], None],
        text: Callable[[str], None] | None,
    ) -> None:
        parser = self.parser
        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = text

    def close(self) -> None:
        # The handlers are bound methods of self and self holds the parser: break the cycle
        # here, because load() freezes the heap afterwards and frozen garbage is never collected.
        parser = self.parser
        if parser is not None:
            for name in (*_HANDLER_NAMES, *_GUARD_NAMES):
                setattr(parser, name, None)
        self.defused.parser = self.defused._parser = None
        self.defused.target = self.defused._target = None
        self.parser = None
        self._capture_done = None
        self._skip_resume = None

    # -- root --------------------------------------------------------------------------------

    def root_start(self, name: str, attrs: list[str]) -> None:
        if name != "annotations":
            raise self.error(f"not a CVAT XML export: the root element is <{name}>, expected <annotations>")
        self.body_handlers()

    def root_child(self, name: str, attrs: list[str]) -> None:
        """A child of ``<annotations>`` other than an image or a track."""
        if name == "meta":
            self.root_tokens.append("meta")
            self.capture(name, attrs, self.meta_done)
        elif name == "version":
            self.root_tokens.append("version")
            self.capture(name, attrs, self.version_done)
        else:
            self.root_tokens.append(name)
            self.capture(name, attrs, self.root_extra_done)

    def version_done(self, node: _Node) -> None:
        self.version = node.joined_text()

    def root_extra_done(self, node: _Node) -> None:
        assert node.element is not None
        self.meta_extra.append(node.element)

    # -- capture: build _Nodes for a subtree, then hand the top node to a callback ------------

    def capture(self, name: str, attrs: list[str], done: Callable[[_Node], None]) -> None:
        parser = self.parser
        self._stack = [_Node(name, attrs, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)]
        self._capture_done = done
        self.install(self.capture_start, self.capture_end, self.capture_text)

    def capture_start(self, name: str, attrs: list[str]) -> None:
        if len(self._stack) >= MAX_DEPTH:
            raise self.error(f"elements nested more than {MAX_DEPTH} levels deep")
        parser = self.parser
        node = _Node(name, attrs, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)
        self._stack[-1].children.append(node)
        self._stack.append(node)

    def capture_text(self, data: str) -> None:
        self._stack[-1].text.append(data)

    def capture_end(self, name: str) -> None:
        node = self._stack.pop()
        node.element = node.to_element()
        if not self._stack:
            done = self._capture_done
            self._capture_done = None
            self.body_handlers()
            assert done is not None
            done(node)

    # -- skipping elements the model has no place for -----------------------------------------

    def skip(self, name: str) -> None:
        """Skip the element that just started, with all it contains; then resume where it was."""
        self.dropped[name] = self.dropped.get(name, 0) + 1
        self._skip_depth = 1
        parser = self.parser
        self._skip_resume = (
            parser.StartElementHandler,
            parser.EndElementHandler,
            parser.CharacterDataHandler,
        )
        self.install(self.skip_start, self.skip_end, None)

    def skip_start(self, name: str, attrs: list[str]) -> None:
        self._skip_depth += 1
        if self._skip_depth >= MAX_DEPTH:
            raise self.error(f"elements nested more than {MAX_DEPTH} levels deep")

    def skip_end(self, name: str) -> None:
        self._skip_depth -= 1
        if not self._skip_depth:
            resume = self._skip_resume
            self._skip_resume = None
            self.install(*resume)

    # -- meta --------------------------------------------------------------------------------

    def meta_done(self, meta: _Node) -> None:
        for child in meta.children:
            tag = child.tag
            self.root_tokens.append("meta/" + tag)
            if tag == "project":
                self.kind = self.kind or "project"
                self.project = self.map_project(child)
            elif tag in ("task", "job"):
                self.kind = self.kind or tag  # type: ignore[assignment]
                self.tasks.append(self.map_task(child))
            elif tag == "dumped":
                self.dumped = child.joined_text()
            elif tag == "source":
                self.source = child.joined_text()
            else:
                assert child.element is not None
                self.meta_extra.append(child.element)
        self.meta_known()

    def meta_known(self) -> None:
        """Derive what the body needs from the meta: the task id images default to."""
        single = self.tasks[0].id if len(self.tasks) == 1 else None
        self.single_task_id = single
        self.default_task_id = single if self.kind != "project" else None

    def map_fields(
        self, node: _Node, fields: dict[str, int], *, keep_extra: bool
    ) -> tuple[dict[str, Any], list[XmlElement], tuple[str, ...]]:
        values: dict[str, Any] = {}
        extra: list[XmlElement] = []
        layout: list[str] = []
        for child in node.children:
            tag = child.tag
            how = fields.get(tag)
            if how is None:
                if keep_extra:
                    assert child.element is not None
                    extra.append(child.element)
                    layout.append(tag)
                else:
                    self.dropped[tag] = self.dropped.get(tag, 0) + 1
                continue
            layout.append(tag)
            if how == _TEXT:
                values[tag] = child.joined_text()
            elif how == _INT:
                values[tag] = self.map_int(child)
            elif how == _USER:
                values[tag] = self.map_user(child)
            elif how == _SEGMENTS:
                values[tag] = tuple(self.map_segment(c) for c in self.children_named(child, "segment"))
            elif how == _LABELS:
                values[tag] = tuple(self.map_label(c) for c in self.children_named(child, "label"))
            elif how == _LABEL_ATTRIBUTES:
                values[tag] = tuple(
                    self.map_label_attribute(c) for c in self.children_named(child, "attribute")
                )
            elif how == _SIZE:
                values[tag] = self.map_size(child)
            elif how == _TASKS:
                self.tasks.extend(self.map_task(c) for c in self.children_named(child, "task"))
        return values, extra, self.intern(tuple(layout))

    def children_named(self, node: _Node, tag: str) -> Iterator[_Node]:
        for child in node.children:
            if child.tag == tag:
                yield child
            else:
                self.dropped[child.tag] = self.dropped.get(child.tag, 0) + 1

    def map_int(self, node: _Node) -> int:
        text = node.joined_text()
        try:
            return int(text)
        except ValueError:
            raise self.node_error(node, f"<{node.tag}> must be an integer, not {text!r}") from None

    def required(self, node: _Node, values: dict[str, Any], name: str) -> None:
        if name not in values:
            raise self.node_error(node, f"<{node.tag}> has no <{name}>")

    def map_project(self, node: _Node) -> Project:
        values, extra, layout = self.map_fields(node, _PROJECT_FIELDS, keep_extra=True)
        return Project(**values, extra=tuple(extra), xml_layout=layout)

    def map_task(self, node: _Node) -> Task:
        values, extra, layout = self.map_fields(node, _TASK_FIELDS, keep_extra=True)
        return Task(**values, extra=tuple(extra), xml_layout=layout)

    def map_segment(self, node: _Node) -> Segment:
        values, _, layout = self.map_fields(node, _SEGMENT_FIELDS, keep_extra=False)
        for name in ("id", "start", "stop"):
            self.required(node, values, name)
        return Segment(**values, xml_layout=layout)

    def map_user(self, node: _Node) -> User:
        values, _, layout = self.map_fields(node, _USER_FIELDS, keep_extra=False)
        return User(**values, xml_layout=layout)

    def map_label(self, node: _Node) -> Label:
        values, extra, layout = self.map_fields(node, _LABEL_FIELDS, keep_extra=True)
        self.required(node, values, "name")
        return Label(**values, extra=tuple(extra), xml_layout=layout)

    def map_label_attribute(self, node: _Node) -> LabelAttribute:
        values, _, layout = self.map_fields(node, _LABEL_ATTRIBUTE_FIELDS, keep_extra=False)
        self.required(node, values, "name")
        return LabelAttribute(**values, xml_layout=layout)

    def map_size(self, node: _Node) -> Size:
        values, _, _ = self.map_fields(node, {"width": _INT, "height": _INT}, keep_extra=False)
        self.required(node, values, "width")
        self.required(node, values, "height")
        return Size(**values)

    # -- running -----------------------------------------------------------------------------

    def feed(self, chunks: Iterable[bytes]) -> None:
        parser = self.parser
        parser.StartElementHandler = self.root_start
        for chunk in chunks:
            parser.Parse(chunk, False)
        try:
            parser.Parse(b"", True)
        except expat.ExpatError as exc:
            if exc.code == expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS]:
                what = "the file is empty" if exc.lineno == 1 and exc.offset == 0 else "the XML ends early"
                raise AnnotationsError(
                    f"truncated XML: {what} (no complete <annotations> element)",
                    path=self.path,
                    line=exc.lineno,
                    column=exc.offset + 1,
                ) from None
            if exc.code in _TRUNCATION_CODES:
                raise AnnotationsError(
                    f"truncated XML: the file ends inside an element ({expat.ErrorString(exc.code)})",
                    path=self.path,
                    line=exc.lineno,
                    column=exc.offset + 1,
                ) from None
            raise
        if self.dropped:
            kinds = ", ".join(f"<{tag}> ×{count}" for tag, count in sorted(self.dropped.items()))
            _log.warning("%s: skipped elements cvat-watch does not model: %s", self.path or "XML", kinds)


_TRUNCATION_CODES = frozenset(
    expat.errors.codes[name]
    for name in (
        expat.errors.XML_ERROR_UNCLOSED_TOKEN,
        expat.errors.XML_ERROR_PARTIAL_CHAR,
        expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION,
    )
)


def _parse_points(text: str) -> tuple[tuple[float, float], ...]:
    """``"x,y;x,y"`` → ((x, y), (x, y)); ValueError for anything else (nan and inf included)."""
    if not text:
        return ()
    # A few C-level passes and no Python loop: this is the hottest path of most exports. The floats
    # are not shared through a text → float table, although CVAT's two decimals repeat a lot (it
    # saves a third of the memory of a 100 MB export): looking a text up in a table of a few hundred
    # thousand costs more than float() (cache misses), and the load got 40% slower.
    flat = list(map(float, text.replace(";", ",").split(",")))
    total = sum(flat)
    if total - total:  # a nan or an infinity among them (x - x is 0.0 for every finite x)
        for value in flat:
            if not math.isfinite(value):
                raise ValueError(text)
    values = iter(flat)
    return tuple(zip(values, values, strict=True))


class _Strings(dict[str, str]):
    """One shared str per distinct label, source, subset or task id (they repeat on every shape)."""

    __slots__ = ()

    def __missing__(self, text: str) -> str:
        self[text] = text
        return text


# How each XML attribute converts to its field (the field has the attribute's name).
_FLOAT_FIELDS = frozenset((*_BOX_COORDS, *_ELLIPSE_COORDS, *CUBOID_COORDINATES, "rotation"))
_INT_FIELDS = frozenset(("z_order", "group_id", "frame", *_MASK_INTS))
_BOOL_FIELDS = frozenset(("occluded", "outside", "keyframe"))
_COORD_FIELDS = frozenset(("points",))
#: Text fields whose values repeat all over an export: one shared str per distinct value.
_SHARED_TEXT_FIELDS = frozenset(("label", "source", "subset", "task_id"))


def _conversion(name: str, source: str) -> str:
    if name in _INT_FIELDS:
        return f"int({source})"
    if name in _BOOL_FIELDS:
        return f"B[{source}]"
    if name in _COORD_FIELDS:
        return f"P({source})"
    if name in _SHARED_TEXT_FIELDS:
        return f"S[{source}]"
    return source


# ---------------------------------------------------------------------------------------------
# Building model objects without their __init__
# ---------------------------------------------------------------------------------------------
#
# A 200 MB export holds millions of shapes, and the attrs-generated __init__ of a frozen class
# stores each field through object.__setattr__ and runs the converters: 1.3 µs for a Box, most of
# the cost of reading one. The reader instead creates each object as an instance of a private
# subclass that adds nothing but plain attribute stores (no slots, no methods but object's
# __setattr__/__delattr__), fills every slot, attaches the children when the end tag arrives and
# then assigns ``__class__`` back to the model class (allowed: the layouts are the same). What is
# left is exactly the model object, built in a fifth of the time. It is the object __init__ would
# make only if __init__ stores the values it is given unchanged: _direct_fields checks, for every
# class built this way, that no field has a validator or is left out of __init__, that each
# converter is one of the model's str / _tuple / _str_or_none (which return an exact str, tuple or
# None as it is), that there are no init hooks and that the slots are exactly the fields; and the
# reader hands over exactly those types (the str expat made, tuples, None). tests/test_xmlio.py
# compares every kind of object read this way with the same object built through __init__.

_IDENTITY_CONVERTERS: tuple[Any, ...] = (str, _tuple, _str_or_none)
_IMMUTABLE_DEFAULTS = (str, int, float, bool, tuple, type(None))


def _direct_fields(cls: type) -> tuple[tuple[str, Any], ...]:
    """(name, default) per field of ``cls``; TypeError if its __init__ does more than store them."""
    problems: list[str] = []
    fields: list[tuple[str, Any]] = []
    for field in attrs.fields(cls):
        if field.validator is not None:
            problems.append(f"{field.name} has a validator")
        if not field.init:
            problems.append(f"{field.name} is not set by __init__")
        if field.converter is not None and field.converter not in _IDENTITY_CONVERTERS:
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
        raise TypeError(f"cvat_watch.xmlio cannot build {cls.__name__} directly: {'; '.join(problems)}")
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
    cls: (_direct_fields(cls), _building_class(cls))
    for cls in (
        Box, Polygon, Polyline, Points, Ellipse, Cuboid, Mask, Skeleton, Tag,
        SkeletonPoint, TrackedShape, ImageAnnotation, Track,
    )
}  # fmt: skip

#: A compiled element reader: the attrs list expat hands over → the object, of its building class.
_Build = Callable[[list[str]], Any]
#: Makes a _Build bound to one load's shared strings, points parser and default task id.
_Factory = Callable[[_Strings, Callable[[str], Any], "str | None"], _Build]
#: What the reader keeps per element layout: its compiled reader and the model class it makes.
_Reader = tuple[_Build, type]

_factories: dict[tuple[type, str, tuple[str, ...]], _Factory | None] = {}


def _factory(
    cls: type, tag: str, names: tuple[str, ...], known: frozenset[str], required: Iterable[str]
) -> _Factory | None:
    """The generated reader of one element layout (its attribute names in file order), or None
    when a required attribute is missing.

    Generated once per distinct layout and kept across loads: a straight line of code that
    converts each attribute and stores each field is several times faster than a loop over field
    descriptions. Only this module's constants, field names and integer positions go into the
    source, never text from a file (names and values from the file are bound as globals).
    """
    key = (cls, tag, names)
    if key in _factories:
        return _factories[key]
    position = {name: 2 * index + 1 for index, name in enumerate(names) if name in known}
    if not set(required).issubset(position):
        return None
    fields, building = _DIRECT[cls]
    namespace: dict[str, Any] = {"M": building, "B": _BOOLS, "L": names, "K": tag}
    floats: list[str] = []

    def constant(value: Any) -> str:
        name = f"D{len(namespace)}"
        namespace[name] = value
        return name

    def converted(name: str) -> str:
        source = f"a[{position[name]}]"
        if name not in _FLOAT_FIELDS:
            return _conversion(name, source)
        floats.append(f"f{len(floats)}")
        # float() first, into a variable, so that one test below refuses nan and ±inf
        lines.append(f"        {floats[-1]} = float({source})")
        return floats[-1]

    lines = ["def factory(S, P, T):", "    def build(a):"]
    stores: list[str] = []
    for name, default in fields:
        if name in position:
            value = converted(name)
        elif name == "kind":
            value = "K"
        elif name == "xml_layout":
            value = "L"
        elif name == "task_id" and cls is ImageAnnotation:
            value = "T"  # an image without task_id belongs to a task export's own task
        elif name == "values":
            pairs = [
                f"({constant(item)}, {converted(item)})" for item in _TRACKED_VALUES[tag] if item in position
            ]
            value = f"({', '.join(pairs)},)" if pairs else "()"
        elif name == "extra_attributes":
            extras = [
                f"({constant(extra)}, a[{2 * index + 1}])"
                for index, extra in enumerate(names)
                if extra not in known
            ]
            value = f"({', '.join(extras)},)" if extras else "()"
        else:
            assert default is not attrs.NOTHING, f"{cls.__name__}.{name} is required"
            value = constant(default)
        stores.append(f"        o.{name} = {value}")
    if floats:
        # x - x is 0.0 for every finite x and nan for nan and ±inf
        lines.append(f"        if {' or '.join(f'{v} - {v}' for v in floats)}:")
        lines.append("            raise ValueError('not finite')")
    lines += ["        o = M()", *stores, "        return o", "    return build"]
    exec(compile("\n".join(lines) + "\n", f"<cvat_watch.xmlio {cls.__name__}>", "exec"), namespace)
    # The function's globals must not hold the function itself: that cycle would need the collector.
    factory: _Factory = namespace.pop("factory")
    if len(_factories) > 4096:  # a bound for pathological inputs; real exports have a few dozen
        _factories.clear()
    _factories[key] = factory
    return factory


#: Per kind: required attributes of an image-level element.
_IMAGE_REQUIRED: dict[str, tuple[str, ...]] = {
    "box": ("label", *_BOX_COORDS),
    "polygon": ("label", "points"),
    "polyline": ("label", "points"),
    "points": ("label", "points"),
    "ellipse": ("label", *_ELLIPSE_COORDS),
    "cuboid": ("label", *CUBOID_COORDINATES),
    "mask": ("label", "rle", *_MASK_INTS),
    "skeleton": ("label",),
    "tag": ("label",),
}
_TRACKED_REQUIRED: dict[str, tuple[str, ...]] = {
    kind: ("frame", *(name for name in names if kind != "skeleton"))
    for kind, names in _TRACKED_VALUES.items()
}
_NODE_REQUIRED = ("label", "points")
_IMAGE_ATTRS_REQUIRED = ("id", "name")
_TRACK_ATTRS_REQUIRED = ("id", "label")
#: The ImageAnnotation field of each image-level element name.
_IMAGE_FIELD_OF = dict(zip(_IMAGE_SHAPE_INDEX, _IMAGE_SHAPE_FIELDS, strict=True))


class _FullReader(_ReaderBase):
    """Maps images and tracks to model objects as they stream by.

    Switching handlers costs more than a few comparisons, so one start handler serves everything
    inside an ``<image>``, one everything inside a ``<track>``, and one end handler both; the open
    shape, skeleton node and ``<attribute>`` say where an event belongs. A shape (image, track) is
    built from its start tag; its ``<attribute>`` values and skeleton nodes (shapes, element tracks)
    are attached when its end tag arrives, and only then does it become the model object (see
    _building_class).
    """

    def __init__(self, path: Path | None) -> None:
        super().__init__(path)
        self.images: list[ImageAnnotation] = []
        self.tracks: list[Track] = []
        self.seen_image = self.seen_track = False
        self.strings = _Strings()
        # (element name, attribute names...) → (compiled reader, model class), per place
        self.image_readers: dict[tuple[str, ...], _Reader] = {}
        self.shape_readers: dict[tuple[str, ...], _Reader] = {}
        self.node_readers: dict[tuple[str, ...], _Reader] = {}
        self.track_readers: dict[tuple[str, ...], _Reader] = {}
        self.tracked_readers: dict[tuple[str, ...], _Reader] = {}
        # Attribute values repeat endlessly ("color"="red"): one shared Attribute per distinct pair,
        # and one shared tuple per distinct sequence, found by (id of the tuple so far, name, value).
        # Those ids are of tuples this dict keeps alive, so none is reused during the load.
        self.attribute_values: dict[tuple[str, str], Attribute] = {}
        self.attribute_tuples: dict[tuple[int, str, str], tuple[Attribute, ...]] = {}
        self.text: list[str] = []
        self.text_append = self.text.append
        # what is open
        self.image: Any = None
        self.image_shapes: defaultdict[str, list[Any]] = defaultdict(list)
        self.track_stack: list[tuple[Any, list[Any], list[Any]]] = []
        self.track_shapes: list[Any] = []  # of the innermost open track
        self.shape: Any = None
        self.shape_class: type = object  # what the open shape becomes at its end tag
        self.elements: list[Any] | None = None  # the nodes of the open skeleton, else None
        self.node: Any = None
        self.in_attribute = False
        self.attribute_name = ""
        self.attributes: tuple[Attribute, ...] = ()  # of the open node, else of the open shape
        self.shape_attributes: tuple[Attribute, ...] = ()  # of the shape while a node is open
        self.h_body: Any = (self.body_start, self.body_end)
        self.h_image: Any = (self.image_start, self.inner_end)
        self.h_track: Any = (self.track_start, self.inner_end)
        self.close_container: Any = None  # close_image or close_track

    def close(self) -> None:
        super().close()
        # bound methods of self: drop them so that nothing is left in a reference cycle
        self.h_body = self.h_image = self.h_track = self.close_container = None

    def body_handlers(self) -> None:
        self.install(self.body_start, self.body_end, None)

    def result(self) -> Annotations:
        if not self.finished:
            raise self.error("the XML ended before </annotations>")
        return Annotations(
            version=self.version if self.version is not None else "1.1",
            project=self.project,
            tasks=tuple(self.tasks),
            images=tuple(self.images),
            tracks=tuple(self.tracks),
            kind=self.kind or "task",
            dumped=self.dumped,
            source=self.source,
            meta_extra=tuple(self.meta_extra),
            path=self.path,
            xml_layout=tuple(self.root_tokens),
        )

    # -- compiled element readers and their errors ---------------------------------------------

    def reader(
        self,
        readers: dict[tuple[str, ...], _Reader],
        key: tuple[str, ...],
        cls: type,
        attrs: list[str],
        known: frozenset[str],
        required: tuple[str, ...],
    ) -> _Reader:
        """The compiled reader for ``key`` (element name, attribute names), made on first sight."""
        tag = key[0]
        factory = _factory(cls, tag, key[1:], known, required)
        if factory is None:
            raise self.invalid(tag, attrs, known, required)
        build = factory(self.strings, _parse_points, self.default_task_id)
        entry = readers[key] = (build, cls)
        return entry

    def invalid(
        self, element: str, attrs: list[str], known: frozenset[str], required: Iterable[str]
    ) -> AnnotationsError:
        """The error for an element its compiled reader refused: the first bad attribute, named."""
        it = iter(attrs)
        values = dict(zip(it, it, strict=True))
        for name in required:
            if name not in values:
                return self.missing(element, name)
        for name, text in values.items():
            if name not in known:
                continue  # an extra attribute: kept as text, never converted
            if name in _FLOAT_FIELDS:
                try:
                    number = float(text)
                except ValueError:
                    return self.bad_value(element, name, text, "a number")
                if not math.isfinite(number):
                    return self.bad_value(element, name, text, "a finite number")
            elif name in _INT_FIELDS:
                try:
                    int(text)
                except ValueError:
                    return self.bad_value(element, name, text, "an integer")
            elif name in _BOOL_FIELDS:
                if text not in _BOOLS:
                    return self.bad_value(element, name, text, "0 or 1")
            elif name in _COORD_FIELDS:
                try:
                    _parse_points(text)
                except ValueError:
                    return self.bad_value(element, name, text, "a list of x,y number pairs")
        return self.error(f"<{element}> cannot be read")  # nothing found: cannot happen

    def missing(self, element: str, attribute: str) -> AnnotationsError:
        return self.error(f"<{element}> has no {attribute!r} attribute")

    def bad_value(self, element: str, attribute: str, value: str, what: str) -> AnnotationsError:
        return self.error(f"<{element}> attribute {attribute}={value!r} is not {what}")

    # -- children of <annotations> -------------------------------------------------------------

    def body_start(self, name: str, attrs: list[str]) -> None:
        if name == "image":
            self.open_image(attrs)
        elif name == "track":
            self.open_track(attrs)
        else:
            self.root_child(name, attrs)

    def body_end(self, name: str) -> None:  # </annotations>
        self.finished = True

    # -- images --------------------------------------------------------------------------------

    def open_image(self, attrs: list[str]) -> None:
        if not self.seen_image:
            self.seen_image = True
            self.root_tokens.append("image")
        key = ("image", *attrs[0::2])
        entry = self.image_readers.get(key)
        if entry is None:
            entry = self.reader(
                self.image_readers, key, ImageAnnotation, attrs, _IMAGE_ATTRS_KNOWN, _IMAGE_ATTRS_REQUIRED
            )
        try:
            self.image = entry[0](attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid("image", attrs, _IMAGE_ATTRS_KNOWN, _IMAGE_ATTRS_REQUIRED) from None
        self.close_container = self.close_image
        parser = self.parser
        parser.StartElementHandler, parser.EndElementHandler = self.h_image

    def close_image(self) -> None:
        image = self.image
        shapes = self.image_shapes
        for tag, kind in shapes.items():
            setattr(image, _IMAGE_FIELD_OF[tag], tuple(kind))
        shapes.clear()
        image.__class__ = ImageAnnotation
        self.images.append(image)
        self.image = self.close_container = None
        parser = self.parser
        parser.StartElementHandler, parser.EndElementHandler = self.h_body

    def image_start(self, name: str, attrs: list[str]) -> None:
        if self.shape is not None:
            # <attribute name="…"> is the commonest element of many exports: its usual form inline
            if name == "attribute" and len(attrs) == 2 and attrs[0] == "name" and not self.in_attribute:
                self.attribute_name = attrs[1]
                self.in_attribute = True
                self.parser.CharacterDataHandler = self.text_append
            else:
                self.shape_child(name, attrs)
            return
        key = (name, *attrs[0::2])
        entry = self.shape_readers.get(key)
        if entry is None:
            if name not in _IMAGE_SHAPE_TAGS:
                self.skip(name)
                return
            entry = self.reader(
                self.shape_readers, key, _IMAGE_SHAPE_CLASS[name], attrs, _IMAGE_KNOWN[name],
                _IMAGE_REQUIRED[name],
            )  # fmt: skip
        build, self.shape_class = entry
        try:
            shape = build(attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid(name, attrs, _IMAGE_KNOWN[name], _IMAGE_REQUIRED[name]) from None
        self.shape = shape
        self.attributes = ()
        self.image_shapes[name].append(shape)
        if name == "skeleton":
            self.elements = []

    # -- inside a shape: <attribute name="…">value</attribute>, skeleton nodes --------------------

    def inner_end(self, name: str) -> None:
        """The end of anything inside an image or a track, and of the image or track itself."""
        if self.in_attribute:
            self.in_attribute = False
            self.parser.CharacterDataHandler = None
            text = self.text
            value = "".join(text)
            text.clear()
            before = self.attributes
            key = (id(before), self.attribute_name, value)
            after = self.attribute_tuples.get(key)
            if after is None:
                after = self.attribute_tuples[key] = (*before, self.attribute(self.attribute_name, value))
            self.attributes = after
        elif self.node is not None:
            node = self.node
            if self.attributes:
                node.attributes = self.attributes
            node.__class__ = SkeletonPoint
            self.node = None
            self.attributes = self.shape_attributes
        elif self.shape is not None:
            shape = self.shape
            if self.attributes:
                shape.attributes = self.attributes
            if self.elements is not None:
                if self.elements:
                    shape.elements = tuple(self.elements)
                self.elements = None
            shape.__class__ = self.shape_class
            self.shape = None
        else:
            self.close_container()

    def attribute(self, name: str, value: str) -> Attribute:
        pair = (name, value)
        attribute = self.attribute_values.get(pair)
        if attribute is None:
            attribute = self.attribute_values[pair] = Attribute(name, value)
        return attribute

    def shape_child(self, name: str, attrs: list[str]) -> None:
        """A child of an open shape other than the usual ``<attribute name="…">``."""
        if name == "attribute" and not self.in_attribute:
            for index in range(0, len(attrs), 2):
                if attrs[index] == "name":
                    self.attribute_name = attrs[index + 1]
                    break
            else:
                raise self.missing("attribute", "name")
            self.in_attribute = True
            self.parser.CharacterDataHandler = self.text_append
        elif name == "points" and self.elements is not None and self.node is None and not self.in_attribute:
            self.open_node(attrs)
        else:
            self.skip(name)

    def open_node(self, attrs: list[str]) -> None:
        key = ("points", *attrs[0::2])
        entry = self.node_readers.get(key)
        if entry is None:
            entry = self.reader(self.node_readers, key, SkeletonPoint, attrs, _ELEMENT_KNOWN, _NODE_REQUIRED)
        try:
            node = entry[0](attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid("points", attrs, _ELEMENT_KNOWN, _NODE_REQUIRED) from None
        assert self.elements is not None
        self.elements.append(node)
        self.node = node
        self.shape_attributes = self.attributes
        self.attributes = ()

    # -- tracks ------------------------------------------------------------------------------

    def open_track(self, attrs: list[str]) -> None:
        if not self.seen_track:
            self.seen_track = True
            self.root_tokens.append("track")
        key = ("track", *attrs[0::2])
        entry = self.track_readers.get(key)
        if entry is None:
            entry = self.reader(
                self.track_readers, key, Track, attrs, _TRACK_ATTRS_KNOWN, _TRACK_ATTRS_REQUIRED
            )
        try:
            track = entry[0](attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid("track", attrs, _TRACK_ATTRS_KNOWN, _TRACK_ATTRS_REQUIRED) from None
        self.track_shapes = []
        self.track_stack.append((track, self.track_shapes, []))
        self.close_container = self.close_track
        parser = self.parser
        parser.StartElementHandler, parser.EndElementHandler = self.h_track

    def close_track(self) -> None:
        track, shapes, tracks = self.track_stack.pop()
        if shapes:
            track.shapes = tuple(shapes)
        if tracks:
            track.tracks = tuple(tracks)
        track.__class__ = Track
        if self.track_stack:
            outer = self.track_stack[-1]
            outer[2].append(track)
            self.track_shapes = outer[1]
        else:
            self.tracks.append(track)
            self.close_container = None
            parser = self.parser
            parser.StartElementHandler, parser.EndElementHandler = self.h_body

    def track_start(self, name: str, attrs: list[str]) -> None:
        if self.shape is not None:
            if name == "attribute" and len(attrs) == 2 and attrs[0] == "name" and not self.in_attribute:
                self.attribute_name = attrs[1]
                self.in_attribute = True
                self.parser.CharacterDataHandler = self.text_append
            else:
                self.shape_child(name, attrs)
            return
        key = (name, *attrs[0::2])
        entry = self.tracked_readers.get(key)
        if entry is None:
            if name not in _TRACK_SHAPE_TAGS:
                if name == "track":
                    self.open_track(attrs)
                else:
                    self.skip(name)
                return
            entry = self.reader(
                self.tracked_readers, key, TrackedShape, attrs, _TRACKED_KNOWN[name], _TRACKED_REQUIRED[name]
            )
        build, self.shape_class = entry
        try:
            shape = build(attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid(name, attrs, _TRACKED_KNOWN[name], _TRACKED_REQUIRED[name]) from None
        self.shape = shape
        self.attributes = ()
        self.track_shapes.append(shape)
        if name == "skeleton":
            self.elements = []


class _SummaryReader(_ReaderBase):
    """Counts images and shapes per task without building them."""

    def __init__(self, path: Path | None) -> None:
        super().__init__(path)
        self.depth = 1  # inside <annotations>
        self.counting: frozenset[str] = frozenset()
        self.key: str | None = None
        self.count = 0
        self.image_counts: dict[str | None, int] = {}
        self.shape_counts: dict[str | None, int] = {}

    def body_handlers(self) -> None:
        self.install(self.start, self.end, None)

    def start(self, name: str, attrs: list[str]) -> None:
        depth = self.depth = self.depth + 1
        if depth > 3 and depth >= MAX_DEPTH:
            raise self.error(f"elements nested more than {MAX_DEPTH} levels deep")
        if depth == 3:
            if name in self.counting:
                self.count += 1
        elif depth == 2:
            if name == "image" or name == "track":
                task_id = None
                for index in range(0, len(attrs), 2):
                    if attrs[index] == "task_id":
                        task_id = attrs[index + 1]
                        break
                if name == "image":
                    if task_id is None:
                        task_id = self.default_task_id
                    key = task_id if task_id is not None else self.single_task_id
                    self.image_counts[key] = self.image_counts.get(key, 0) + 1
                    self.counting = _IMAGE_SHAPE_TAGS
                else:
                    key = task_id if task_id is not None else self.single_task_id
                    self.counting = _TRACK_SHAPE_TAGS
                self.key = key
                self.count = 0
            else:
                self.depth = 1  # the capture consumes this element's end
                self.root_child(name, attrs)

    def end(self, name: str) -> None:
        depth = self.depth
        self.depth = depth - 1
        if depth == 2:
            key = self.key
            self.shape_counts[key] = self.shape_counts.get(key, 0) + self.count
            self.counting = frozenset()
        elif depth == 1:
            self.finished = True

    def result(self) -> ExportSummary:
        if not self.finished:
            raise self.error("the XML ended before </annotations>")
        return ExportSummary(
            kind=self.kind or "task",
            project=self.project,
            tasks=tuple(self.tasks),
            image_counts=self.image_counts,
            shape_counts={key: count for key, count in self.shape_counts.items()},
        )


@contextlib.contextmanager
def _gc_paused(*, freeze: bool) -> Iterator[None]:
    """No collections while the model is built; with ``freeze``, keep it out of later ones.

    Freezing pays off for a full model (hundreds of thousands of objects a later collection
    would walk again and again) but pins every object alive in the process at that moment, any
    cyclic garbage included. The summary is small and read over and over by a daemon that runs
    for months, so it is never frozen.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        if was_enabled:
            if succeeded and freeze:
                gc.freeze()
            gc.enable()


def _file_chunks(file: Any, path: Path) -> Iterator[bytes]:
    while True:
        try:
            chunk = file.read(CHUNK_SIZE)
        except OSError as exc:
            raise _os_error(exc, path, "cannot read") from exc
        if not chunk:
            return
        yield chunk


def _data_chunks(data: bytes | bytearray | memoryview) -> Iterator[bytes]:
    view = memoryview(data)
    for offset in range(0, len(view), CHUNK_SIZE):
        yield bytes(view[offset : offset + CHUNK_SIZE])


def _os_error(exc: OSError, path: PathLike | None, doing: str) -> AnnotationsError:
    if isinstance(exc, FileNotFoundError):
        reason = "no such file"
    elif isinstance(exc, IsADirectoryError):
        reason = "is a directory"
    elif isinstance(exc, PermissionError):
        reason = "permission denied"
    else:
        reason = exc.strerror or str(exc)
    return AnnotationsError(f"{doing}: {reason}", path=path)


def _refusal(exc: DefusedXmlException) -> str:
    if isinstance(exc, DTDForbidden):
        what = f"a DTD (<!DOCTYPE {exc.name} …>)"
    elif isinstance(exc, EntitiesForbidden):
        what = f"the entity declaration {exc.name!r}"
    elif isinstance(exc, ExternalReferenceForbidden):
        what = f"the external entity reference {exc.sysid!r}"
    else:
        what = type(exc).__name__
    return f"refused {what}: DTDs, entity declarations and external entities are never read"


_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _utf8_problem(head: bytes, chunks: Iterable[bytes]) -> str | None:
    """Where the bytes stop being UTF-8, if the document is meant to be UTF-8 and is not."""
    if head.startswith((b"\xfe\xff", b"\xff\xfe")):
        return None
    declared = _DECLARED_ENCODING.match(head)
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        return None
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        for chunk in chunks:
            decoder.decode(chunk)
            offset += len(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        position = offset + exc.start
        return f"invalid UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {position}"
    return None


def _run(
    reader: _ReaderBase, chunks: Iterable[bytes], rescan: Callable[[], tuple[bytes, Iterable[bytes]]]
) -> None:
    """Feed the reader and turn every failure into an AnnotationsError with a position."""
    path = reader.path
    try:
        reader.feed(chunks)
    except AnnotationsError:
        raise
    except DefusedXmlException as exc:
        raise reader.error(_refusal(exc)) from None
    except expat.ExpatError as exc:
        message = expat.ErrorString(exc.code)
        if exc.code == expat.errors.codes[expat.errors.XML_ERROR_INVALID_TOKEN]:
            head, again = rescan()
            problem = _utf8_problem(head, again)
            if problem:
                raise AnnotationsError(problem, path=path, line=exc.lineno, column=exc.offset + 1) from None
        raise AnnotationsError(
            f"malformed XML: {message}", path=path, line=exc.lineno, column=exc.offset + 1
        ) from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # Whatever the bytes, the caller gets an AnnotationsError.
        line = column = None
        if reader.parser is not None:
            line, column = reader.parser.CurrentLineNumber, reader.parser.CurrentColumnNumber + 1
        raise AnnotationsError(
            f"cannot read the export: {type(exc).__name__}: {exc}", path=path, line=line, column=column
        ) from exc


def _read_file(path: PathLike, reader_class: type[_ReaderBase]) -> Any:
    file_path = Path(path)
    try:
        file = open(file_path, "rb")  # noqa: SIM115 - closed below, errors mapped first
    except OSError as exc:
        raise _os_error(exc, file_path, "cannot open") from exc

    def rescan() -> tuple[bytes, Iterable[bytes]]:
        try:
            with open(file_path, "rb") as again:
                data = again.read()
        except OSError:
            return b"", ()
        return data[:200], (data,)

    with file, _gc_paused(freeze=reader_class is _FullReader):
        reader = reader_class(file_path)
        try:
            _run(reader, _file_chunks(file, file_path), rescan)
            return reader.result()  # type: ignore[attr-defined]
        finally:
            reader.close()


def load(path: PathLike) -> Annotations:
    """Read a CVAT XML export into the full model; ``Annotations.path`` is set to ``path``."""
    result: Annotations = _read_file(path, _FullReader)
    return result


def load_summary(path: PathLike) -> ExportSummary:
    """The export's meta and per-task image and shape counts, without building shape objects."""
    result: ExportSummary = _read_file(path, _SummaryReader)
    return result


def loads_summary(data: bytes, *, path: PathLike | None = None) -> ExportSummary:
    """:func:`load_summary` of bytes already read (the daemon hashes them first)."""
    file_path = Path(path) if path is not None else None
    with _gc_paused(freeze=False):
        reader = _SummaryReader(file_path)
        try:
            _run(reader, _data_chunks(data), lambda: (bytes(data[:200]), (bytes(data),)))
            return reader.result()
        finally:
            reader.close()


def loads(data: bytes, *, path: PathLike | None = None) -> Annotations:
    """Read a CVAT XML export from bytes; ``path`` only names it in errors and ``Annotations.path``."""
    file_path = Path(path) if path is not None else None
    with _gc_paused(freeze=True):
        reader = _FullReader(file_path)
        try:
            _run(reader, _data_chunks(data), lambda: (bytes(data[:200]), (bytes(data),)))
            return reader.result()
        finally:
            reader.close()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

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
    "box": _specs(*_COMMON, floats=_BOX_COORDS, extra={"rotation": _ROTATION}),
    "polygon": _specs(*_COMMON, extra={"points": _POINTS}),
    "polyline": _specs(*_COMMON, extra={"points": _POINTS}),
    "points": _specs(*_COMMON, extra={"points": _POINTS}),
    "ellipse": _specs(*_COMMON, floats=_ELLIPSE_COORDS, extra={"rotation": _ROTATION}),
    "cuboid": _specs(*_COMMON, floats=CUBOID_COORDINATES),
    "mask": _specs(*_COMMON, ints=_MASK_INTS, extra={"rle": _field("rle", str, _NO_DEFAULT)}),
    "skeleton": _specs(*_COMMON, extra={"rotation": _ROTATION, "points": _field("points", _fmt_points, ())}),
    "tag": _specs("label", "source", "group_id"),
}
#: Current CVAT's attribute order; names in _CONDITIONAL are written only when not the default.
_IMAGE_DEFAULT_LAYOUTS: dict[str, tuple[str, ...]] = {
    "box": ("label", "source", "occluded", *_BOX_COORDS, "rotation", "z_order", "group_id"),
    "polygon": ("label", "source", "occluded", "points", "z_order", "group_id"),
    "polyline": ("label", "source", "occluded", "points", "z_order", "group_id"),
    "points": ("label", "source", "occluded", "points", "z_order", "group_id"),
    "ellipse": ("label", "source", "occluded", *_ELLIPSE_COORDS, "rotation", "z_order", "group_id"),
    "cuboid": ("label", "source", "occluded", *CUBOID_COORDINATES, "z_order", "group_id"),
    "mask": ("label", "source", "occluded", "rle", *_MASK_INTS, "z_order", "group_id"),
    "skeleton": ("label", "source", "z_order", "group_id"),
    "tag": ("label", "source", "group_id"),
}
_CONDITIONAL = frozenset(("group_id", "rotation"))
_KIND_OF_CLASS: dict[type, str] = {cls: kind for kind, cls in _IMAGE_SHAPE_CLASS.items()}

_ELEMENT_SPECS = _specs(
    *_COMMON,
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
    for name in _TRACKED_VALUES[kind]:
        if name == "points":
            specs[name] = _value(name, _fmt_points)
        elif name == "rle":
            specs[name] = _value(name, str)
        elif name in _MASK_INTS:
            specs[name] = _value(name, _fmt_int)
        else:
            specs[name] = _value(name, _fmt_float)
    return specs


_TRACKED_SPECS = {kind: _tracked_specs(kind) for kind in _TRACKED_VALUES}
_TRACKED_DEFAULT_LAYOUTS: dict[str, tuple[str, ...]] = {
    kind: (
        ("frame", "keyframe", "points", "z_order")
        if kind == "skeleton"
        else ("frame", "keyframe", "outside", "occluded", *names, "rotation", "z_order")
    )
    for kind, names in _TRACKED_VALUES.items()
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


class _Writer:
    def __init__(self, annotations: Annotations) -> None:
        self.annotations = annotations
        self.out: list[str] = []
        tasks = annotations.tasks
        single = tasks[0].id if len(tasks) == 1 else None
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
        fields: dict[str, int],
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

    def write_field(self, level: int, name: str, how: int, obj: Any, listed: bool) -> bool:
        """Write one known child; ``listed`` (the layout names it) writes empty containers too."""
        if how == _TASKS:
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
        if how == _TEXT:
            self.leaf(level, name, value)
        elif how == _INT:
            self.leaf(level, name, str(int(value)))
        elif how == _USER:
            self.container(level, name, value, _USER_FIELDS, _USER_LAYOUT)
        elif how == _SIZE:
            self.out.append(f"{_indent(level)}<{name}>")
            self.leaf(level + 1, "width", str(int(value.width)))
            self.leaf(level + 1, "height", str(int(value.height)))
            self.out.append(f"{_indent(level)}</{name}>")
        else:
            if not value and not listed and not (how == _LABEL_ATTRIBUTES and obj.xml_layout is None):
                return False
            self.out.append(f"{_indent(level)}<{name}>")
            for item in value:
                if how == _SEGMENTS:
                    self.container(level + 1, "segment", item, _SEGMENT_FIELDS, _SEGMENT_LAYOUT)
                elif how == _LABELS:
                    self.container(level + 1, "label", item, _LABEL_FIELDS, _LABEL_LAYOUT)
                else:
                    self.container(
                        level + 1, "attribute", item, _LABEL_ATTRIBUTE_FIELDS, _LABEL_ATTRIBUTE_LAYOUT
                    )
            self.out.append(f"{_indent(level)}</{name}>")
        return True

    def task(self, level: int, tag: str, task: Task) -> None:
        self.container(level, tag, task, _TASK_FIELDS, _TASK_LAYOUT)

    def project(self, level: int, project: Project) -> None:
        self.container(level, "project", project, _PROJECT_FIELDS, _PROJECT_LAYOUT)

    # -- images ------------------------------------------------------------------------------

    def image(self, image: ImageAnnotation) -> None:
        out = self.out
        default_task_id = self.default_task_id
        layout = image.xml_layout
        # The reader fills in a task/job export's own task id where the image has none; leave it
        # implied unless the file wrote it.
        implied_task_id = layout is None or "task_id" not in layout

        def implied(name: str, value: Any) -> bool:
            return implied_task_id and name == "task_id" and value == default_task_id

        attributes = _attributes(image, _IMAGE_ATTR_SPECS, layout, _IMAGE_ATTR_LAYOUT, implied)
        out.append(f"\n  <image{attributes}>")
        # CVAT sorts the shapes of a frame stably by z_order and writes tags last; a merge keeps
        # each kind's own order even where it is not sorted, so reading back gives the same tuples.
        kinds = [
            shapes
            for shapes in (image.boxes, image.polygons, image.polylines, image.points, image.ellipses,
                           image.cuboids, image.masks, image.skeletons)
            if shapes
        ]  # fmt: skip
        ordered: Iterable[Any] = kinds[0] if len(kinds) == 1 else heapq.merge(*kinds, key=_z_order)
        for shape in ordered:
            self.image_shape(shape)
        for tag in image.tags:
            self.image_shape(tag)
        out.append("\n  </image>")

    def image_shape(self, shape: Any) -> None:
        kind = _KIND_OF_CLASS[type(shape)]
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
        attributes = _attributes(track, _TRACK_ATTR_SPECS, track.xml_layout, _TRACK_ATTR_LAYOUT)
        indent = _indent(level)
        out = self.out
        out.append(f"{indent}<track{attributes}>")
        inner = _indent(level + 1)
        for shape in track.shapes:
            kind = shape.kind
            specs = _TRACKED_SPECS.get(kind)
            if specs is None:
                raise AnnotationsError(
                    f"cannot write a tracked shape of unknown kind {kind!r}", path=self.annotations.path
                )
            attributes = _attributes(shape, specs, shape.xml_layout, _TRACKED_DEFAULT_LAYOUTS[kind])
            out.append(f"{inner}<{kind}{attributes}>")
            for element in shape.elements:
                self.skeleton_element(level + 2, element, _TRACK_ELEMENT_LAYOUT)
            self.attribute_values(level + 2, shape.attributes)
            out.append(f"{inner}</{kind}>")
        for element_track in track.tracks:
            self.track(level + 1, element_track)
        out.append(f"{indent}</track>")

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
        placed = sum(1 for token in tokens if _is_unknown_token(token))
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
        text = _Writer(annotations).document()
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
        raise _os_error(exc, path, "cannot write") from exc
    directory = target.parent
    temporary = directory / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        # O_EXCL: never write through someone else's file; 0o666 lets the umask decide for new files.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise _os_error(exc, path, "cannot write") from exc
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
            raise _os_error(exc, path, "cannot write") from exc
        raise
    # The rename is only durable once the directory entry is on disk.
    with contextlib.suppress(OSError):
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
