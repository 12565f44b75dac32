"""The public CVAT/datumaro conformance corpus: each file loads, counts match, and save loses nothing."""

from __future__ import annotations

import re
import xml.etree.ElementTree as StdlibElementTree
from pathlib import Path
from typing import Any

import attrs
import pytest
from cvat_watch import cvatxml
from cvat_watch.errors import QueryError
from cvat_watch.model import Annotations, ImageAnnotation
from defusedxml import ElementTree

PROJECT = "datumaro-project-export.xml"
TRAIN = "datumaro-images-train.xml"
VIDEO = "datumaro-video.xml"
FILES = [PROJECT, TRAIN, VIDEO]


def _load(corpus: Path, name: str) -> Annotations:
    return cvatxml.load(corpus / name)


# -- the tree comparator ----------------------------------------------------------------------------

_SEPARATORS = re.compile(r"[,;]")


def _value(text: str) -> Any:
    """Numbers (and ``x,y;x,y`` lists of them) as floats, so "14.0" equals "14.00"; the rest as text."""
    try:
        parts = tuple(float(part) for part in _SEPARATORS.split(text))
    except ValueError:
        return text
    return parts if all(part == part for part in parts) else text


def _text(element: StdlibElementTree.Element) -> Any:
    text = element.text or ""
    return None if not text.strip() else _value(text)


def _canonical(element: StdlibElementTree.Element) -> tuple[Any, ...]:
    return (
        element.tag,
        tuple(sorted((name, _value(value)) for name, value in element.attrib.items())),
        _text(element),
        tuple(_canonical(child) for child in element),
    )


def assert_same_tree(
    original: StdlibElementTree.Element, saved: StdlibElementTree.Element, where: str = ""
) -> None:
    """Same element names, attribute sets and values (numbers as numbers), texts (whitespace-only
    aside) and sibling order, except that the shapes of one image may come in another order."""
    where = f"{where}/{original.tag}"
    assert saved.tag == original.tag, where
    assert set(saved.attrib) == set(original.attrib), f"{where}: attributes"
    for name, value in original.attrib.items():
        assert _value(saved.attrib[name]) == _value(value), (
            f"{where}@{name}: {value!r} vs {saved.attrib[name]!r}"
        )
    assert _text(saved) == _text(original), f"{where}: text"
    if original.tag == "image":
        key = repr
        assert sorted(map(_canonical, saved), key=key) == sorted(map(_canonical, original), key=key), where
        return
    assert [child.tag for child in saved] == [child.tag for child in original], f"{where}: children"
    for index, (left, right) in enumerate(zip(original, saved, strict=True)):
        assert_same_tree(left, right, f"{where}[{index}]")


def test_comparator_sees_differences() -> None:
    """The comparator catches a changed value, a dropped attribute and reordered siblings."""
    base = ElementTree.fromstring('<a><b x="1.0" y="t"/><c>text</c><image><p z="1"/><q/></image></a>')
    same = ElementTree.fromstring('<a>\n <b y="t" x="1.00"></b><c>text</c><image><q/><p z="1"/></image></a>')
    assert_same_tree(base, same)
    for different in (
        '<a><b x="1.5" y="t"/><c>text</c><image><p z="1"/><q/></image></a>',
        '<a><b x="1.0"/><c>text</c><image><p z="1"/><q/></image></a>',
        '<a><c>text</c><b x="1.0" y="t"/><image><p z="1"/><q/></image></a>',
        '<a><b x="1.0" y="t"/><c>other</c><image><p z="1"/><q/></image></a>',
        '<a><b x="1.0" y="t"/><c>text</c><image><p z="2"/><q/></image></a>',
    ):
        with pytest.raises(AssertionError):
            assert_same_tree(base, ElementTree.fromstring(different))


# -- every file -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_save_then_load_gives_an_equal_model(corpus: Path, tmp_path: Path, name: str) -> None:
    """load → save → load gives a model equal to the first load, and loads(dumps(...)) too."""
    annotations = _load(corpus, name)
    saved = tmp_path / name
    cvatxml.save(annotations, saved)
    assert cvatxml.load(saved) == annotations
    assert cvatxml.loads(cvatxml.dumps(annotations)) == annotations


@pytest.mark.parametrize("name", FILES)
def test_saved_file_is_the_same_tree_element_by_element(corpus: Path, tmp_path: Path, name: str) -> None:
    """The saved XML has the original's elements, attributes, values and texts, in the original order."""
    saved = tmp_path / name
    cvatxml.save(_load(corpus, name), saved)
    original = ElementTree.fromstring((corpus / name).read_bytes())
    assert_same_tree(original, ElementTree.fromstring(saved.read_bytes()))


@pytest.mark.parametrize("name", FILES)
def test_summary_matches_the_full_load(corpus: Path, name: str) -> None:
    """load_summary agrees with Annotations.summary() on every corpus file, and load_brief (the
    daemon's reader) with that summary's brief."""
    summary = _load(corpus, name).summary()
    assert cvatxml.load_summary(corpus / name) == summary
    assert cvatxml.load_brief(corpus / name) == summary.brief()


# -- what each file holds ---------------------------------------------------------------------------


def test_project_export_contents(corpus: Path) -> None:
    """The project export: project 3, tasks 39/37/38 with one segment each, 6 images all naming task 39."""
    annotations = _load(corpus, PROJECT)
    assert annotations.kind == "project"
    assert annotations.project is not None
    assert annotations.project.id == "3"
    assert annotations.project.subset_names == ["Train", "Test", "Validation"]
    assert annotations.dumped == "2023-01-17 01:38:22.055780+00:00"
    assert [task.id for task in annotations.tasks] == ["39", "37", "38"]
    assert [task.subset for task in annotations.tasks] == ["Test", "Train", "Validation"]
    assert [task.job_ids for task in annotations.tasks] == [["6"], ["4"], ["5"]]
    assert annotations.tasks[0].assignee is not None and annotations.tasks[0].assignee.username is None
    assert len(annotations.images) == 6
    assert {image.task_id for image in annotations.images} == {"39"}
    assert [image.id for image in annotations.images] == ["0", "1"] * 3
    first = annotations.images[0]
    assert [attribute.value for attribute in first.boxes[0].attributes] == ["true", "v3", "0003", "2.4"]
    assert first.polylines[0].z_order == 0 and "z_order" not in first.polylines[0].xml_layout
    assert sum(image.shape_count for image in annotations.images) == 12
    labels = annotations.project.labels
    assert [label.name for label in labels] == ["label1", "label2"]
    assert labels[0].color is None and labels[0].type is None
    assert labels[0].attributes[3].choices == ["2.4", "1", "-5.6"]


def test_images_train_contents(corpus: Path) -> None:
    """The task-style train file: no task id, two images, a skeleton of four nodes, empty labels."""
    annotations = _load(corpus, TRAIN)
    assert annotations.kind == "task"
    (task,) = annotations.tasks
    assert (task.id, task.z_order, task.mode, task.segments) == (None, "True", "annotation", ())
    assert annotations.dumped is None
    assert [image.task_id for image in annotations.images] == [None, None]
    first, second = annotations.images
    assert first.polylines[0].label == "" and second.polygons[0].label == ""
    (skeleton,) = first.skeletons
    assert skeleton.points == ()
    assert [node.label for node in skeleton.elements] == ["1", "2", "3", "4"]
    assert [node.outside for node in skeleton.elements] == [True, False, False, False]
    assert [node.outside for node in second.skeletons[0].elements] == [False, False, True, False]
    skeleton_label = task.labels[2]
    assert skeleton_label.type == "skeleton"
    assert skeleton_label.svg is not None and skeleton_label.svg.startswith('<line x1="69.69805145263672"')
    assert [label.parent for label in task.labels[3:]] == ["skeleton"] * 4


def test_video_contents(corpus: Path) -> None:
    """The video export: task 5 at frames 10..19 step 3, four tracks, a skeleton with nested tracks."""
    annotations = _load(corpus, VIDEO)
    (task,) = annotations.tasks
    assert (task.id, task.size, task.start_frame, task.stop_frame, task.step) == ("5", 4, 10, 19, 3)
    assert task.original_size is not None and (task.original_size.width, task.original_size.height) == (
        25,
        20,
    )
    assert annotations.source == "t.mp4"
    assert task.job_ids == ["3", "4"]
    assert task.owner is not None and task.owner.email == ""
    assert [label.name for label in task.labels][:3] == ["klhg", "z U k", "II"]
    assert task.labels[0].attributes[0].choices == ["jk", "hgkf"]
    assert [track.id for track in annotations.tracks] == ["0", "1", "2", "3"]
    box_track, points_track, _, skeleton_track = annotations.tracks
    assert [shape.frame for shape in box_track.shapes] == [10, 13, 16]
    assert box_track.shapes[2].value("xbr") == 14.0
    assert points_track.shapes[0].attributes[0].value == "hgkf"
    assert [shape.keyframe for shape in skeleton_track.shapes] == [True, False, False]
    assert [track.label for track in skeleton_track.tracks] == ["1", "2", "3", "4"]
    assert [track.id for track in skeleton_track.tracks] == ["0", "1", "2", "3"]
    assert annotations.summary().shape_counts == {"5": 10}


# -- links into CVAT --------------------------------------------------------------------------------


def test_project_export_links(corpus: Path) -> None:
    """img0.jpg is in three subsets (all say task 39): the name alone is refused, naming the subsets;
    the image itself opens in its task's only job; img1.jpg lies beyond the task's one frame."""
    annotations = _load(corpus, PROJECT)
    with pytest.raises(QueryError, match=r"'img0.jpg' is ambiguous: it occurs in subsets 'Test', 'Train'"):
        annotations.create_cvat_link("img0.jpg")
    first = annotations.images[0]
    assert annotations.create_cvat_link(image=first) == "http://localhost:8080/tasks/39/jobs/6?frame=0"
    assert (
        annotations.create_cvat_link(base_url="https://cvat.example.com/", image=first)
        == "https://cvat.example.com/tasks/39/jobs/6?frame=0"
    )
    second = next(image for image in annotations.images if image.name == "img1.jpg")
    with pytest.raises(LookupError, match="no job of task 39 covers frame 1"):
        annotations.create_cvat_link(image=second)


def test_train_export_has_no_links(corpus: Path) -> None:
    """Its task has no id and no segments: the link error says so, whatever the base URL."""
    annotations = _load(corpus, TRAIN)
    assert annotations.default_base_url() is None
    assert annotations.task_url("1") is None
    for base_url in (None, "http://localhost:8080"):
        with pytest.raises(QueryError, match=r"cannot link image 'img0.jpg': its task has no <id> in "):
            annotations.create_cvat_link("img0.jpg", base_url)


def test_video_frames_link_with_absolute_numbers(corpus: Path) -> None:
    """Video frames are numbered absolutely (start 10, step 3): frame 16 is the task's frame 2, in job 3."""
    annotations = _load(corpus, VIDEO)
    frames = [ImageAnnotation(id=str(frame), name=f"frame_{frame:06d}") for frame in (10, 13, 16, 19)]
    with_frames = attrs.evolve(annotations, images=frames)
    assert [image.task_id for image in frames] == [None] * 4
    links = [with_frames.create_cvat_link(image.name) for image in frames]
    assert links == [f"http://localhost:7000/tasks/5/jobs/3?frame={frame}" for frame in range(4)]
    assert [with_frames.frame_of_image(image) for image in frames] == [0, 1, 2, 3]
