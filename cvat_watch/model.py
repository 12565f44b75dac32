"""The CVAT export model: frozen attrs values and the questions people ask of them.

Nothing here reads or writes files, XML or JSON: :mod:`cvat_watch.cvatxml` and :mod:`cvat_watch.jobstatus`
are the filters between the files and these classes. The one way up is ``Annotations.from_path`` /
``Annotations.save``, which import those modules when called.
The questions asked of an export (tasks, jobs, completion, images, CVAT links) are the methods of
:class:`Annotations`, written in :mod:`cvat_watch._queries` with the link and completion rules,
which this module re-exports as their public home.

Two fields on the XML-derived classes are not content:

* ``xml_layout`` is an opaque hint from the reader to the writer: which optional child elements
  or attributes the file had, in which order. It lets ``save`` reproduce a file element by element
  (CVAT versions differ in what they write and in what order). It takes no part in equality, so a
  model built in code (``xml_layout=None``, written in CVAT's current layout) equals the same model
  read from a file.
* ``extra`` keeps elements this version does not know (future CVAT versions) so that they survive
  a load and save.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal

import attrs

from cvat_watch._queries import (
    ExportQueries,
    _job_id_of,
    _single_task_id,
    base_url_of,
    is_task_complete,
    job_id_from_url,
    job_url,
    project_url,
    task_of_job,
    task_url,
)

__all__ = [
    "COMPLETED",
    "NON_COUNTING_JOB_TYPES",
    "Annotations",
    "Attribute",
    "Box",
    "Cuboid",
    "Ellipse",
    "ExportBrief",
    "ExportSummary",
    "ImageAnnotation",
    "JobStatus",
    "Label",
    "LabelAttribute",
    "Mask",
    "Points",
    "Polygon",
    "Polyline",
    "Project",
    "Segment",
    "Shape",
    "Size",
    "Skeleton",
    "SkeletonPoint",
    "Tag",
    "Task",
    "TaskBrief",
    "Track",
    "TrackedShape",
    "User",
    "XmlElement",
    "base_url_of",
    "is_task_complete",
    "job_id_from_url",
    "job_url",
    "project_url",
    "task_of_job",
    "task_url",
]

#: The one job state that counts as done. CVAT's states are new, in progress, completed, rejected.
COMPLETED = "completed"
#: The stage CVAT's own task status needs besides the completed state ("accepted" rule).
ACCEPTANCE = "acceptance"
#: Job types that CVAT leaves out of the XML's segments and that never decide completion.
NON_COUNTING_JOB_TYPES = frozenset({"ground_truth", "consensus_replica"})

CompletionRule = Literal["completed", "accepted"]

Coordinates = tuple[tuple[float, float], ...]


# Field converters. Both return an exact tuple / str / None unchanged, which is what lets the XML
# reader fill objects without their __init__ (cvat_watch.cvatxml._fastbuild checks every field's
# converter against PASS_THROUGH_CONVERTERS).


def as_tuple(value: Iterable[typing.Any]) -> tuple[typing.Any, ...]:
    """``value`` as a tuple; an exact tuple is returned as it is."""
    # tuple(t) returns t itself for an exact tuple, so the common path costs one call.
    return value if type(value) is tuple else tuple(value)


def str_or_none(value: object) -> str | None:
    """None stays None; anything else becomes its str (an exact str is returned as it is)."""
    return None if value is None else str(value)


#: The field converters that hand back an exact ``str``, ``tuple`` or None as they got it.
PASS_THROUGH_CONVERTERS: tuple[typing.Any, ...] = (str, as_tuple, str_or_none)


def _layout() -> typing.Any:
    return attrs.field(default=None, eq=False, repr=False, kw_only=True)


def _items() -> typing.Any:
    return attrs.field(factory=tuple, converter=as_tuple, kw_only=True)


@attrs.frozen
class XmlElement:
    """An element this version of cvat-watch does not model, kept so that save loses nothing."""

    tag: str
    attributes: tuple[tuple[str, str], ...] = attrs.field(factory=tuple, converter=as_tuple)
    text: str | None = None
    children: tuple[XmlElement, ...] = attrs.field(factory=tuple, converter=as_tuple)


@attrs.frozen
class User:
    """A CVAT user as an export names it (owner or assignee); an empty element has both fields None."""

    username: str | None = None
    email: str | None = None
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class Size:
    """``<original_size>`` of a video task."""

    width: int
    height: int


@attrs.frozen
class LabelAttribute:
    """The specification of one attribute of a label (``<attribute>`` under ``<label>``)."""

    name: str
    mutable: str | None = None
    input_type: str | None = None
    default_value: str | None = None
    values: str | None = None
    xml_layout: tuple[str, ...] | None = _layout()

    @property
    def choices(self) -> list[str]:
        """The allowed values: CVAT separates them by newlines (older exports: by spaces)."""
        if not self.values:
            return []
        separator = "\n" if "\n" in self.values else None
        return self.values.split(separator)


@attrs.frozen
class Label:
    """A label of a task or project: its name, colour, type and attribute specifications."""

    name: str
    color: str | None = None
    type: str | None = None
    attributes: tuple[LabelAttribute, ...] = _items()
    parent: str | None = None
    svg: str | None = None
    extra: tuple[XmlElement, ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class Segment:
    """A segment of a task: the frames ``start..stop`` (task-relative, inclusive) that one job covers."""

    id: str = attrs.field(converter=str)
    start: int
    stop: int
    url: str | None = None
    xml_layout: tuple[str, ...] | None = _layout()

    @property
    def job_id(self) -> str:
        """The job's id, from the URL; the segment id where the URL has none."""
        return job_id_from_url(self.url) or self.id

    def covers(self, frame: int) -> bool:
        return self.start <= frame <= self.stop


_STEP = re.compile(r"step\s*=\s*(\d+)")


@attrs.frozen
class Task:
    """A task as the export's meta describes it. Every field but the labels and segments is optional."""

    id: str | None = attrs.field(default=None, converter=str_or_none)
    name: str | None = None
    size: int | None = None
    mode: str | None = None
    overlap: int | None = None
    bugtracker: str | None = None
    created: str | None = None
    updated: str | None = None
    subset: str | None = None
    start_frame: int | None = None
    stop_frame: int | None = None
    frame_filter: str | None = None
    z_order: str | None = None
    dimension: str | None = None
    segments: tuple[Segment, ...] = _items()
    owner: User | None = None
    assignee: User | None = None
    labels: tuple[Label, ...] = _items()
    original_size: Size | None = None
    extra: tuple[XmlElement, ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()

    @property
    def step(self) -> int:
        """The frame step from ``frame_filter`` (``step=N``), 1 when there is none."""
        match = _STEP.search(self.frame_filter or "")
        step = int(match.group(1)) if match else 1
        return step if step > 0 else 1

    @property
    def job_ids(self) -> list[str]:
        return [segment.job_id for segment in self.segments]

    def segment_for_frame(self, frame: int) -> Segment | None:
        """The first segment in file order that covers the task-relative ``frame`` (segments overlap)."""
        for segment in self.segments:
            if segment.covers(frame):
                return segment
        return None


@attrs.frozen
class Project:
    """The project of a project export: its identity, owner, labels and the subsets it uses."""

    id: str | None = attrs.field(default=None, converter=str_or_none)
    name: str | None = None
    bugtracker: str | None = None
    created: str | None = None
    updated: str | None = None
    subsets: str | None = None
    owner: User | None = None
    assignee: User | None = None
    labels: tuple[Label, ...] = _items()
    extra: tuple[XmlElement, ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()

    @property
    def subset_names(self) -> list[str]:
        """The subsets, one per line of ``<subsets>``."""
        return [line.strip() for line in (self.subsets or "").splitlines() if line.strip()]


@attrs.frozen
class Attribute:
    """A value of a label attribute on one shape, track or tag (``<attribute name="…">value</attribute>``)."""

    name: str
    value: str


# Shapes. The common fields come first in every class so that the writer can treat them alike.


@attrs.frozen
class Box:
    label: str
    xtl: float
    ytl: float
    xbr: float
    ybr: float
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0
    group_id: int | None = None
    rotation: float = 0.0
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class Polygon:
    label: str
    points: Coordinates = attrs.field(converter=as_tuple)
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0
    group_id: int | None = None
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class Polyline:
    label: str
    points: Coordinates = attrs.field(converter=as_tuple)
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0
    group_id: int | None = None
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class Points:
    label: str
    points: Coordinates = attrs.field(converter=as_tuple)
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0
    group_id: int | None = None
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class Ellipse:
    label: str
    cx: float
    cy: float
    rx: float
    ry: float
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0
    group_id: int | None = None
    rotation: float = 0.0
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


CUBOID_COORDINATES = (
    "xtl1", "ytl1", "xbl1", "ybl1", "xtr1", "ytr1", "xbr1", "ybr1",
    "xtl2", "ytl2", "xbl2", "ybl2", "xtr2", "ytr2", "xbr2", "ybr2",
)  # fmt: skip


@attrs.frozen
class Cuboid:
    label: str
    xtl1: float
    ytl1: float
    xbl1: float
    ybl1: float
    xtr1: float
    ytr1: float
    xbr1: float
    ybr1: float
    xtl2: float
    ytl2: float
    xbl2: float
    ybl2: float
    xtr2: float
    ytr2: float
    xbr2: float
    ybr2: float
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0
    group_id: int | None = None
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class Mask:
    """A bitmap mask: CVAT's run-length encoding ``rle`` ("3, 4, 5") of a box.

    The box is ``width`` × ``height`` pixels at ``left``/``top``.
    """

    label: str
    rle: str
    left: int
    top: int
    width: int
    height: int
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0
    group_id: int | None = None
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class SkeletonPoint:
    """One node of a skeleton (``<points>`` inside ``<skeleton>``)."""

    label: str
    points: Coordinates = attrs.field(converter=as_tuple)
    source: str = "manual"
    occluded: bool = False
    outside: bool = False
    z_order: int = 0
    group_id: int | None = None
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class Skeleton:
    label: str
    elements: tuple[SkeletonPoint, ...] = _items()
    source: str = "manual"
    occluded: bool = False
    z_order: int = 0
    group_id: int | None = None
    rotation: float = 0.0
    #: The skeleton element's own ``points`` attribute (CVAT writes "" or the nodes' coordinates).
    points: Coordinates = _items()
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class Tag:
    label: str
    source: str = "manual"
    group_id: int | None = None
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


Shape = Box | Polygon | Polyline | Points | Ellipse | Cuboid | Mask | Skeleton | Tag


# -- coordinates kept as text until first read ----------------------------------------------------
#
# A large export holds millions of coordinate pairs, and as Python tuples of floats each pair
# costs ~100 bytes and a float() per number. The XML reader may therefore leave a ``points`` slot
# holding the attribute's text (``"x,y;x,y"``), after checking that it is plain decimal numbers
# (so decoding can neither fail nor give a different value later); the first read of ``points``
# decodes it with points_from_text and stores the tuple in its place. Every read goes through the
# descriptor below, so ``shape.points``, ==, hash(), repr(), evolve(), to_dict() and save() only
# ever see the tuple: the text is never observable. __init__ always stores a tuple.


def points_from_text(text: str) -> Coordinates:
    """``"x,y;x,y"`` → ((x, y), (x, y)); ValueError for anything else (nan and inf included)."""
    if not text:
        return ()
    # A few C-level passes and no Python loop: this is the hottest path of most exports.
    flat = list(map(float, text.replace(";", ",").split(",")))
    total = sum(flat)
    if total - total:  # a nan or an infinity among them (x - x is 0.0 for every finite x)
        for value in flat:
            if not math.isfinite(value):
                raise ValueError(text)
    values = iter(flat)
    return tuple(zip(values, values, strict=True))


class _PointsSlot:
    """The ``points`` attribute of a slotted class: decodes text its slot holds on first read."""

    __slots__ = ("slot",)

    def __init__(self, slot: typing.Any) -> None:
        self.slot = slot  # the member descriptor of the slot

    def __get__(self, obj: object, owner: type | None = None) -> typing.Any:
        if obj is None:
            return self
        value = self.slot.__get__(obj, owner)
        if type(value) is str:
            value = points_from_text(value)
            self.slot.__set__(obj, value)
        return value

    def __set__(self, obj: object, value: typing.Any) -> None:
        self.slot.__set__(obj, value)

    def __delete__(self, obj: object) -> None:
        self.slot.__delete__(obj)


#: The classes whose ``points`` slot may hold text until it is first read.
TEXT_POINTS_CLASSES: tuple[type, ...] = (Polygon, Polyline, Points, SkeletonPoint, Skeleton)
for _cls in TEXT_POINTS_CLASSES:
    _cls.points = _PointsSlot(_cls.__dict__["points"])  # type: ignore[attr-defined]
del _cls

#: The shape kinds: CVAT's element name → (the ImageAnnotation field holding them, their class), in
#: the order of ImageAnnotation's fields. The one table of shape kinds; cvatxml derives its own from it.
SHAPE_KINDS: Mapping[str, tuple[str, type]] = {
    "box": ("boxes", Box),
    "polygon": ("polygons", Polygon),
    "polyline": ("polylines", Polyline),
    "points": ("points", Points),
    "ellipse": ("ellipses", Ellipse),
    "cuboid": ("cuboids", Cuboid),
    "mask": ("masks", Mask),
    "skeleton": ("skeletons", Skeleton),
    "tag": ("tags", Tag),
}
#: ImageAnnotation's shape fields → the class each holds, in field order.
SHAPE_FIELDS: Mapping[str, type] = dict(SHAPE_KINDS.values())


@attrs.frozen
class ImageAnnotation:
    """One ``<image>``: a frame of a task, with its shapes grouped by kind."""

    id: str = attrs.field(converter=str)
    name: str
    width: int | None = None
    height: int | None = None
    task_id: str | None = attrs.field(default=None, converter=str_or_none)
    subset: str | None = None
    boxes: tuple[Box, ...] = _items()
    polygons: tuple[Polygon, ...] = _items()
    polylines: tuple[Polyline, ...] = _items()
    points: tuple[Points, ...] = _items()
    ellipses: tuple[Ellipse, ...] = _items()
    cuboids: tuple[Cuboid, ...] = _items()
    masks: tuple[Mask, ...] = _items()
    skeletons: tuple[Skeleton, ...] = _items()
    tags: tuple[Tag, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()

    @property
    def shapes(self) -> Iterator[Shape]:
        """Every shape and tag of the image, kind by kind."""
        for field in SHAPE_FIELDS:
            yield from getattr(self, field)

    @property
    def shape_count(self) -> int:
        return sum(len(getattr(self, field)) for field in SHAPE_FIELDS)


@attrs.frozen
class TrackedShape:
    """One keyframe (or interpolated frame) of a track: a shape at an absolute frame number.

    ``kind`` is CVAT's element name (box, polygon, polyline, points, ellipse, cuboid, mask, skeleton);
    ``values`` holds the kind's coordinates by attribute name (``xtl``… for a box, ``points`` for the
    point kinds as a coordinate tuple, ``rle``/``left``… for a mask). Skeleton frames carry their
    nodes in ``elements``.
    """

    kind: str
    frame: int
    values: tuple[tuple[str, typing.Any], ...] = _items()
    outside: bool = False
    occluded: bool = False
    keyframe: bool = True
    z_order: int = 0
    rotation: float = 0.0
    elements: tuple[SkeletonPoint, ...] = _items()
    attributes: tuple[Attribute, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()

    def value(self, name: str) -> typing.Any:
        for key, value in self.values:
            if key == name:
                return value
        raise KeyError(name)


@attrs.frozen
class Track:
    """A ``<track>`` of a video export: one object followed over frames."""

    id: str = attrs.field(converter=str)
    label: str
    source: str = "manual"
    group_id: int | None = None
    task_id: str | None = attrs.field(default=None, converter=str_or_none)
    subset: str | None = None
    shapes: tuple[TrackedShape, ...] = _items()
    #: Element tracks of a skeleton track, as CVAT wrote them from 2022-08 to 2023-02.
    tracks: tuple[Track, ...] = _items()
    extra_attributes: tuple[tuple[str, str], ...] = _items()
    xml_layout: tuple[str, ...] | None = _layout()


@attrs.frozen
class JobStatus:
    """The state of one job, from the job-status file beside the export."""

    job_id: str = attrs.field(converter=str)
    task_id: str = attrs.field(converter=str)
    state: str
    stage: str | None = None
    type: str | None = None
    assignee: str | None = None
    updated: str | None = None
    task_name: str | None = None

    @property
    def counts(self) -> bool:
        """Whether the job decides its task's completion (ground-truth and consensus jobs do not)."""
        return self.type not in NON_COUNTING_JOB_TYPES

    def is_done(self, rule: CompletionRule = "completed") -> bool:
        if self.state != COMPLETED:
            return False
        return rule == "completed" or self.stage == ACCEPTANCE


ExportKind = Literal["project", "task", "job"]


@attrs.frozen
class ExportSummary:
    """What the daemon needs of an export, without its shapes: the meta and per-task counts.

    Cheaper than a full :class:`Annotations` for a large export; ``image_counts`` and
    ``shape_counts`` map a task id (None for an export whose task has no id) to a count.
    """

    kind: ExportKind
    project: Project | None
    tasks: tuple[Task, ...] = _items()
    image_counts: Mapping[str | None, int] = attrs.field(factory=dict)
    shape_counts: Mapping[str | None, int] = attrs.field(factory=dict)

    @property
    def job_id(self) -> str | None:
        """The job a job export holds (``<job><id>``); None for task and project exports.

        A job export names no task: its counts are under None, its task is the one the job-status
        records give the job (:func:`task_of_job`).
        """
        return _job_id_of(self.kind, self.tasks)

    def brief(self) -> ExportBrief:
        """The same summary with each task reduced to what the daemon compares (:class:`TaskBrief`)."""
        project = self.project
        return ExportBrief(
            kind=self.kind,
            project_id=project.id if project is not None else None,
            project_name=project.name if project is not None else None,
            tasks=tuple(map(TaskBrief.of, self.tasks)),
            image_counts=self.image_counts,
            shape_counts=self.shape_counts,
        )


@attrs.frozen
class TaskBrief:
    """What the daemon keeps of one task of an export's meta.

    A full :class:`Task` with its segments and users costs about 2 kB; a project export of
    100,000 tasks made them most of the daemon's memory, while its snapshot reads only these.
    """

    id: str | None = None
    name: str | None = None
    subset: str | None = None
    #: Scheme and host of the task's first job URL (see :func:`base_url_of`), or None.
    base_url: str | None = None

    @classmethod
    def of(cls, task: Task) -> TaskBrief:
        return cls(task.id, task.name, task.subset, base_url_of((task,)))


@attrs.frozen
class ExportBrief:
    """An :class:`ExportSummary` with its project and tasks reduced to what the daemon compares.

    ``cvatxml.load_brief`` reads it with the checks and errors of ``load_summary``;
    ``ExportSummary.brief()`` gives the same value from a summary.
    """

    kind: ExportKind
    project_id: str | None = None
    project_name: str | None = None
    tasks: tuple[TaskBrief, ...] = _items()
    image_counts: Mapping[str | None, int] = attrs.field(factory=dict)
    shape_counts: Mapping[str | None, int] = attrs.field(factory=dict)

    @property
    def job_id(self) -> str | None:
        """As :attr:`ExportSummary.job_id`."""
        return _job_id_of(self.kind, self.tasks)

    @property
    def base_url(self) -> str | None:
        """As :func:`base_url_of` of the summary's tasks: the first task's with a job URL."""
        return next((task.base_url for task in self.tasks if task.base_url is not None), None)


@attrs.frozen(cache_hash=False)
class Annotations(ExportQueries):
    """A CVAT export (``CVAT for images/video 1.1``) and the job status kept beside it.

    Build one with :meth:`from_path`; ask it which tasks are completed, which images belong to
    them and where in CVAT an image opens; write it back with :meth:`save`.
    """

    version: str = "1.1"
    project: Project | None = None
    tasks: tuple[Task, ...] = _items()
    images: tuple[ImageAnnotation, ...] = _items()
    tracks: tuple[Track, ...] = _items()
    job_status: tuple[JobStatus, ...] = _items()
    #: Which meta element described the export: ``project``, ``task`` or ``job``.
    kind: ExportKind = attrs.field(default="task", kw_only=True)
    dumped: str | None = attrs.field(default=None, kw_only=True)
    source: str | None = attrs.field(default=None, kw_only=True)
    meta_extra: tuple[XmlElement, ...] = _items()
    #: Where the export and the job status were read from; not content, so not part of equality.
    path: Path | None = attrs.field(default=None, eq=False, kw_only=True)
    job_status_path: Path | None = attrs.field(default=None, eq=False, kw_only=True)
    xml_layout: tuple[str, ...] | None = _layout()

    # -- construction and output --------------------------------------------------------------

    @classmethod
    def from_path(
        cls,
        xml_annotation_path: str | typing.Any,
        job_status_path: str | typing.Any | None = None,
    ) -> Annotations:
        """Load a CVAT XML export and, optionally, the job-status file beside it."""
        from cvat_watch import cvatxml, jobstatus  # the readers sit above the model; import on use

        annotations = cvatxml.load(xml_annotation_path)
        if job_status_path is None:
            return annotations
        records = jobstatus.load_job_status(job_status_path)
        return attrs.evolve(annotations, job_status=records, job_status_path=Path(job_status_path))

    def save(self, path: str | typing.Any) -> None:
        """Write the export as CVAT XML, atomically (temporary file, then rename)."""
        from cvat_watch import cvatxml

        cvatxml.save(self, path)

    def to_dict(self) -> dict[str, typing.Any]:
        """JSON-ready data (the package's one cattrs converter)."""
        from cvat_watch.converter import to_dict

        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, typing.Any]) -> Annotations:
        from cvat_watch.converter import from_dict

        return from_dict(cls, data)

    def summary(self) -> ExportSummary:
        """The meta and per-task image and shape counts (what the daemon compares)."""
        images: dict[str | None, int] = {}
        shapes: dict[str | None, int] = {}
        # A job export's meta id is the job's, not a task's: its counts go under None.
        single = _single_task_id(self.kind, self.tasks)
        for image in self.images:
            task_id = image.task_id if image.task_id is not None else single
            images[task_id] = images.get(task_id, 0) + 1
            shapes[task_id] = shapes.get(task_id, 0) + image.shape_count
        for track in self.tracks:
            task_id = track.task_id if track.task_id is not None else single
            shapes[task_id] = shapes.get(task_id, 0) + len(track.shapes)
        return ExportSummary(
            kind=self.kind,
            project=self.project,
            tasks=self.tasks,
            image_counts=images,
            shape_counts=shapes,
        )

    def __repr__(self) -> str:
        # The default repr would print every shape of a 100 MB export.
        where = f" {str(self.path)!r}" if self.path else ""
        return (
            f"<Annotations{where} {self.kind} export: {len(self.tasks)} tasks, "
            f"{len(self.images)} images, {len(self.tracks)} tracks, {len(self.job_status)} jobs>"
        )
