"""The vocabulary of CVAT XML, one table per vocabulary, shared by the readers and the writer.

Shape kinds come from :data:`cvat_watch.model.SHAPE_KINDS` (the model owns its classes); what is
here is how each kind and each ``<meta>`` container is spelled in XML: attribute names, which ones
are required, which are known (anything else is kept as an extra attribute), and the layouts
current CVAT writes for objects built in code.
"""

from __future__ import annotations

import enum
import itertools

from cvat_watch.model import CUBOID_COORDINATES, SHAPE_KINDS

#: How much of the file is handed to expat at a time. Not smaller: expat re-scans an unfinished
#: token on every feed, so one huge attribute value costs (value / chunk) scans of itself —
#: quadratic in practice with 64 KiB (a 50 MB value: ~30 s) and ~2 s with 1 MiB.
CHUNK_SIZE = 1 << 20

#: The deepest nesting accepted. CVAT's own elements go six levels deep; beyond a few hundred the
#: model's ==, hash() and to_dict() would recurse too far, and every open level costs memory.
MAX_DEPTH = 256

# -- shapes --------------------------------------------------------------------------------------

#: Element name → model class, and → ImageAnnotation field, of every image-level kind.
SHAPE_CLASS: dict[str, type] = {kind: cls for kind, (_, cls) in SHAPE_KINDS.items()}
SHAPE_FIELD: dict[str, str] = {kind: field for kind, (field, _) in SHAPE_KINDS.items()}
#: Model class → element name (the writer's question).
KIND_OF_CLASS: dict[type, str] = {cls: kind for kind, cls in SHAPE_CLASS.items()}
IMAGE_SHAPE_KINDS = frozenset(SHAPE_KINDS)
#: A track follows any shape but a tag.
TRACK_SHAPE_KINDS = frozenset(kind for kind in SHAPE_KINDS if kind != "tag")
assert list(SHAPE_KINDS)[-1] == "tag"  # the writer writes tags after the other kinds

BOX_COORDS = ("xtl", "ytl", "xbr", "ybr")
ELLIPSE_COORDS = ("cx", "cy", "rx", "ry")
MASK_INTS = ("left", "top", "width", "height")
COMMON = ("label", "source", "occluded", "z_order", "group_id")

#: Attributes each image-level element kind understands; anything else is an extra attribute.
IMAGE_KNOWN: dict[str, frozenset[str]] = {
    "box": frozenset((*COMMON, *BOX_COORDS, "rotation")),
    "polygon": frozenset((*COMMON, "points")),
    "polyline": frozenset((*COMMON, "points")),
    "points": frozenset((*COMMON, "points")),
    "ellipse": frozenset((*COMMON, *ELLIPSE_COORDS, "rotation")),
    "cuboid": frozenset((*COMMON, *CUBOID_COORDINATES)),
    "mask": frozenset((*COMMON, "rle", *MASK_INTS)),
    "skeleton": frozenset((*COMMON, "points", "rotation")),
    "tag": frozenset(("label", "source", "group_id")),
}
#: Per kind: the attributes an image-level element cannot do without.
IMAGE_REQUIRED: dict[str, tuple[str, ...]] = {
    "box": ("label", *BOX_COORDS),
    "polygon": ("label", "points"),
    "polyline": ("label", "points"),
    "points": ("label", "points"),
    "ellipse": ("label", *ELLIPSE_COORDS),
    "cuboid": ("label", *CUBOID_COORDINATES),
    "mask": ("label", "rle", *MASK_INTS),
    "skeleton": ("label",),
    "tag": ("label",),
}
assert IMAGE_KNOWN.keys() == IMAGE_REQUIRED.keys() == SHAPE_KINDS.keys()

#: A skeleton node (``<points>`` inside ``<skeleton>``).
NODE_KNOWN = frozenset(("label", "source", "occluded", "outside", "z_order", "group_id", "points"))
NODE_REQUIRED = ("label", "points")

IMAGE_ATTRS_KNOWN = frozenset(("id", "name", "width", "height", "task_id", "subset"))
IMAGE_ATTRS_REQUIRED = ("id", "name")
TRACK_ATTRS_KNOWN = frozenset(("id", "label", "source", "group_id", "task_id", "subset"))
TRACK_ATTRS_REQUIRED = ("id", "label")

TRACKED_COMMON = ("frame", "outside", "occluded", "keyframe", "z_order", "rotation")
#: The ``values`` names of each tracked kind, in the order the model keeps them.
TRACKED_VALUES: dict[str, tuple[str, ...]] = {
    "box": BOX_COORDS,
    "ellipse": ELLIPSE_COORDS,
    "cuboid": CUBOID_COORDINATES,
    "mask": ("rle", *MASK_INTS),
    "polygon": ("points",),
    "polyline": ("points",),
    "points": ("points",),
    "skeleton": ("points",),
}
assert TRACKED_VALUES.keys() == TRACK_SHAPE_KINDS
TRACKED_KNOWN = {kind: frozenset((*TRACKED_COMMON, *names)) for kind, names in TRACKED_VALUES.items()}
#: A skeleton frame's points are optional (its nodes carry the coordinates).
TRACKED_REQUIRED: dict[str, tuple[str, ...]] = {
    kind: ("frame", *(name for name in names if kind != "skeleton")) for kind, names in TRACKED_VALUES.items()
}

# -- attribute types: how an XML attribute converts to the field of the same name ---------------

FLOAT_FIELDS = frozenset((*BOX_COORDS, *ELLIPSE_COORDS, *CUBOID_COORDINATES, "rotation"))
INT_FIELDS = frozenset(("z_order", "group_id", "frame", *MASK_INTS))
BOOL_FIELDS = frozenset(("occluded", "outside", "keyframe"))
COORD_FIELDS = frozenset(("points",))
#: Text fields whose values repeat all over an export: one shared str per distinct value.
SHARED_TEXT_FIELDS = frozenset(("label", "source", "subset", "task_id"))
BOOLS = {"0": False, "1": True, "false": False, "true": True, "False": False, "True": True}

# -- <meta> -----------------------------------------------------------------------------------


class Content(enum.Enum):
    """What a known child of a ``<meta>`` container holds, and so how it maps to its field."""

    TEXT = enum.auto()
    INT = enum.auto()
    USER = enum.auto()
    SEGMENTS = enum.auto()
    LABELS = enum.auto()
    LABEL_ATTRIBUTES = enum.auto()
    SIZE = enum.auto()
    #: ``<tasks>`` of a project: its tasks go to ``Annotations.tasks``, not to a Project field.
    TASKS = enum.auto()


TEXT, INT = Content.TEXT, Content.INT
#: Per container: child element → its content; the field has the element's name.
PROJECT_FIELDS = {
    "id": TEXT, "name": TEXT, "bugtracker": TEXT, "created": TEXT, "updated": TEXT,
    "tasks": Content.TASKS, "subsets": TEXT, "owner": Content.USER, "assignee": Content.USER,
    "labels": Content.LABELS,
}  # fmt: skip
TASK_FIELDS = {
    "id": TEXT, "name": TEXT, "size": INT, "mode": TEXT, "overlap": INT, "bugtracker": TEXT,
    "created": TEXT, "updated": TEXT, "subset": TEXT, "start_frame": INT, "stop_frame": INT,
    "frame_filter": TEXT, "z_order": TEXT, "dimension": TEXT, "segments": Content.SEGMENTS,
    "owner": Content.USER, "assignee": Content.USER, "labels": Content.LABELS,
    "original_size": Content.SIZE,
}  # fmt: skip
SEGMENT_FIELDS = {"id": TEXT, "start": INT, "stop": INT, "url": TEXT}
USER_FIELDS = {"username": TEXT, "email": TEXT}
SIZE_FIELDS = {"width": INT, "height": INT}
LABEL_FIELDS = {
    "name": TEXT, "color": TEXT, "type": TEXT, "attributes": Content.LABEL_ATTRIBUTES,
    "parent": TEXT, "svg": TEXT,
}  # fmt: skip
LABEL_ATTRIBUTE_FIELDS = {
    "name": TEXT, "mutable": TEXT, "input_type": TEXT, "default_value": TEXT, "values": TEXT,
}  # fmt: skip
META_KNOWN = frozenset(("project", "task", "job", "dumped", "source"))
ROOT_KNOWN = frozenset(("version", "meta", "image", "track"))

# What current CVAT writes, for objects built in code (xml_layout=None).
PROJECT_LAYOUT = tuple(PROJECT_FIELDS)
TASK_LAYOUT = tuple(TASK_FIELDS)
SEGMENT_LAYOUT = tuple(SEGMENT_FIELDS)
USER_LAYOUT = tuple(USER_FIELDS)
LABEL_LAYOUT = tuple(LABEL_FIELDS)
LABEL_ATTRIBUTE_LAYOUT = tuple(LABEL_ATTRIBUTE_FIELDS)


def is_unknown_token(token: str) -> bool:
    """A token of ``Annotations.xml_layout`` that stands for the next ``meta_extra`` element."""
    if token.startswith("meta/"):
        return token[5:] not in META_KNOWN
    return token not in ROOT_KNOWN


def is_xml_space(text: str) -> bool:
    return not text.strip(" \t\n\r")


# -- document order of the children of <image> and <track> ---------------------------------------

#: The ``xml_layout`` of an image or a track ends with one token starting with this when its
#: children were of more than one kind: one letter per child, in document order, for its kind
#: (CHILD_CODES), e.g. ``children=gpcselbbmt``. "=" cannot occur in an XML attribute name, so the
#: token never collides with the attribute names before it. One letter per child keeps the token
#: small and cheap to make (a join) on a load that reads millions of shapes.
CHILDREN = "children="
CHILD_CODES = {
    "box": "b", "polygon": "g", "polyline": "l", "points": "p", "ellipse": "e", "cuboid": "c",
    "mask": "m", "skeleton": "s", "tag": "t",
    "track": "k",  # an element track inside a skeleton track (CVAT 2022-08 to 2023-02)
}  # fmt: skip
assert CHILD_CODES.keys() == {*SHAPE_KINDS, "track"}
_KIND_OF_CODE = {code: kind for kind, code in CHILD_CODES.items()}
assert len(_KIND_OF_CODE) == len(CHILD_CODES)

_decoded: dict[str, tuple[tuple[str, int], ...]] = {}


def parse_children(token: str) -> tuple[tuple[str, int], ...]:
    """``children=gbbt`` → (("polygon", 1), ("box", 2), ("tag", 1)); () for anything unreadable."""
    runs = _decoded.get(token)
    if runs is None:
        parsed: list[tuple[str, int]] = []
        for code, group in itertools.groupby(token[len(CHILDREN) :]):
            kind = _KIND_OF_CODE.get(code)
            if kind is None:
                return ()  # not written by the reader: the writer falls back to its own order
            parsed.append((kind, sum(1 for _ in group)))
        runs = tuple(parsed)
        if len(_decoded) > 4096:  # a bound for a cache that only saves parsing again
            _decoded.clear()
        _decoded[token] = runs
    return runs


def split_children(layout: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...] | None]:
    """An image's or track's ``xml_layout`` → (its attribute names, its children's runs or None)."""
    if layout and layout[-1].startswith(CHILDREN):
        return layout[:-1], parse_children(layout[-1])
    return layout, None
