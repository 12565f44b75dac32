"""Hypothesis strategies for the export model, as code would build it (``xml_layout=None``).

They stay inside what CVAT XML can carry: text made of XML characters, finite floats, extra
attribute and element names that are XML names the reader does not already give a meaning to, and
the few couplings the format imposes (a task export has one task; its images' task id is implied).
"""

from __future__ import annotations

from typing import Any, Literal

from hypothesis import strategies as st

from cvat_watch.model import (
    CUBOID_COORDINATES,
    Annotations,
    Attribute,
    Box,
    Cuboid,
    Ellipse,
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
)

# XML 1.0 characters: tab, newline, carriage return and everything from space up, minus the
# surrogates and U+FFFE/U+FFFF.
xml_text = st.text(
    st.characters(
        exclude_categories=["Cs"],
        exclude_characters=[chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"] + ["\ufffe", "\uffff"],
    ),
    max_size=12,
)
#: Text with something besides XML whitespace (the reader treats whitespace-only text as formatting).
xml_content = xml_text.filter(lambda text: text.strip(" \t\n\r") != "")
numbers = st.floats(allow_nan=False, allow_infinity=False)
small_ints = st.integers(min_value=-(2**40), max_value=2**40)
coordinates = st.lists(st.tuples(numbers, numbers), max_size=4).map(tuple)

_names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(lambda name: not name.startswith("xml"))


def names_except(*taken: str) -> st.SearchStrategy[str]:
    """XML names that mean nothing to the reader where they are used."""
    reserved = set(taken)
    return _names.filter(lambda name: name not in reserved)


def extra_attributes(*known: str) -> st.SearchStrategy[tuple[tuple[str, str], ...]]:
    return st.lists(
        st.tuples(names_except(*known), xml_text), max_size=2, unique_by=lambda pair: pair[0]
    ).map(tuple)


@st.composite
def xml_elements(draw: st.DrawFn, tags: st.SearchStrategy[str], depth: int = 2) -> XmlElement:
    children: tuple[XmlElement, ...] = ()
    if depth > 0:
        children = tuple(draw(st.lists(xml_elements(_names, depth - 1), max_size=2)))
    attributes = draw(st.lists(st.tuples(_names, xml_text), max_size=2, unique_by=lambda pair: pair[0]))
    text = None if children else draw(st.none() | xml_content)
    return XmlElement(draw(tags), tuple(attributes), text, children)


def extra_elements(*known: str) -> st.SearchStrategy[tuple[XmlElement, ...]]:
    return st.lists(xml_elements(names_except(*known)), max_size=2).map(tuple)


optional_text = st.none() | xml_text
attributes = st.lists(st.builds(Attribute, xml_text, xml_text), max_size=2).map(tuple)

# -- meta -----------------------------------------------------------------------------------------

users = st.builds(User, username=optional_text, email=optional_text)
segments = st.builds(Segment, id=xml_text, start=small_ints, stop=small_ints, url=optional_text)
label_attributes = st.builds(
    LabelAttribute,
    name=xml_text,
    mutable=optional_text,
    input_type=optional_text,
    default_value=optional_text,
    values=optional_text,
)
labels = st.builds(
    Label,
    name=xml_text,
    color=optional_text,
    type=optional_text,
    attributes=st.lists(label_attributes, max_size=2).map(tuple),
    parent=optional_text,
    svg=optional_text,
    extra=extra_elements("name", "color", "type", "attributes", "parent", "svg"),
)
_TASK_TAGS = (
    "id", "name", "size", "mode", "overlap", "bugtracker", "created", "updated", "subset",
    "start_frame", "stop_frame", "frame_filter", "z_order", "dimension", "segments", "owner",
    "assignee", "labels", "original_size",
)  # fmt: skip
optional_int = st.none() | small_ints


def tasks(*, with_labels: bool = True) -> st.SearchStrategy[Task]:
    return st.builds(
        Task,
        id=optional_text,
        name=optional_text,
        size=optional_int,
        mode=optional_text,
        overlap=optional_int,
        bugtracker=optional_text,
        created=optional_text,
        updated=optional_text,
        subset=optional_text,
        start_frame=optional_int,
        stop_frame=optional_int,
        frame_filter=optional_text,
        z_order=optional_text,
        dimension=optional_text,
        segments=st.lists(segments, max_size=2).map(tuple),
        owner=st.none() | users,
        assignee=st.none() | users,
        labels=st.lists(labels, max_size=2).map(tuple) if with_labels else st.just(()),
        original_size=st.none() | st.builds(Size, small_ints, small_ints),
        extra=extra_elements(*_TASK_TAGS),
    )


projects = st.builds(
    Project,
    id=optional_text,
    name=optional_text,
    bugtracker=optional_text,
    created=optional_text,
    updated=optional_text,
    subsets=optional_text,
    owner=st.none() | users,
    assignee=st.none() | users,
    labels=st.lists(labels, max_size=2).map(tuple),
    extra=extra_elements(
        "id", "name", "bugtracker", "created", "updated", "tasks", "subsets", "owner", "assignee", "labels"
    ),
)

# -- shapes ---------------------------------------------------------------------------------------

_COMMON = ("label", "source", "occluded", "z_order", "group_id")


def _common(*known: str) -> dict[str, Any]:
    return {
        "label": xml_text,
        "source": xml_text,
        "occluded": st.booleans(),
        "z_order": small_ints,
        "group_id": optional_int,
        "attributes": attributes,
        "extra_attributes": extra_attributes(*_COMMON, *known),
    }


boxes = st.builds(
    Box,
    xtl=numbers, ytl=numbers, xbr=numbers, ybr=numbers, rotation=numbers,
    **_common("xtl", "ytl", "xbr", "ybr", "rotation"),
)  # fmt: skip
polygons = st.builds(Polygon, points=coordinates, **_common("points"))
polylines = st.builds(Polyline, points=coordinates, **_common("points"))
point_sets = st.builds(Points, points=coordinates, **_common("points"))
ellipses = st.builds(
    Ellipse, cx=numbers, cy=numbers, rx=numbers, ry=numbers, rotation=numbers,
    **_common("cx", "cy", "rx", "ry", "rotation"),
)  # fmt: skip
cuboids = st.builds(Cuboid, **{name: numbers for name in CUBOID_COORDINATES}, **_common(*CUBOID_COORDINATES))
masks = st.builds(
    Mask, rle=xml_text, left=small_ints, top=small_ints, width=small_ints, height=small_ints,
    **_common("rle", "left", "top", "width", "height"),
)  # fmt: skip


def skeleton_points(*, in_track: bool = False) -> st.SearchStrategy[SkeletonPoint]:
    common = _common("outside", "points")
    if in_track:
        # CVAT gives the nodes of a tracked skeleton a keyframe attribute; the model keeps it as extra.
        common["extra_attributes"] = st.tuples(st.sampled_from(["0", "1"])).map(
            lambda v: (("keyframe", v[0]),)
        )
    return st.builds(SkeletonPoint, points=coordinates, outside=st.booleans(), **common)


skeletons = st.builds(
    Skeleton,
    elements=st.lists(skeleton_points(), max_size=3).map(tuple),
    rotation=numbers,
    points=coordinates,
    **_common("points", "rotation"),
)
tags = st.builds(
    Tag,
    label=xml_text,
    source=xml_text,
    group_id=optional_int,
    attributes=attributes,
    extra_attributes=extra_attributes("label", "source", "group_id"),
)


def _some(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(strategy, max_size=2).map(tuple)


@st.composite
def images(draw: st.DrawFn, task_id: st.SearchStrategy[str | None]) -> ImageAnnotation:
    return ImageAnnotation(
        id=draw(xml_text),
        name=draw(xml_text),
        width=draw(optional_int),
        height=draw(optional_int),
        task_id=draw(task_id),
        subset=draw(optional_text),
        boxes=draw(_some(boxes)),
        polygons=draw(_some(polygons)),
        polylines=draw(_some(polylines)),
        points=draw(_some(point_sets)),
        ellipses=draw(_some(ellipses)),
        cuboids=draw(_some(cuboids)),
        masks=draw(_some(masks)),
        skeletons=draw(_some(skeletons)),
        tags=draw(_some(tags)),
        extra_attributes=draw(extra_attributes("id", "name", "width", "height", "task_id", "subset")),
    )


# -- tracks ---------------------------------------------------------------------------------------

_TRACKED_VALUES = {
    "box": ("xtl", "ytl", "xbr", "ybr"),
    "ellipse": ("cx", "cy", "rx", "ry"),
    "cuboid": CUBOID_COORDINATES,
}


@st.composite
def tracked_shapes(draw: st.DrawFn, kind: str) -> TrackedShape:
    values: tuple[tuple[str, Any], ...]
    elements: tuple[SkeletonPoint, ...] = ()
    if kind in _TRACKED_VALUES:
        values = tuple((name, draw(numbers)) for name in _TRACKED_VALUES[kind])
    elif kind == "mask":
        values = (
            ("rle", draw(xml_text)),
            *((name, draw(small_ints)) for name in ("left", "top", "width", "height")),
        )
    elif kind == "skeleton":
        values = draw(st.sampled_from([(), None]))
        if values is None:
            values = (("points", draw(coordinates)),)
        elements = tuple(draw(st.lists(skeleton_points(in_track=True), max_size=2)))
    else:
        values = (("points", draw(coordinates)),)
    known = ("frame", "outside", "occluded", "keyframe", "z_order", "rotation", *(name for name, _ in values))
    return TrackedShape(
        kind=kind,
        frame=draw(small_ints),
        values=values,
        outside=draw(st.booleans()),
        occluded=draw(st.booleans()),
        keyframe=draw(st.booleans()),
        z_order=draw(small_ints),
        rotation=draw(numbers),
        elements=elements,
        attributes=draw(attributes),
        extra_attributes=draw(extra_attributes(*known, "points", "rle", "left", "top", "width", "height")),
    )


_KINDS = ("box", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")


@st.composite
def tracks(draw: st.DrawFn, depth: int = 1) -> Track:
    kind = draw(st.sampled_from(_KINDS))
    nested: tuple[Track, ...] = ()
    if depth > 0 and kind == "skeleton":
        nested = tuple(draw(st.lists(tracks(depth=0), max_size=2)))
    return Track(
        id=draw(xml_text),
        label=draw(xml_text),
        source=draw(xml_text),
        group_id=draw(optional_int),
        task_id=draw(optional_text),
        subset=draw(optional_text),
        shapes=tuple(draw(st.lists(tracked_shapes(kind), max_size=2))),
        tracks=nested,
        extra_attributes=draw(extra_attributes("id", "label", "source", "group_id", "task_id", "subset")),
    )


# -- whole exports --------------------------------------------------------------------------------


@st.composite
def exports(draw: st.DrawFn) -> Annotations:
    """A whole export: a project with tasks, or one task or job, with images and tracks."""
    kind: Literal["project", "task", "job"] = draw(st.sampled_from(["project", "task", "job"]))
    project = None
    if kind == "project":
        project = draw(projects)
        task_list = tuple(draw(st.lists(tasks(with_labels=False), max_size=2)))
        task_ids: st.SearchStrategy[str | None] = optional_text
    else:
        task_list = (draw(tasks()),)
        own = task_list[0].id
        # A task export's images without task_id belong to its task: the reader fills the id in.
        task_ids = st.just(own) | xml_text if own is not None else optional_text
    return Annotations(
        version=draw(xml_text),
        project=project,
        tasks=task_list,
        images=tuple(draw(st.lists(images(task_ids), max_size=2))),
        tracks=tuple(draw(st.lists(tracks(), max_size=2))),
        kind=kind,
        dumped=draw(optional_text),
        source=draw(optional_text),
        meta_extra=draw(extra_elements("project", "task", "job", "dumped", "source")),
    )
