"""Realistic CVAT XML exports and job-status files, deterministic by seed, written fast.

The XML is byte-for-byte what CVAT's exporter writes ("CVAT for images 1.1", "CVAT for video 1.1"),
as read from cvat-ai/cvat ``cvat/apps/dataset_manager/formats/cvat.py`` (``create_xml_dumper``,
``dump_as_cvat_annotation``, ``dump_as_cvat_interpolation``) and ``bindings.py`` (``meta_for_task``,
``ProjectData``): an ``XMLGenerator`` with attributes in insertion order, every element opened and
closed on its own indented line (two spaces a level, no self-closing tags), coordinates as ``{:.2f}``,
and a trailing newline after ``</annotations>``.

What follows CVAT's ordering rules, because a loader must cope with them:

- project export: ``<meta><project><tasks>`` lists tasks ordered by (subset, id), but ``<image>``
  elements come in task-id order; image ids restart at 0 for every subset and are offset by the sizes
  of the subset's earlier tasks.
- shapes inside an image are sorted by ``z_order``; tags follow the shapes.
- video: every frame of a track is written (keyframe="0" between keyframes), then one ``outside="1"`` keyframe
  unless the track runs to the end; track ids count from 0 across the whole file.

Job ids are allocated in blocks of ``jobs_per_task`` per task, in task-id order, from ``first_job_id``;
a job-status file built from the same task ids and ``jobs_per_task`` (or from the returned
:class:`ExportInfo`) agrees with the segments of the XML.

Run ``python -m benchmarks.generate --help``.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TextIO, Union
from xml.sax.saxutils import escape, quoteattr

import attrs

__all__ = [
    "DEFAULT_FIRST_JOB_ID",
    "DEFAULT_FIRST_TASK_ID",
    "GENERATOR_VERSION",
    "ExportInfo",
    "JobStatusInfo",
    "Segment",
    "TaskPlan",
    "frame_offsets",
    "generate_export",
    "generate_job_status",
    "job_ids_for",
    "main",
    "plan_tasks",
]

Kind = Literal["project", "task"]
Media = Literal["images", "video"]
JobStatusShape = Literal["rest", "flat"]

# Bump when the bytes written for the same arguments change, so that cached benchmark files are rebuilt.
GENERATOR_VERSION = 1
DEFAULT_FIRST_TASK_ID = 11
DEFAULT_FIRST_JOB_ID = 101
HOST = "http://localhost:8080"
XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
_CLOSING = "\n</annotations>\n"

# Interleaved on purpose: CVAT lists project tasks by (subset, id) but writes images by task id, so the
# two orders differ and per-subset frame offsets are not monotonic in the file.
_SUBSET_CYCLE = ("Train", "Validation", "Train", "Test", "Train")
_RESOLUTIONS = ((1920, 1080), (1280, 720), (1280, 960), (640, 480), (2448, 2048), (4032, 3024))
_USERS = ("anna", "bruno", "chen", "dmitri", "eva", "farid")
_OWNER = "lead-annotator"
_EPOCH = dt.datetime(2024, 1, 8, 9, 0, tzinfo=dt.UTC)

# Share of each kind among top-level annotations, per thousand: boxes and polygons dominate real exports.
_IMAGE_MIX = {
    "box": 600,
    "polygon": 300,
    "polyline": 25,
    "points": 20,
    "ellipse": 15,
    "skeleton": 12,
    "cuboid": 10,
    "mask": 10,
    "tag": 8,
}
_VIDEO_MIX = {"box": 600, "polygon": 300, "polyline": 40, "points": 40, "ellipse": 20}
_CUBOID_FORMAT = "".join(
    f' {corner}="%.2f"'
    for corner in (
        "xtl1", "ytl1", "xbl1", "ybl1", "xtr1", "ytr1", "xbr1", "ybr1",
        "xtl2", "ytl2", "xbl2", "ybl2", "xtr2", "ytr2", "xbr2", "ybr2",
    )
)  # fmt: skip


# --- plan values


@attrs.frozen
class Segment:
    """One CVAT segment and the annotation job that works on it (task-relative frames, inclusive)."""

    id: int
    job_id: int
    start: int
    stop: int


@attrs.frozen
class TaskPlan:
    """Everything the export says about one task."""

    id: int
    name: str
    subset: str
    size: int
    width: int
    height: int
    segments: tuple[Segment, ...]


@attrs.frozen
class ExportInfo:
    """What :func:`generate_export` wrote: counts to check a loader against, and the job ids."""

    path: Path
    bytes: int
    kind: Kind
    media: Media
    tasks: int
    jobs: Mapping[int, tuple[int, ...]]
    images: int
    shapes: int
    task_plans: tuple[TaskPlan, ...]

    def __repr__(self) -> str:
        # Short on purpose: the task plans of a large export would fill a screen.
        return (
            f"ExportInfo(path={str(self.path)!r}, bytes={self.bytes}, kind={self.kind!r}, "
            f"media={self.media!r}, tasks={self.tasks}, jobs={sum(map(len, self.jobs.values()))}, "
            f"images={self.images}, shapes={self.shapes})"
        )


@attrs.frozen
class JobStatusInfo:
    """What :func:`generate_job_status` wrote: each job's state and the tasks whose jobs are all completed."""

    path: Path
    states: Mapping[int, str]
    completed_tasks: frozenset[int]


def job_ids_for(
    task_ids: Sequence[int], jobs_per_task: int, *, first_job_id: int = DEFAULT_FIRST_JOB_ID
) -> dict[int, tuple[int, ...]]:
    """Job ids per task as the generator allocates them: consecutive blocks, in the order of ``task_ids``."""
    return {
        task_id: tuple(range(first_job_id + i * jobs_per_task, first_job_id + (i + 1) * jobs_per_task))
        for i, task_id in enumerate(task_ids)
    }


def plan_tasks(
    *,
    images: int,
    tasks: int,
    jobs_per_task: int,
    media: Media = "images",
    seed: int = 0,
    first_task_id: int = DEFAULT_FIRST_TASK_ID,
    first_job_id: int = DEFAULT_FIRST_JOB_ID,
    first_segment_id: int | None = None,
) -> tuple[TaskPlan, ...]:
    """Split ``images`` frames over ``tasks`` tasks of ``jobs_per_task`` segments each, in task-id order."""
    if tasks < 1 or jobs_per_task < 1:
        raise ValueError("tasks and jobs_per_task must be at least 1")
    if images < tasks * jobs_per_task:
        raise ValueError(
            f"{images} images cannot fill {tasks} tasks x {jobs_per_task} jobs (one frame per job at least)"
        )
    rng = random.Random(f"plan:{seed}")
    # Video jobs overlap by a few frames, as CVAT's default for video tasks does.
    overlap = 5 if media == "video" else 0
    segment_offset = 0 if first_segment_id is None else first_segment_id - first_job_id
    job_ids = job_ids_for([first_task_id + i for i in range(tasks)], jobs_per_task, first_job_id=first_job_id)
    plans = []
    for i in range(tasks):
        task_id = first_task_id + i
        size = images // tasks + (1 if i < images % tasks else 0)
        subset = _SUBSET_CYCLE[i % len(_SUBSET_CYCLE)] if tasks > 1 else "Train"
        width, height = _RESOLUTIONS[rng.randrange(len(_RESOLUTIONS))]
        segments = []
        for j, job_id in enumerate(job_ids[task_id]):
            start = j * size // jobs_per_task
            stop = min(size - 1, (j + 1) * size // jobs_per_task - 1 + overlap)
            segments.append(Segment(id=job_id + segment_offset, job_id=job_id, start=start, stop=stop))
        name = f"{'drive' if media == 'video' else subset.lower()}-batch-{i + 1:04d}"
        plans.append(TaskPlan(task_id, name, subset, size, width, height, tuple(segments)))
    return tuple(plans)


# --- labels


@attrs.frozen
class _AttrSpec:
    name: str
    mutable: bool
    input_type: str
    default: str
    values: tuple[str, ...]


@attrs.frozen
class _Label:
    name: str
    color: str
    type: str
    attributes: tuple[_AttrSpec, ...] = ()
    parent: str | None = None


_SKELETON_NODES = ("head", "left hand", "right hand", "left foot", "right foot")
_SKELETON_LAYOUT = ((0.5, 0.1), (0.15, 0.45), (0.85, 0.45), (0.3, 0.95), (0.7, 0.95))
_SKELETON_EDGES = ((1, 2), (1, 3), (1, 4), (1, 5))

_LABELS = (
    _Label(
        "car",
        "#fa3253",
        "any",
        (
            _AttrSpec(
                "color", False, "select", "white", ("white", "black", "silver", "red", "blue", "other")
            ),
            _AttrSpec("parked", True, "checkbox", "false", ("false",)),
        ),
    ),
    _Label(
        "person",
        "#34d1b7",
        "any",
        (
            _AttrSpec("pose", True, "radio", "standing", ("standing", "sitting", "lying", "walking")),
            _AttrSpec("age", False, "number", "30", ("0", "120", "1")),
        ),
    ),
    _Label("bicycle", "#ff6037", "any"),
    _Label("traffic sign", "#ddff33", "any", (_AttrSpec("text", False, "text", "", ("",)),)),
    _Label("truck & trailer", "#b83df5", "rectangle"),
    _Label(
        "road",
        "#3d3df5",
        "polygon",
        (_AttrSpec("surface", False, "select", "asphalt", ("asphalt", "gravel", "dirt", "cobblestone")),),
    ),
    _Label("lane", "#fafa37", "polyline"),
    _Label("keypoint", "#ff00cc", "points"),
    _Label("face", "#33ddff", "ellipse"),
    _Label("vehicle 3d", "#aaf0d1", "cuboid"),
    _Label("stain", "#8c78f0", "mask"),
    _Label("pose", "#0c81b5", "skeleton"),
    *(
        _Label(node, f"#{0x20 + 0x30 * k:02x}a0{0xF0 - 0x28 * k:02x}", "points", parent="pose")
        for k, node in enumerate(_SKELETON_NODES)
    ),
    _Label(
        "scene",
        "#ffcc33",
        "tag",
        (_AttrSpec("weather", False, "select", "sunny", ("sunny", "cloudy", "rain", "snow")),),
    ),
)
_LABEL_BY_NAME = {label.name: label for label in _LABELS}

_LABELS_FOR_KIND = {
    "box": ("car", "car", "person", "person", "bicycle", "traffic sign", "truck & trailer"),
    "polygon": ("road", "car", "person"),
    "polyline": ("lane",),
    "points": ("keypoint",),
    "ellipse": ("face",),
    "cuboid": ("vehicle 3d",),
    "mask": ("stain",),
    "skeleton": ("pose",),
    "tag": ("scene",),
}
_SIGN_TEXTS = ("STOP", "YIELD", "50", "NO ENTRY", "", "Überholverbot", "一方通行", "Ausfahrt 12")


def _skeleton_svg() -> str:
    parts = []
    for a, b in _SKELETON_EDGES:
        (x1, y1), (x2, y2) = _SKELETON_LAYOUT[a - 1], _SKELETON_LAYOUT[b - 1]
        parts.append(
            f'<line x1="{x1 * 100}" y1="{y1 * 100}" x2="{x2 * 100}" y2="{y2 * 100}" stroke="black" '
            f'data-type="edge" data-node-from="{a}" stroke-width="0.5" data-node-to="{b}"></line>'
        )
    for k, ((x, y), node) in enumerate(zip(_SKELETON_LAYOUT, _SKELETON_NODES, strict=True), start=1):
        parts.append(
            f'<circle r="1.5" stroke="black" fill="#b3b3b3" cx="{x * 100}" cy="{y * 100}" stroke-width="0.1" '
            f'data-type="element node" data-element-id="{k}" data-node-id="{k}" '
            f'data-label-name="{node}"></circle>'
        )
    return "".join(parts)


# --- meta

# The nested form CVAT's ``_add_meta`` walks: a dict is one element with children, a list holds repeated
# (tag, dict) children, a string is text.
MetaValue = Union[str, "MetaDict", "MetaList"]
MetaDict = dict[str, MetaValue]
MetaList = list[tuple[str, MetaValue]]


def _write_meta(out: list[str], node: MetaDict, level: int) -> None:
    pad = "\n" + "  " * level
    for key, value in node.items():
        if isinstance(value, dict):
            out.append(f"{pad}<{key}>")
            _write_meta(out, value, level + 1)
            out.append(f"{pad}</{key}>")
        elif isinstance(value, list):
            out.append(f"{pad}<{key}>")
            for child_key, child in value:
                _write_meta(out, {child_key: child}, level + 1)
            out.append(f"{pad}</{key}>")
        else:
            out.append(f"{pad}<{key}>{escape(value)}</{key}>")


def _timestamp(rng: random.Random, *, after: dt.datetime = _EPOCH, days: float = 30.0) -> dt.datetime:
    return after + dt.timedelta(seconds=rng.random() * days * 86400, microseconds=rng.randrange(1_000_000))


def _user(name: str) -> MetaDict:
    return {"username": name, "email": f"{name}@example.com"}


def _labels_meta() -> MetaList:
    labels: MetaList = []
    for label in _LABELS:
        node: MetaDict = {
            "name": label.name,
            "color": label.color,
            "type": label.type,
            "attributes": [
                (
                    "attribute",
                    {
                        "name": spec.name,
                        "mutable": str(spec.mutable),
                        "input_type": spec.input_type,
                        "default_value": spec.default,
                        "values": "\n".join(spec.values),
                    },
                )
                for spec in label.attributes
            ],
        }
        if label.parent is not None:
            node["parent"] = label.parent
        if label.type == "skeleton":
            node["svg"] = _skeleton_svg()
        labels.append(("label", node))
    return labels


def _task_meta(plan: TaskPlan, media: Media, rng: random.Random, *, with_labels: bool) -> MetaDict:
    created = _timestamp(rng)
    assignee = _USERS[rng.randrange(len(_USERS))] if rng.random() < 0.4 else None
    meta: MetaDict = {
        "id": str(plan.id),
        "name": plan.name,
        "size": str(plan.size),
        "mode": "interpolation" if media == "video" else "annotation",
        "overlap": "5" if media == "video" else "0",
        "bugtracker": "" if rng.random() < 0.9 else f"https://tracker.example.com/issues/{plan.id}",
        "created": str(created),
        "updated": str(_timestamp(rng, after=created, days=20)),
        "subset": plan.subset,
        "start_frame": "0",
        "stop_frame": str(plan.size - 1),
        "frame_filter": "",
        "segments": [
            (
                "segment",
                {
                    "id": str(segment.id),
                    "start": str(segment.start),
                    "stop": str(segment.stop),
                    "url": f"{HOST}/api/jobs/{segment.job_id}",
                },
            )
            for segment in plan.segments
        ],
        "owner": _user(_OWNER),
        "assignee": _user(assignee) if assignee else "",
    }
    if with_labels:
        meta["labels"] = _labels_meta()
    if media == "video":
        meta["original_size"] = {"width": str(plan.width), "height": str(plan.height)}
        meta["source"] = f"{plan.name}.mp4"
    return meta


def _meta_xml(
    kind: Kind, media: Media, plans: Sequence[TaskPlan], rng: random.Random, project_id: int
) -> str:
    meta: MetaDict
    if kind == "task":
        meta = {"task": _task_meta(plans[0], media, rng, with_labels=True)}
    else:
        ordered = sorted(plans, key=lambda plan: (plan.subset, plan.id))
        subsets = list(dict.fromkeys(plan.subset for plan in ordered))
        created = _timestamp(rng, days=5)
        meta = {
            "project": {
                "id": str(project_id),
                "name": "road scenes",
                "bugtracker": "",
                "created": str(created),
                "updated": str(_timestamp(rng, after=created, days=40)),
                "tasks": [("task", _task_meta(plan, media, rng, with_labels=False)) for plan in ordered],
                "subsets": "\n".join(subsets),
                "owner": _user(_OWNER),
                "assignee": "",
                "labels": _labels_meta(),
            }
        }
    meta["dumped"] = str(_timestamp(rng, after=_EPOCH + dt.timedelta(days=60), days=1))
    out = [XML_DECLARATION, "<annotations>\n  <version>1.1</version>\n  <meta>"]
    _write_meta(out, meta, 2)
    out.append("\n  </meta>")
    return "".join(out)


def frame_offsets(plans: Sequence[TaskPlan]) -> dict[int, int]:
    """CVAT's per-task frame offset in a project export: the sizes of the subset's earlier tasks."""
    offsets: dict[int, int] = {}
    running: dict[str, int] = {}
    for plan in sorted(plans, key=lambda plan: (plan.subset, plan.id)):
        offsets[plan.id] = running.get(plan.subset, 0)
        running[plan.subset] = offsets[plan.id] + plan.size
    return offsets


# --- shapes


def _weighted_table(weights: Mapping[str, int], size: int = 1000) -> list[str]:
    """A list where a uniform index draws a key with the given weights (cheaper than random.choices)."""
    keys = list(weights)
    cumulative = []
    total = 0
    for key in keys:
        total += weights[key]
        cumulative.append(total)
    return [keys[bisect.bisect_right(cumulative, i * total / size)] for i in range(size)]


def _attribute_blocks(rng: random.Random, label: _Label, indent: str, count: int = 24) -> list[str]:
    """Pre-rendered ``<attribute>`` children for a label; drawing one per shape keeps the hot loop cheap."""
    if not label.attributes:
        return [""]
    blocks = []
    for _ in range(count):
        parts = []
        for spec in label.attributes:
            if spec.input_type in ("select", "radio"):
                value = spec.values[rng.randrange(len(spec.values))]
            elif spec.input_type == "checkbox":
                value = "true" if rng.random() < 0.3 else "false"
            elif spec.input_type == "number":
                value = str(rng.randrange(int(spec.values[0]), int(spec.values[1]) + 1))
            else:
                value = _SIGN_TEXTS[rng.randrange(len(_SIGN_TEXTS))]
            parts.append(f"{indent}<attribute name={quoteattr(spec.name)}>{escape(value)}</attribute>")
        blocks.append("".join(parts))
    return blocks


class _Shapes:
    """Renders the shapes of images and of video tracks as CVAT writes them; all draws from one rng."""

    def __init__(self, rng: random.Random, mix: Mapping[str, int]) -> None:
        self.rng = rng
        self.kinds = _weighted_table(mix)
        self.labels = {
            kind: [
                (quoteattr(name), _attribute_blocks(rng, _LABEL_BY_NAME[name], "\n      ")) for name in names
            ]
            for kind, names in _LABELS_FOR_KIND.items()
        }
        # source / occluded / z_order / group_id in their real proportions, pre-drawn as attribute text.
        self.sources = _weighted_table({"manual": 85, "auto": 10, "semi-auto": 5}, 100)
        self.occluded = _weighted_table({"0": 9, "1": 1}, 100)
        self.z_orders = [int(z) for z in _weighted_table({"0": 80, "1": 12, "2": 5, "3": 3}, 100)]
        self.point_formats = {k: ";".join(["%.2f,%.2f"] * k) for k in range(1, 32)}

    def _label(self, kind: str) -> tuple[str, str]:
        choices = self.labels[kind]
        qlabel, blocks = choices[int(self.rng.random() * len(choices))]
        return qlabel, blocks[int(self.rng.random() * len(blocks))]

    def _group(self) -> str:
        return f' group_id="{1 + int(self.rng.random() * 4)}"' if self.rng.random() < 0.02 else ""

    # --- geometry in image coordinates, shared by image shapes and video tracks

    def box_geometry(self, width: int, height: int) -> tuple[float, float, float, float]:
        random_ = self.rng.random
        bw = width * (0.02 + 0.35 * random_() ** 2)
        bh = height * (0.02 + 0.35 * random_() ** 2)
        x = random_() * (width - bw)
        y = random_() * (height - bh)
        return x, y, x + bw, y + bh

    def polygon_points(self, width: int, height: int, vertices: int) -> list[float]:
        random_ = self.rng.random
        radius = min(width, height) * (0.03 + 0.2 * random_())
        cx = radius + random_() * (width - 2 * radius)
        cy = radius + random_() * (height - 2 * radius)
        step = 2 * math.pi / vertices
        phase = random_() * step
        coords = []
        for i in range(vertices):
            angle = phase + i * step
            r = radius * (0.6 + 0.4 * random_())
            coords.append(cx + r * math.cos(angle))
            coords.append(cy + r * math.sin(angle))
        return coords

    def polyline_points(self, width: int, height: int, vertices: int) -> list[float]:
        random_ = self.rng.random
        x, y = random_() * width, random_() * height
        dx, dy = (random_() - 0.5) * width / vertices, (random_() - 0.5) * height / vertices
        coords = []
        for _ in range(vertices):
            coords.append(min(max(x, 0.0), width))
            coords.append(min(max(y, 0.0), height))
            x += dx * (0.5 + random_())
            y += dy * (0.5 + random_())
        return coords

    def scattered_points(self, width: int, height: int, count: int) -> list[float]:
        random_ = self.rng.random
        coords = []
        for _ in range(count):
            coords.append(random_() * width)
            coords.append(random_() * height)
        return coords

    # --- image shapes: (z_order, xml) pairs, level 2

    def image_shapes(self, width: int, height: int, count: int) -> tuple[str, int]:
        random_ = self.rng.random
        kinds = self.kinds
        shapes: list[tuple[int, str]] = []
        tags: list[str] = []
        for _ in range(count):
            kind = kinds[int(random_() * 1000)]
            if kind == "tag":
                qlabel, attrs_xml = self._label("tag")
                tags.append(
                    f'\n    <tag label={qlabel} source="{self.sources[int(random_() * 100)]}"{self._group()}>'
                    f"{attrs_xml}\n    </tag>"
                )
                continue
            z = self.z_orders[int(random_() * 100)]
            shapes.append((z, self._image_shape(kind, width, height, z)))
        shapes.sort(key=_first)
        return "".join([xml for _, xml in shapes] + tags), count

    def _image_shape(self, kind: str, width: int, height: int, z: int) -> str:
        random_ = self.rng.random
        qlabel, attrs_xml = self._label(kind)
        source = self.sources[int(random_() * 100)]
        if kind == "skeleton":
            # A skeleton has no occluded flag of its own; its <points> children carry outside/occluded.
            return (
                f'\n    <skeleton label={qlabel} source="{source}" z_order="{z}"{self._group()}>'
                f"{self._skeleton_elements(width, height, source)}{attrs_xml}\n    </skeleton>"
            )
        occluded = self.occluded[int(random_() * 100)]
        return (
            f'\n    <{kind} label={qlabel} source="{source}" occluded="{occluded}"'
            f'{self._geometry(kind, width, height)} z_order="{z}"{self._group()}>{attrs_xml}\n    </{kind}>'
        )

    def _geometry(self, kind: str, width: int, height: int) -> str:
        """The geometry attributes of one shape as CVAT orders them (before ``z_order``)."""
        random_ = self.rng.random
        if kind == "box":
            rotation = f' rotation="{random_() * 360:.2f}"' if random_() < 0.05 else ""
            x1, y1, x2, y2 = self.box_geometry(width, height)
            return f' xtl="{x1:.2f}" ytl="{y1:.2f}" xbr="{x2:.2f}" ybr="{y2:.2f}"{rotation}'
        if kind == "polygon":
            vertices = 4 + int(random_() * 13)
            coords = self.polygon_points(width, height, vertices)
            return f' points="{self.point_formats[vertices] % tuple(coords)}"'
        if kind == "polyline":
            vertices = 2 + int(random_() * 9)
            coords = self.polyline_points(width, height, vertices)
            return f' points="{self.point_formats[vertices] % tuple(coords)}"'
        if kind == "points":
            count = 1 + int(random_() * 8)
            coords = self.scattered_points(width, height, count)
            return f' points="{self.point_formats[count] % tuple(coords)}"'
        if kind == "ellipse":
            rx, ry = width * (0.01 + 0.1 * random_()), height * (0.01 + 0.1 * random_())
            cx, cy = rx + random_() * (width - 2 * rx), ry + random_() * (height - 2 * ry)
            rotation = f' rotation="{random_() * 360:.2f}"' if random_() < 0.1 else ""
            return f' cx="{cx:.2f}" cy="{cy:.2f}" rx="{rx:.2f}" ry="{ry:.2f}"{rotation}'
        if kind == "cuboid":
            x1, y1, x2, y2 = self.box_geometry(width, height)
            # The back face sits up and to the right of the front one, still inside the image.
            dx = min(width - x2, (x2 - x1) * (0.1 + 0.3 * random_()))
            dy = -min(y1, (y2 - y1) * (0.05 + 0.2 * random_()))
            return _CUBOID_FORMAT % (
                x1, y1, x1, y2, x2, y1, x2, y2,
                x1 + dx, y1 + dy, x1 + dx, y2 + dy, x2 + dx, y1 + dy, x2 + dx, y2 + dy,
            )  # fmt: skip
        if kind == "mask":
            mask_width, mask_height = 8 + int(random_() * 72), 8 + int(random_() * 72)
            left = int(random_() * (width - mask_width))
            top = int(random_() * (height - mask_height))
            rle = ", ".join(map(str, self._rle(mask_width * mask_height)))
            return f' rle="{rle}" left="{left}" top="{top}" width="{mask_width}" height="{mask_height}"'
        raise AssertionError(kind)

    def _rle(self, total: int) -> list[int]:
        """Alternating background/foreground run lengths that cover the mask exactly, background first."""
        random_ = self.rng.random
        runs_wanted = 2 + int(random_() * 30)
        mean = max(1, total // runs_wanted)
        runs = [int(random_() * mean)]
        remaining = total - runs[0]
        while remaining > 0 and len(runs) < runs_wanted - 1:
            run = min(remaining, 1 + int(random_() * 2 * mean))
            runs.append(run)
            remaining -= run
        if remaining:
            runs.append(remaining)
        return runs

    def _skeleton_elements(self, width: int, height: int, source: str) -> str:
        random_ = self.rng.random
        size = min(width, height) * (0.1 + 0.3 * random_())
        x0, y0 = random_() * (width - size), random_() * (height - size)
        parts = []
        for node, (fx, fy) in zip(_SKELETON_NODES, _SKELETON_LAYOUT, strict=True):
            outside = "1" if random_() < 0.05 else "0"
            occluded = self.occluded[int(random_() * 100)]
            x = x0 + fx * size + (random_() - 0.5) * 4
            y = y0 + fy * size + (random_() - 0.5) * 4
            parts.append(
                f'\n      <points label="{node}" source="{source}" outside="{outside}" occluded="{occluded}"'
                f' points="{x:.2f},{y:.2f}">\n      </points>'
            )
        return "".join(parts)

    # --- video tracks, level 1 with shapes at level 2

    def track(
        self, track_id: int, extra: str, frames: int, offset: int, width: int, height: int, budget: int
    ) -> tuple[str, int, int]:
        """One track of up to ``budget`` visible frames: its XML, visible frames and shape elements."""
        random_ = self.rng.random
        kind = self.kinds[int(random_() * 1000)]
        qlabel, attrs_xml = self._label(kind)
        source = self.sources[int(random_() * 100)]
        start = int(random_() * frames)
        length = max(1, min(frames - start, budget, 5 + int(random_() * 120)))
        keyframe_every = 5 + int(random_() * 11)
        occluded = self.occluded[int(random_() * 100)]
        z = self.z_orders[int(random_() * 100)]
        if kind == "box":
            base = list(self.box_geometry(width, height))
        elif kind == "ellipse":
            x1, y1, x2, y2 = self.box_geometry(width, height)
            base = [(x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2]
        else:
            vertices = {"polygon": 4 + int(random_() * 13), "polyline": 2 + int(random_() * 9)}.get(
                kind, 1 + int(random_() * 8)
            )
            base = {
                "polygon": self.polygon_points,
                "polyline": self.polyline_points,
                "points": self.scattered_points,
            }[kind](width, height, vertices)
        # Linear motion, so that the keyframe="0" frames are what CVAT's interpolation would produce, and
        # bounded, so that the shape stays inside the frame for the whole track.
        if kind == "ellipse":
            cx, cy, rx, ry = base
            room = (rx - cx, width - rx - cx, ry - cy, height - ry - cy)
        else:
            xs, ys = base[0::2], base[1::2]
            room = (-min(xs), width - max(xs), -min(ys), height - max(ys))
        low_x, high_x = max(room[0], -0.15 * width), min(room[1], 0.15 * width)
        low_y, high_y = max(room[2], -0.15 * height), min(room[3], 0.15 * height)
        steps = max(1, length - 1)
        vx = (low_x + random_() * (high_x - low_x)) / steps
        vy = (low_y + random_() * (high_y - low_y)) / steps
        if kind == "box":
            geometry = ' xtl="%.2f" ytl="%.2f" xbr="%.2f" ybr="%.2f"'
            velocity: tuple[float, ...] = (vx, vy, vx, vy)
        elif kind == "ellipse":
            geometry = ' cx="%.2f" cy="%.2f" rx="%.2f" ry="%.2f"'
            velocity = (vx, vy, 0.0, 0.0)
        else:
            geometry = ' points="' + self.point_formats[len(base) // 2] + '"'
            velocity = (vx, vy) * (len(base) // 2)
        shape_open = f"\n    <{kind} frame="
        shape_close = f' z_order="{z}">{attrs_xml}\n    </{kind}>'
        out = [f'\n  <track id="{track_id}" label={qlabel} source="{source}"{extra}{self._group()}>']
        last = length - 1
        for t in range(length + (1 if start + length < frames else 0)):
            outside = t == length
            keyframe = outside or t == 0 or t == last or t % keyframe_every == 0
            step = min(t, last)
            coords = tuple(b + v * step for b, v in zip(base, velocity, strict=True))
            out.append(
                f'{shape_open}"{offset + start + t}" keyframe="{int(keyframe)}" outside="{int(outside)}" '
                f'occluded="{occluded}"{geometry % coords}{shape_close}'
            )
        out.append("\n  </track>")
        return "".join(out), length, len(out) - 2


def _first(pair: tuple[int, str]) -> int:
    return pair[0]


# --- rendering


@attrs.define
class _Counts:
    images: int = 0
    shapes: int = 0


def _render(
    *,
    kind: Kind,
    media: Media,
    plans: Sequence[TaskPlan],
    shapes_per_image: int,
    seed: int,
    project_id: int,
    counts: _Counts,
) -> Iterator[str]:
    """The export as chunks (one per image or track) so that the writer never holds the whole file."""
    rng = random.Random(seed)
    yield _meta_xml(kind, media, plans, random.Random(f"meta:{seed}"), project_id)
    offsets = frame_offsets(plans) if kind == "project" else {plan.id: 0 for plan in plans}
    shapes = _Shapes(rng, _VIDEO_MIX if media == "video" else _IMAGE_MIX)
    random_ = rng.random
    spread = shapes_per_image // 2
    image_number = 0
    track_id = 0
    for plan in sorted(plans, key=lambda plan: plan.id):
        offset = offsets[plan.id]
        if media == "video":
            extra = f' task_id="{plan.id}" subset={quoteattr(plan.subset)}' if kind == "project" else ""
            remaining = plan.size * shapes_per_image
            while remaining > 0:
                xml, visible, written = shapes.track(
                    track_id, extra, plan.size, offset, plan.width, plan.height, remaining
                )
                remaining -= visible
                track_id += 1
                counts.shapes += written
                yield xml
            counts.images += plan.size
            continue
        where = f' subset={quoteattr(plan.subset)} task_id="{plan.id}"' if kind == "project" else ""
        for frame in range(plan.size):
            image_number += 1
            width, height = plan.width, plan.height
            # A few images per task come from another camera, as in real mixed datasets.
            if random_() < 0.03:
                width, height = height, width
            # About 3% of images carry no annotation at all; CVAT still writes them (include_empty=True).
            empty = random_() < 0.03
            count = 0 if empty else shapes_per_image + int(random_() * (2 * spread + 1)) - spread
            body, written = shapes.image_shapes(width, height, count)
            counts.images += 1
            counts.shapes += written
            yield (
                f'\n  <image id="{offset + frame}" name="{plan.name}/img_{image_number:07d}.jpg"{where}'
                f' width="{width}" height="{height}">{body}\n  </image>'
            )
    yield _CLOSING


def _default_tasks(kind: Kind, images: int, jobs_per_task: int) -> int:
    if kind == "task":
        return 1
    return max(1, min(images // jobs_per_task, math.ceil(images / 1000)))


def _bytes_per_image(
    *, kind: Kind, media: Media, shapes_per_image: int, seed: int, sample: int
) -> dict[tuple[int, int], float]:
    """Measured cost of one image (or frame) at each resolution: coordinates get longer as images grow.

    Each resolution gets its own seed so that the sampling errors of the six samples average out instead of
    repeating (one image's size varies by about half its mean with the shape mix).
    """
    costs = {}
    for k, (width, height) in enumerate(_RESOLUTIONS):
        plan = TaskPlan(1, "sample", "Train", sample, width, height, (Segment(1, 1, 0, sample - 1),))
        chunks = _render(
            kind=kind,
            media=media,
            plans=(plan,),
            shapes_per_image=shapes_per_image,
            seed=seed * 1000 + k,
            project_id=1,
            counts=_Counts(),
        )
        next(chunks)  # the meta is measured on the real plan instead
        costs[(width, height)] = sum(len(chunk.encode()) for chunk in chunks) / sample
    return costs


def _images_for_target(
    target_bytes: int,
    make_plans: Callable[[int], tuple[TaskPlan, ...]],
    meta_bytes: Callable[[Sequence[TaskPlan]], int],
    *,
    costs: Mapping[tuple[int, int], float],
    minimum: int,
) -> int:
    """The image count whose plan is estimated closest to ``target_bytes`` (a few fixed-point steps)."""
    images = max(minimum, round(target_bytes / (sum(costs.values()) / len(costs))))
    for _ in range(6):
        plans = make_plans(images)
        estimate = meta_bytes(plans) + sum(plan.size * costs[(plan.width, plan.height)] for plan in plans)
        better = max(minimum, round(images * target_bytes / estimate))
        if better == images:
            break
        images = better
    return images


def generate_export(
    path: str | os.PathLike[str],
    *,
    kind: Kind = "project",
    media: Media = "images",
    images: int | None = None,
    target_mb: float | None = None,
    tasks: int | None = None,
    shapes_per_image: int = 20,
    jobs_per_task: int = 5,
    seed: int = 0,
    project_id: int = 7,
    first_task_id: int = DEFAULT_FIRST_TASK_ID,
    first_job_id: int = DEFAULT_FIRST_JOB_ID,
    first_segment_id: int | None = None,
) -> ExportInfo:
    """Write a CVAT export to ``path`` (atomically) and say what is in it.

    ``images`` counts frames for video. Give ``target_mb`` instead of ``images`` to pick the count
    that makes a file of about that many MB (10**6 bytes). ``tasks`` defaults to one per thousand
    images for a project export and must be 1 for a task export. ``first_segment_id`` makes segment
    ids differ from job ids, as they do on a CVAT server that also has ground-truth or consensus jobs.
    """
    if kind not in ("project", "task") or media not in ("images", "video"):
        raise ValueError(f"unknown kind/media {kind!r}/{media!r}")
    if kind == "task" and tasks not in (None, 1):
        raise ValueError("a task export holds exactly one task")
    if shapes_per_image < 0:
        raise ValueError("shapes_per_image must not be negative")
    if images is not None and target_mb is not None:
        raise ValueError("give images or target_mb, not both")

    def make_plans(count: int) -> tuple[TaskPlan, ...]:
        return plan_tasks(
            images=count,
            tasks=tasks if tasks is not None else _default_tasks(kind, count, jobs_per_task),
            jobs_per_task=jobs_per_task,
            media=media,
            seed=seed,
            first_task_id=first_task_id,
            first_job_id=first_job_id,
            first_segment_id=first_segment_id,
        )

    def meta_bytes(plans: Sequence[TaskPlan]) -> int:
        meta = _meta_xml(kind, media, plans, random.Random(f"meta:{seed}"), project_id)
        return len(meta.encode()) + len(_CLOSING)

    if target_mb is not None:
        images = _images_for_target(
            int(target_mb * 1_000_000),
            make_plans,
            meta_bytes,
            costs=_bytes_per_image(
                kind=kind,
                media=media,
                shapes_per_image=shapes_per_image,
                seed=seed,
                # Enough images to make the estimate good to a percent or two, few for small targets.
                sample=max(60, min(500, round(target_mb * 50))),
            ),
            minimum=jobs_per_task * (tasks or 1),
        )
    plans = make_plans(1000 if images is None else images)
    target = Path(path)
    partial = target.with_name(target.name + ".part")
    counts = _Counts()
    chunks = _render(
        kind=kind,
        media=media,
        plans=plans,
        shapes_per_image=shapes_per_image,
        seed=seed,
        project_id=project_id,
        counts=counts,
    )
    with open(partial, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as file:
        _write_batched(file, chunks)
    os.replace(partial, target)
    return ExportInfo(
        path=target,
        bytes=target.stat().st_size,
        kind=kind,
        media=media,
        tasks=len(plans),
        jobs=MappingProxyType({plan.id: tuple(s.job_id for s in plan.segments) for plan in plans}),
        images=counts.images,
        shapes=counts.shapes,
        task_plans=plans,
    )


def _write_batched(file: TextIO, chunks: Iterator[str], batch: int = 512) -> None:
    pending: list[str] = []
    for chunk in chunks:
        pending.append(chunk)
        if len(pending) >= batch:
            file.write("".join(pending))
            pending.clear()
    file.write("".join(pending))


# --- job status

# (stage, state) pairs of unfinished jobs on a CVAT server, with rough frequencies. The job that keeps a
# task open draws from the first table only, so no reading of "completed" (state, or stage and state)
# counts that task as done.
_WORKING_JOB_STATES = _weighted_table(
    {
        "annotation/new": 25,
        "annotation/in progress": 45,
        "validation/in progress": 20,
        "validation/rejected": 5,
        "annotation/rejected": 5,
    },
    100,
)
_OPEN_JOB_STATES = [*_WORKING_JOB_STATES[:90], *["validation/completed"] * 10]


def generate_job_status(
    path: str | os.PathLike[str],
    *,
    task_ids: Sequence[int] = (),
    jobs_per_task: int = 5,
    export: ExportInfo | None = None,
    completed_fraction: float = 0.5,
    seed: int = 0,
    shape: JobStatusShape = "rest",
    first_job_id: int = DEFAULT_FIRST_JOB_ID,
) -> JobStatusInfo:
    """Write a job-status file whose job ids match an export's segments.

    Give ``export`` (the :class:`ExportInfo` of :func:`generate_export`) for exact job ids, task
    names and frame ranges; or ``task_ids`` and ``jobs_per_task`` with the same ``first_job_id`` as
    the export (frame ranges are then nominal, 10 frames a job). ``completed_fraction`` of the tasks
    get every job at stage "acceptance", state "completed"; every other task has at least one job
    that is not. ``shape="rest"`` writes a CVAT ``GET
    /api/jobs`` page, ``shape="flat"`` a plain list of ``{"task_id": "12", "job_id": 34, ...}`` rows.
    """
    if not 0.0 <= completed_fraction <= 1.0:
        raise ValueError("completed_fraction must be within [0, 1]")
    if shape not in ("rest", "flat"):
        raise ValueError(f"unknown job-status shape {shape!r}")
    rng = random.Random(f"jobs:{seed}")
    if export is not None:
        tasks = [
            (plan.id, plan.name, [(s.job_id, s.start, s.stop) for s in plan.segments])
            for plan in export.task_plans
        ]
    else:
        tasks = [
            (task_id, f"task {task_id}", [(job_id, 10 * j, 10 * j + 9) for j, job_id in enumerate(job_ids)])
            for task_id, job_ids in job_ids_for(
                list(task_ids), jobs_per_task, first_job_id=first_job_id
            ).items()
        ]
    completed = frozenset(
        rng.sample([task_id for task_id, _, _ in tasks], round(completed_fraction * len(tasks)))
    )
    mode = "interpolation" if export is not None and export.media == "video" else "annotation"
    rows: list[dict[str, object]] = []
    states: dict[int, str] = {}
    for task_id, task_name, jobs in tasks:
        still_open = rng.randrange(len(jobs))
        for j, (job_id, start, stop) in enumerate(jobs):
            if task_id in completed or (j != still_open and rng.random() < 0.4):
                stage, state = "acceptance", "completed"
            elif j == still_open:
                stage, state = _WORKING_JOB_STATES[rng.randrange(100)].split("/")
            else:
                stage, state = _OPEN_JOB_STATES[rng.randrange(100)].split("/")
            assignee = _USERS[rng.randrange(len(_USERS))] if rng.random() < 0.7 else None
            states[job_id] = state
            rows.append(
                {
                    "job_id": job_id,
                    "task_id": task_id,
                    "task_name": task_name,
                    "stage": stage,
                    "state": state,
                    "assignee": assignee,
                    "start": start,
                    "stop": stop,
                    "mode": mode,
                    "updated": _timestamp(rng, after=_EPOCH + dt.timedelta(days=10), days=50),
                }
            )
    document: object
    if shape == "flat":
        document = [
            {
                "task_id": str(row["task_id"]),
                "job_id": row["job_id"],
                "task_name": row["task_name"],
                "stage": row["stage"],
                "state": row["state"],
                "assignee": row["assignee"],
            }
            for row in rows
        ]
    else:
        results = [_rest_job(row) for row in sorted(rows, key=lambda row: -_int(row["job_id"]))]
        document = {"count": len(results), "next": None, "previous": None, "results": results}
    target = Path(path)
    partial = target.with_name(target.name + ".part")
    partial.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, target)
    return JobStatusInfo(path=target, states=MappingProxyType(states), completed_tasks=completed)


def _int(value: object) -> int:
    assert isinstance(value, int)
    return value


def _rest_job(row: Mapping[str, object]) -> dict[str, object]:
    """One job as CVAT's REST API returns it (the fields a reader may touch, in the server's key order)."""
    job_id = _int(row["job_id"])
    updated = row["updated"]
    assert isinstance(updated, dt.datetime)
    assignee = row["assignee"]
    return {
        "assignee": None
        if assignee is None
        else {
            "first_name": str(assignee).capitalize(),
            "id": 2 + _USERS.index(str(assignee)),
            "last_name": "",
            "url": f"{HOST}/api/users/{2 + _USERS.index(str(assignee))}",
            "username": assignee,
        },
        "bug_tracker": "",
        "created_date": (updated - dt.timedelta(days=9)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "dimension": "2d",
        "frame_count": _int(row["stop"]) - _int(row["start"]) + 1,
        "id": job_id,
        "issues": {"count": 0, "url": f"{HOST}/api/issues?job_id={job_id}"},
        "labels": {"url": f"{HOST}/api/labels?job_id={job_id}"},
        "mode": row["mode"],
        "stage": row["stage"],
        "start_frame": row["start"],
        "state": row["state"],
        "status": row["stage"],
        "stop_frame": row["stop"],
        "task_id": row["task_id"],
        "type": "annotation",
        "updated_date": updated.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "url": f"{HOST}/api/jobs/{job_id}",
    }


# --- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="XML file to write")
    parser.add_argument("--kind", choices=("project", "task"), default="project")
    parser.add_argument("--media", choices=("images", "video"), default="images")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--images", type=int, help="images (frames for video); default 1000")
    size.add_argument("--target-mb", type=float, help="pick the image count that makes about this many MB")
    parser.add_argument("--tasks", type=int)
    parser.add_argument("--shapes-per-image", type=int, default=20)
    parser.add_argument("--jobs-per-task", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs-out", type=Path, help="also write a job-status file matching the export")
    parser.add_argument("--jobs-shape", choices=("rest", "flat"), default="rest")
    parser.add_argument("--completed-fraction", type=float, default=0.5)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    info = generate_export(
        args.out,
        kind=args.kind,
        media=args.media,
        images=args.images,
        target_mb=args.target_mb,
        tasks=args.tasks,
        shapes_per_image=args.shapes_per_image,
        jobs_per_task=args.jobs_per_task,
        seed=args.seed,
    )
    elapsed = time.perf_counter() - started
    print(
        f"{info.path}: {info.bytes / 1e6:.1f} MB, {info.tasks} tasks, "
        f"{sum(map(len, info.jobs.values()))} jobs, "
        f"{info.images} {'frames' if info.media == 'video' else 'images'}, {info.shapes} shapes "
        f"in {elapsed:.2f} s ({info.bytes / 1e6 / elapsed:.1f} MB/s)"
    )
    if args.jobs_out is not None:
        status = generate_job_status(
            args.jobs_out,
            export=info,
            completed_fraction=args.completed_fraction,
            seed=args.seed,
            shape=args.jobs_shape,
        )
        print(f"{status.path}: {len(status.states)} jobs, {len(status.completed_tasks)} tasks completed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
