"""CVAT itself as the reference: exports a real CVAT v2.23.1 wrote, held to what its REST API said
about the same annotations and jobs at the same moment (../shared/corpus/cvat-2.23, see its README).

- the shapes of every frame: the task export (images and video formats) against
  ``GET /api/tasks/4/annotations``, label and attribute ids mapped through ``GET /api/labels``, tracks
  expanded frame by frame by CVAT's own TrackManager (``derived/``);
- the links and frames CVAT's job ranges imply (``GET /api/jobs`` pages, recorded);
- the completed tasks CVAT's job states imply (T1 and T2 completed, T2 also accepted, T3 not);
- byte-for-byte saves of all three exports.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cvat_watch import cvatxml
from cvat_watch.model import (
    CUBOID_COORDINATES,
    SHAPE_KINDS,
    Annotations,
    ImageAnnotation,
    SkeletonPoint,
    TrackedShape,
)

EXPORTS = (
    "project-3_cvat-for-images-1.1.xml",
    "task-4-T2_cvat-for-images-1.1.xml",
    "task-4-T2_cvat-for-video-1.1.xml",
)
PROJECT, TASK_IMAGES, TASK_VIDEO = EXPORTS
API_KIND = {"rectangle": "box", "polygon": "polygon", "polyline": "polyline", "points": "points",
            "ellipse": "ellipse", "cuboid": "cuboid", "mask": "mask", "skeleton": "skeleton"}  # fmt: skip

KIND_OF_CLASS = {cls: kind for kind, (_, cls) in SHAPE_KINDS.items()}

Canonical = tuple[Any, ...]


@pytest.fixture
def cvat(corpus: Path) -> Path:
    return corpus / "cvat-2.23"


def _json(path: Path) -> Any:
    return json.loads(path.read_bytes())


class Vocabulary:
    """Label ids and attribute spec ids → names, from GET /api/labels?task_id=4 (all pages)."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.labels: dict[int, str] = {}
        self.specs: dict[int, str] = {}
        stack = [label for page in pages for label in page["results"]]
        while stack:
            label = stack.pop()
            self.labels[label["id"]] = label["name"]
            self.specs.update({spec["id"]: spec["name"] for spec in label["attributes"]})
            stack.extend(label.get("sublabels", ()))

    def attributes(self, items: list[dict[str, Any]]) -> frozenset[tuple[str, str]]:
        return frozenset((self.specs[item["spec_id"]], item["value"]) for item in items)


def _round(values: Any) -> tuple[float, ...]:
    # CVAT's XML writes two decimals; its API has the full float.
    return tuple(round(float(value), 2) for value in values)


def _api_coords(kind: str, points: list[float]) -> Canonical:
    if kind == "ellipse":  # the API's points are the centre and the top-right corner
        cx, cy, right, top = points
        return _round((cx, cy, right - cx, cy - top))
    if kind == "mask":  # run lengths, then the box as left, top, right, bottom (inclusive)
        *rle, left, top, right, bottom = points
        return (
            ", ".join(str(int(value)) for value in rle),
            *_round((left, top, right - left + 1, bottom - top + 1)),
        )
    return _round(points)


def _api_shape(
    vocabulary: Vocabulary, shape: dict[str, Any], *, label_id: int, source: str, group: Any
) -> Canonical:
    kind = API_KIND[shape["type"]]
    elements = tuple(
        sorted(
            (vocabulary.labels[element["label_id"]], _round(element["points"]), element["outside"],
             element["occluded"], vocabulary.attributes(element["attributes"]))
            for element in shape.get("elements", ())
        )
    )  # fmt: skip
    return (
        kind, vocabulary.labels[label_id], source, group or None, shape["occluded"], shape["z_order"],
        round(shape["rotation"], 2), () if kind == "skeleton" else _api_coords(kind, shape["points"]),
        vocabulary.attributes(shape["attributes"]), elements,
    )  # fmt: skip


def _node(node: SkeletonPoint) -> Canonical:
    attributes = frozenset((a.name, a.value) for a in node.attributes)
    return (
        node.label,
        _round(c for point in node.points for c in point),
        node.outside,
        node.occluded,
        attributes,
    )


def _xml_coords(kind: str, shape: Any) -> Canonical:
    if kind == "box":
        return _round((shape.xtl, shape.ytl, shape.xbr, shape.ybr))
    if kind == "ellipse":
        return _round((shape.cx, shape.cy, shape.rx, shape.ry))
    if kind == "cuboid":
        return _round(getattr(shape, name) for name in CUBOID_COORDINATES)
    if kind == "mask":
        return (shape.rle, *_round((shape.left, shape.top, shape.width, shape.height)))
    if kind == "skeleton":
        return ()
    return _round(c for point in shape.points for c in point)


def _xml_image_shapes(image: ImageAnnotation) -> Counter[Canonical]:
    found: Counter[Canonical] = Counter()
    for shape in image.shapes:
        kind = KIND_OF_CLASS[type(shape)]
        attributes = frozenset((a.name, a.value) for a in shape.attributes)
        if kind == "tag":
            found[("tag", shape.label, shape.source, shape.group_id, attributes)] += 1
            continue
        elements = tuple(sorted(_node(node) for node in getattr(shape, "elements", ())))
        found[
            (kind, shape.label, shape.source, shape.group_id, shape.occluded, shape.z_order,
             round(getattr(shape, "rotation", 0.0), 2), _xml_coords(kind, shape), attributes, elements)
        ] += 1  # fmt: skip
    return found


def _tracked_coords(shape: TrackedShape) -> Canonical:
    values = dict(shape.values)
    if shape.kind == "skeleton":
        return ()
    if shape.kind == "mask":
        return (values["rle"], *_round(values[name] for name in ("left", "top", "width", "height")))
    if "points" in values:
        return _round(c for point in values["points"] for c in point)
    return _round(value for _, value in shape.values)


def test_images_format_holds_the_shapes_the_api_holds_frame_by_frame(cvat: Path) -> None:
    """Each image of the T2 images export has exactly the API's shapes and tags of its frame, plus
    the frames CVAT's TrackManager makes of the tracks (outside frames left out), with the same
    kind, label, source, group, occlusion, z_order, rotation, coordinates, attributes and nodes."""
    truth = cvat / "ground_truth"
    vocabulary = Vocabulary(_json(truth / "task-4_labels.json"))
    api = _json(truth / "task-4_annotations.json")
    expected: dict[int, Counter[Canonical]] = {}
    for shape in api["shapes"]:
        item = _api_shape(
            vocabulary, shape, label_id=shape["label_id"], source=shape["source"], group=shape["group"]
        )
        expected.setdefault(shape["frame"], Counter())[item] += 1
    for tag in api["tags"]:
        item = ("tag", vocabulary.labels[tag["label_id"]], tag["source"], tag["group"] or None,
                vocabulary.attributes(tag["attributes"]))  # fmt: skip
        expected.setdefault(tag["frame"], Counter())[item] += 1
    for shape in _json(truth / "derived/task-4_tracks_expanded_by_cvat.json")["tracks_as_shapes"]:
        if not shape["outside"]:
            item = _api_shape(
                vocabulary, shape, label_id=shape["label_id"], source=shape["source"], group=shape["group"]
            )
            expected.setdefault(shape["frame"], Counter())[item] += 1
    annotations = cvatxml.load(cvat / "exports" / TASK_IMAGES)
    names = [frame["name"] for frame in _json(truth / "task-4_data_meta.json")["frames"]]
    assert [image.name for image in annotations.images] == names
    for frame, image in enumerate(annotations.images):
        assert annotations.frame_of_image(image) == frame
        assert _xml_image_shapes(image) == expected.get(frame, Counter()), f"frame {frame}"
    assert sum(len(shapes) for shapes in expected.values()) == sum(
        image.shape_count for image in annotations.images
    )


def test_video_format_holds_the_tracks_the_api_holds_frame_by_frame(cvat: Path) -> None:
    """The T2 video export's visible frames are the API's plain shapes (each as a short track) and
    its tracks interpolated by CVAT's TrackManager, with the same values per frame; its keyframes
    and outside frames are those CVAT made; it holds no tags."""
    truth = cvat / "ground_truth"
    vocabulary = Vocabulary(_json(truth / "task-4_labels.json"))
    api = _json(truth / "task-4_annotations.json")
    expected: Counter[Canonical] = Counter()
    for shape in api["shapes"]:
        item = _api_shape(
            vocabulary, shape, label_id=shape["label_id"], source=shape["source"], group=shape["group"]
        )
        expected[(shape["frame"], True, *item)] += 1
    interpolated = _json(truth / "derived/task-4_tracks_expanded_by_cvat.json")["tracks_interpolated"]
    for track in interpolated:
        nodes: dict[int, list[dict[str, Any]]] = {}
        for element in track.get("elements", ()):
            for shape in element["shapes"]:
                nodes.setdefault(shape["frame"], []).append({**shape, "label_id": element["label_id"]})
        for shape in track["shapes"]:
            if shape["outside"]:
                continue
            full = {**shape, "elements": nodes.get(shape["frame"], [])}
            item = _api_shape(
                vocabulary, full, label_id=track["label_id"], source=track["source"], group=track["group"]
            )
            expected[(shape["frame"], shape["keyframe"], *item)] += 1
    annotations = cvatxml.load(cvat / "exports" / TASK_VIDEO)
    assert annotations.images == ()
    found: Counter[Canonical] = Counter()
    for track in annotations.tracks:
        for shape in track.shapes:
            # CVAT writes no outside="" on a skeleton's frames: a skeleton is out when its nodes are
            if shape.outside or (shape.elements and all(node.outside for node in shape.elements)):
                continue
            attributes = frozenset((a.name, a.value) for a in shape.attributes)
            elements = tuple(sorted(_node(node) for node in shape.elements))
            found[
                (shape.frame, shape.keyframe, shape.kind, track.label, track.source, track.group_id, shape.occluded,
                 shape.z_order, round(shape.rotation, 2), _tracked_coords(shape), attributes, elements)
            ] += 1  # fmt: skip
    assert found == expected


@pytest.fixture
def job_pages(cvat: Path, tmp_path: Path) -> Path:
    """The four pages of GET /api/jobs?project_id=3 a real CVAT answered, as one job-status file."""
    pages = [
        _json(path)["response"]["body"] for path in sorted((cvat / "recordings/http").glob("04[0-2]_jobs_*"))
    ]
    pages.insert(0, _json(next((cvat / "recordings/http").glob("039_jobs_*")))["response"]["body"])
    path = tmp_path / "job_pages.json"
    path.write_text(json.dumps(pages))
    return path


def _api_jobs(job_pages: Path) -> list[dict[str, Any]]:
    return [job for page in _json(job_pages) for job in page["results"]]


@pytest.mark.parametrize("status_file", ["job_status.json", "pages"])
def test_completed_tasks_are_those_the_job_states_imply(
    cvat: Path, job_pages: Path, status_file: str
) -> None:
    """T1 and T2 completed, T2 also accepted (all its jobs at acceptance), T3 not; the ground-truth
    job of T1 (in progress) does not count. The same from CVAT's own GET /api/jobs pages."""
    status = cvat / status_file if status_file != "pages" else job_pages
    project = Annotations.from_path(cvat / "exports" / PROJECT, status)
    assert [task.id for task in project.tasks] == ["3", "5", "4"]  # CVAT's (subset, id) order
    assert project.get_completed_task_ids() == ["3", "4"]
    assert project.get_completed_task_ids(rule="accepted") == ["4"]
    assert [project.is_task_completed(task) for task in ("3", "4", "5")] == [True, True, False]
    done = project.get_images_from_completed_tasks()
    assert {image.task_id for image in done} == {"3", "4"} and len(done) == 12 + 6
    task = Annotations.from_path(cvat / "exports" / TASK_IMAGES, status)
    assert task.get_completed_task_ids(rule="accepted") == ["4"]


def test_links_and_frames_follow_the_job_ranges_cvat_reports(cvat: Path, job_pages: Path) -> None:
    """Every image of the project export links to its task, to the first annotation job whose
    range (GET /api/jobs start_frame..stop_frame) holds its frame, and to that frame: the image's
    place among its task's frames (every frame is in the export)."""
    ranges: dict[str, list[tuple[int, int, str]]] = {}
    for job in sorted(_api_jobs(job_pages), key=lambda job: (job["start_frame"], job["id"])):
        if job["type"] == "annotation":
            ranges.setdefault(str(job["task_id"]), []).append(
                (job["start_frame"], job["stop_frame"], str(job["id"]))
            )
    project = cvatxml.load(cvat / "exports" / PROJECT)
    place: Counter[str | None] = Counter()
    links = 0
    for image in sorted(project.images, key=lambda image: (image.task_id or "", int(image.id))):
        frame = place[image.task_id]
        place[image.task_id] += 1
        job = next(job_id for start, stop, job_id in ranges[str(image.task_id)] if start <= frame <= stop)
        expected = f"http://127.0.0.1:8080/tasks/{image.task_id}/jobs/{job}?frame={frame}"
        assert project.create_cvat_link(image.name, task=image.task_id) == expected
        assert project.create_cvat_link(image=image) == expected
        links += 1
    assert links == 31 and dict(place) == {"3": 12, "4": 6, "5": 13}


@pytest.mark.parametrize("name", EXPORTS)
def test_every_export_cvat_wrote_is_saved_byte_for_byte(cvat: Path, tmp_path: Path, name: str) -> None:
    """load → save gives the file CVAT wrote, byte for byte (a final newline added at most)."""
    original = (cvat / "exports" / name).read_bytes()
    annotations = cvatxml.load(cvat / "exports" / name)
    target = tmp_path / name
    annotations.save(target)
    saved = target.read_bytes()
    assert saved in (original, original + b"\n")
    assert cvatxml.dumps(cvatxml.loads(saved)) == saved
