"""The full reader: images and tracks mapped to model objects as they stream by.

Each shape is built by the generated element reader of its attribute layout (see
:mod:`cvat_watch.cvatxml._fastbuild`) from its start tag; its ``<attribute>`` values and skeleton
nodes are attached when its end tag arrives, and only then does it become the model object.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cvat_watch.cvatxml._base import ReaderBase
from cvat_watch.cvatxml._fastbuild import Build, SharedStrings, factory, parse_points
from cvat_watch.cvatxml._vocab import (
    BOOL_FIELDS,
    BOOLS,
    CHILD_CODES,
    CHILDREN,
    COORD_FIELDS,
    FLOAT_FIELDS,
    IMAGE_ATTRS_KNOWN,
    IMAGE_ATTRS_REQUIRED,
    IMAGE_KNOWN,
    IMAGE_REQUIRED,
    IMAGE_SHAPE_KINDS,
    INT_FIELDS,
    NODE_KNOWN,
    NODE_REQUIRED,
    SHAPE_CLASS,
    SHAPE_FIELD,
    TRACK_ATTRS_KNOWN,
    TRACK_ATTRS_REQUIRED,
    TRACK_SHAPE_KINDS,
    TRACKED_KNOWN,
    TRACKED_REQUIRED,
)
from cvat_watch.errors import AnnotationsError
from cvat_watch.model import (
    Annotations,
    Attribute,
    ImageAnnotation,
    SkeletonPoint,
    Track,
    TrackedShape,
)

#: What the reader keeps per element layout: its compiled reader, the model class it makes and the
#: letter that stands for its kind in the ``children=`` token of its image.
_Reader = tuple[Build, type, str]


class FullReader(ReaderBase):
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
        self.strings = SharedStrings()
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
        # Document order of the open image's children: one letter per child (CHILD_CODES).
        self.order: list[str] = []
        self.order_append = self.order.append
        # per open track: the track, its shapes, its element tracks with the count of shapes before each
        self.track_stack: list[tuple[Any, list[Any], list[tuple[int, Any]]]] = []
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
        make = factory(cls, tag, key[1:], known, required)
        if make is None:
            raise self.invalid(tag, attrs, known, required)
        build = make(self.strings, parse_points, self.default_task_id)
        entry = readers[key] = (build, cls, CHILD_CODES.get(tag, ""))
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
            if name in FLOAT_FIELDS:
                try:
                    number = float(text)
                except ValueError:
                    return self.bad_value(element, name, text, "a number")
                if not math.isfinite(number):
                    return self.bad_value(element, name, text, "a finite number")
            elif name in INT_FIELDS:
                try:
                    int(text)
                except ValueError:
                    return self.bad_value(element, name, text, "an integer")
            elif name in BOOL_FIELDS:
                if text not in BOOLS:
                    return self.bad_value(element, name, text, "0 or 1")
            elif name in COORD_FIELDS:
                try:
                    parse_points(text)
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
                self.image_readers, key, ImageAnnotation, attrs, IMAGE_ATTRS_KNOWN, IMAGE_ATTRS_REQUIRED
            )
        try:
            self.image = entry[0](attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid("image", attrs, IMAGE_ATTRS_KNOWN, IMAGE_ATTRS_REQUIRED) from None
        self.close_container = self.close_image
        parser = self.parser
        parser.StartElementHandler, parser.EndElementHandler = self.h_image

    def close_image(self) -> None:
        image = self.image
        shapes = self.image_shapes
        order = self.order
        if len(shapes) > 1:  # more than one kind: keep their order for the writer
            image.xml_layout = (*image.xml_layout, CHILDREN + "".join(order))
        order.clear()
        for tag, kind in shapes.items():
            setattr(image, SHAPE_FIELD[tag], tuple(kind))
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
            if name not in IMAGE_SHAPE_KINDS:
                self.skip(name)
                return
            entry = self.reader(
                self.shape_readers, key, SHAPE_CLASS[name], attrs, IMAGE_KNOWN[name],
                IMAGE_REQUIRED[name],
            )  # fmt: skip
        build, self.shape_class, code = entry
        try:
            shape = build(attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid(name, attrs, IMAGE_KNOWN[name], IMAGE_REQUIRED[name]) from None
        self.shape = shape
        self.attributes = ()
        self.image_shapes[name].append(shape)
        self.order_append(code)
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
            entry = self.reader(self.node_readers, key, SkeletonPoint, attrs, NODE_KNOWN, NODE_REQUIRED)
        try:
            node = entry[0](attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid("points", attrs, NODE_KNOWN, NODE_REQUIRED) from None
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
                self.track_readers, key, Track, attrs, TRACK_ATTRS_KNOWN, TRACK_ATTRS_REQUIRED
            )
        try:
            track = entry[0](attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid("track", attrs, TRACK_ATTRS_KNOWN, TRACK_ATTRS_REQUIRED) from None
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
            track.tracks = tuple(element for _, element in tracks)
            if any(before != len(shapes) for before, _ in tracks):  # not all after the shapes
                track.xml_layout = self.intern((*track.xml_layout, self.track_children(shapes, tracks)))
        track.__class__ = Track
        if self.track_stack:
            outer = self.track_stack[-1]
            outer[2].append((len(outer[1]), track))
            self.track_shapes = outer[1]
        else:
            self.tracks.append(track)
            self.close_container = None
            parser = self.parser
            parser.StartElementHandler, parser.EndElementHandler = self.h_body

    @staticmethod
    def track_children(shapes: list[Any], tracks: list[tuple[int, Any]]) -> str:
        """The children token of a track whose element tracks are not all after its shapes."""
        codes: list[str] = []
        position = 0
        for before, _ in tracks:
            codes.extend(CHILD_CODES.get(shape.kind, "") for shape in shapes[position:before])
            codes.append(CHILD_CODES["track"])
            position = before
        codes.extend(CHILD_CODES.get(shape.kind, "") for shape in shapes[position:])
        return CHILDREN + "".join(codes)

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
            if name not in TRACK_SHAPE_KINDS:
                if name == "track":
                    self.open_track(attrs)
                else:
                    self.skip(name)
                return
            entry = self.reader(
                self.tracked_readers, key, TrackedShape, attrs, TRACKED_KNOWN[name], TRACKED_REQUIRED[name]
            )
        build, self.shape_class, _ = entry
        try:
            shape = build(attrs)
        except (ValueError, KeyError, TypeError):
            raise self.invalid(name, attrs, TRACKED_KNOWN[name], TRACKED_REQUIRED[name]) from None
        self.shape = shape
        self.attributes = ()
        self.track_shapes.append(shape)
        if name == "skeleton":
            self.elements = []
