"""The CVAT export model: frozen attrs values and the questions people ask of them.

Nothing here reads or writes files, XML or JSON: :mod:`cvat_watch.cvatxml` and :mod:`cvat_watch.jobstatus`
are the filters between the files and these classes. The one way up is ``Annotations.from_path`` /
``Annotations.save``, which import those modules when called.

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

import re
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import attrs

__all__ = [
    "COMPLETED",
    "NON_COUNTING_JOB_TYPES",
    "Annotations",
    "Attribute",
    "Box",
    "Cuboid",
    "Ellipse",
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
    "Track",
    "TrackedShape",
    "User",
    "XmlElement",
    "base_url_of",
    "job_id_from_url",
    "job_url",
    "project_url",
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


_JOB_ID_PATTERNS = (
    re.compile(r"/api/jobs/(\d+)"),  # CVAT 2.x
    re.compile(r"[?&]id=(\d+)"),  # CVAT 1.x ``/?id=N``
    re.compile(r"/jobs/(\d+)"),  # UI links ``/tasks/T/jobs/N``
)


def job_id_from_url(url: str | None) -> str | None:
    """The job id in a segment URL (``…/api/jobs/12`` or the old ``…/?id=12``), or None."""
    if not url:
        return None
    for pattern in _JOB_ID_PATTERNS:
        match = pattern.search(url)
        if match:
            return match.group(1)
    return None


def base_url_of(tasks: Iterable[Task]) -> str | None:
    """Scheme and host of the first job URL among ``tasks`` (``http://localhost:8080``), or None."""
    for task in tasks:
        for segment in task.segments:
            if segment.url:
                parts = urlsplit(segment.url)
                if parts.scheme and parts.netloc:
                    return f"{parts.scheme}://{parts.netloc}"
    return None


def task_url(base_url: str | None, task_id: str | int) -> str | None:
    """``{base}/tasks/{id}``: where CVAT opens the task; None without a base URL."""
    return f"{base_url.rstrip('/')}/tasks/{task_id}" if base_url else None


def project_url(base_url: str | None, project_id: str | int) -> str | None:
    """``{base}/projects/{id}``: where CVAT opens the project; None without a base URL."""
    return f"{base_url.rstrip('/')}/projects/{project_id}" if base_url else None


def job_url(base_url: str | None, task_id: str | int, job_id: str | int) -> str | None:
    """``{base}/tasks/{task}/jobs/{job}``; None without a base URL."""
    return f"{base_url.rstrip('/')}/tasks/{task_id}/jobs/{job_id}" if base_url else None


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


def is_task_complete(jobs: Sequence[JobStatus], rule: CompletionRule = "completed") -> bool:
    """The one rule for a task: at least one counting job, and every one done under ``rule``.

    ``jobs`` are the task's counting jobs (ground-truth and consensus jobs already left out).
    The library's queries, the daemon's snapshot and the CLI's report all ask this function.
    """
    return bool(jobs) and all(job.is_done(rule) for job in jobs)


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


@attrs.frozen(cache_hash=False)
class Annotations:
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
        single = self.tasks[0].id if len(self.tasks) == 1 else None
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

    # -- tasks and jobs -----------------------------------------------------------------------

    def get_task(self, task_id: str | int) -> Task:
        """The task with this id; LookupError naming it when the export has none."""
        wanted = str(task_id)
        for task in self.tasks:
            if task.id == wanted:
                return task
        raise LookupError(f"no task with id {wanted!r} in {self._describe()}")

    def jobs_of_task(self, task_id: str | int) -> list[JobStatus]:
        """The counting jobs of a task (ground-truth and consensus jobs left out), in file order."""
        wanted = str(task_id)
        return [job for job in self.job_status if job.task_id == wanted and job.counts]

    def jobs_by_task(self) -> dict[str, list[JobStatus]]:
        """Task id → its counting jobs in file order, in one pass (for questions about every task)."""
        grouped: dict[str, list[JobStatus]] = {}
        for job in self.job_status:
            if job.counts:
                grouped.setdefault(job.task_id, []).append(job)
        return grouped

    def get_task_status(self, task_id: str | int) -> dict[str, str]:
        """Job id → state for the task's counting jobs, e.g. ``{"5678": "completed", "5679": "new"}``."""
        return {job.job_id: job.state for job in self.jobs_of_task(task_id)}

    def is_task_completed(self, task_id: str | int, *, rule: CompletionRule = "completed") -> bool:
        """At least one counting job, and every one completed (and, for ``accepted``, at acceptance)."""
        return is_task_complete(self.jobs_of_task(task_id), rule)

    def get_completed_task_ids(self, *, rule: CompletionRule = "completed") -> list[str]:
        """The ids of the export's tasks that are completed, in file order."""
        done = self._done_task_ids(rule)
        return [task.id for task in self.tasks if task.id is not None and task.id in done]

    def get_completed_tasks(self, *, rule: CompletionRule = "completed") -> list[Task]:
        done = self._done_task_ids(rule)
        return [task for task in self.tasks if task.id is not None and task.id in done]

    def _done_task_ids(self, rule: CompletionRule) -> set[str]:
        return {task_id for task_id, jobs in self.jobs_by_task().items() if is_task_complete(jobs, rule)}

    # -- images -------------------------------------------------------------------------------

    def images_of_task(self, task_id: str | int) -> list[ImageAnnotation]:
        wanted = str(task_id)
        return [image for image in self.images if image.task_id == wanted]

    def get_images_from_completed_tasks(self, *, rule: CompletionRule = "completed") -> list[ImageAnnotation]:
        """The images whose task is completed, in file order."""
        done = set(self.get_completed_task_ids(rule=rule))
        return [image for image in self.images if image.task_id in done]

    def get_image(self, image_name: str) -> ImageAnnotation:
        """The first image with this name; LookupError naming it when there is none."""
        for image in self.images:
            if image.name == image_name:
                return image
        raise LookupError(f"no image named {image_name!r} in {self._describe()}")

    def frame_of_image(self, image: ImageAnnotation) -> int:
        """The image's task-relative frame number: the numbering of segment start/stop."""
        task = self._task_of_image(image)
        frame = self._frame_from_meta(image, task)
        if frame is not None:
            return frame
        # The meta cannot explain the id (old or hand-made export): use the image's rank among
        # the images of its task (and subset) ordered by id.
        siblings = sorted(
            {
                _int_or_none(other.id) or 0
                for other in self.images
                if other.task_id == image.task_id and other.subset == image.subset
            }
        )
        return siblings.index(_int_or_none(image.id) or 0)

    def create_cvat_link(self, image_name: str, base_url: str | None = None) -> str:
        """``{base}/tasks/{task_id}/jobs/{job_id}?frame={frame}``: where CVAT opens this image.

        ``base`` defaults to the scheme and host of the export's own job URLs.
        """
        image = self.get_image(image_name)
        task = self._task_of_image(image)
        frame = self.frame_of_image(image)
        segment = task.segment_for_frame(frame)
        if segment is None:
            raise LookupError(
                f"no job of task {task.id} covers frame {frame} of image {image_name!r} in {self._describe()}"
            )
        base = self._base_url(base_url, image_name)
        return f"{base}/tasks/{task.id}/jobs/{segment.job_id}?frame={frame}"

    def task_url(self, task_id: str | int, base_url: str | None = None) -> str | None:
        """``{base}/tasks/{task_id}``, or None where no base URL is known."""
        return task_url(base_url or self.default_base_url(), task_id)

    def job_url(self, task_id: str | int, job_id: str | int, base_url: str | None = None) -> str | None:
        return job_url(base_url or self.default_base_url(), task_id, job_id)

    def default_base_url(self) -> str | None:
        """Scheme and host of the export's job URLs (``http://localhost:8080``), if it has any."""
        return base_url_of(self.tasks)

    def _base_url(self, base_url: str | None, image_name: str) -> str:
        if base_url:
            return base_url.rstrip("/")
        base = self.default_base_url()
        if base is None:
            raise ValueError(
                f"cannot link image {image_name!r}: {self._describe()} has no job URLs; pass base_url"
            )
        return base

    def _task_of_image(self, image: ImageAnnotation) -> Task:
        if image.task_id is not None:
            for task in self.tasks:
                if task.id == image.task_id:
                    return task
        if len(self.tasks) == 1:
            return self.tasks[0]
        raise LookupError(
            f"image {image.name!r} names task {image.task_id!r}, which {self._describe()} does not describe"
        )

    def _frame_from_meta(self, image: ImageAnnotation, task: Task) -> int | None:
        image_id = _int_or_none(image.id)
        if image_id is None or task.start_frame is None or task.size is None:
            return None
        offset: int | None = 0
        if self.kind == "project":
            offset = self._subset_offsets().get(task.id)
        if offset is None:
            return None
        frame, remainder = divmod(image_id - offset - task.start_frame, task.step)
        if remainder or not 0 <= frame < task.size:
            return None
        return frame

    def _subset_offsets(self) -> dict[str | None, int | None]:
        # CVAT numbers a project export's frames per subset: tasks ordered by (subset, id), each
        # task's frames shifted by start_frame + step * size of the earlier tasks of its subset.
        # After a task whose meta lacks those numbers, the offsets of its subset are unknown (None).
        offsets: dict[str | None, int | None] = {}
        running: dict[str | None, int | None] = {}
        ordered = sorted(self.tasks, key=lambda t: (t.subset or "", _int_or_none(t.id) or 0))
        for task in ordered:
            offset = running.get(task.subset, 0)
            offsets[task.id] = offset
            if offset is None or task.start_frame is None or task.size is None:
                running[task.subset] = None
            else:
                running[task.subset] = offset + task.start_frame + task.step * task.size
        return offsets

    def _describe(self) -> str:
        return str(self.path) if self.path else "the export"


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
