"""The benchmark generator writes CVAT's layout, and the benchmark harness runs end to end."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from xml.etree.ElementTree import Element
from xml.parsers import expat

import defusedxml.ElementTree as DefusedET
import pytest
from benchmarks import bench_load
from benchmarks.expat_baseline import parse_bare, parse_noop
from cvat_watch.testing import generate
from cvat_watch.testing.generate import ExportInfo, generate_export, generate_job_status, job_ids_for

SHAPE_KINDS = {"box", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton"}
TWO_DECIMALS = re.compile(r"-?\d+\.\d\d")
POINTS = re.compile(r"-?\d+\.\d\d,-?\d+\.\d\d(;-?\d+\.\d\d,-?\d+\.\d\d)*")
CUBOID_CORNERS = [
    f"{corner}{face}" for face in "12" for corner in ("xtl", "ytl", "xbl", "ybl", "xtr", "ytr", "xbr", "ybr")
]
COORDINATE_ATTRIBUTES = {"xtl", "ytl", "xbr", "ybr", "rotation", "cx", "cy", "rx", "ry", *CUBOID_CORNERS}
# Attribute order of each element kind in CVAT's exporter, without the optional rotation and group_id.
IMAGE_SHAPE_ORDER = {
    "box": ["label", "source", "occluded", "xtl", "ytl", "xbr", "ybr", "z_order"],
    "ellipse": ["label", "source", "occluded", "cx", "cy", "rx", "ry", "z_order"],
    "polygon": ["label", "source", "occluded", "points", "z_order"],
    "polyline": ["label", "source", "occluded", "points", "z_order"],
    "points": ["label", "source", "occluded", "points", "z_order"],
    "mask": ["label", "source", "occluded", "rle", "left", "top", "width", "height", "z_order"],
    "skeleton": ["label", "source", "z_order"],
    "tag": ["label", "source"],
    "cuboid": ["label", "source", "occluded", *CUBOID_CORNERS, "z_order"],
}


def _parse(path: Path) -> Element:
    root = DefusedET.parse(path).getroot()
    assert isinstance(root, Element)
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ExportInfo:
    path = tmp_path_factory.mktemp("project") / "project.xml"
    return generate_export(path, kind="project", images=400, tasks=7, jobs_per_task=3, seed=4)


@pytest.fixture(scope="module")
def project_root(project: ExportInfo) -> Element:
    return _parse(project.path)


def test_project_export_parses_and_has_the_declared_counts(
    project: ExportInfo, project_root: Element
) -> None:
    """A project export is well formed and holds the tasks, jobs, images and shapes its ExportInfo states."""
    assert project_root.tag == "annotations"
    assert project_root.findtext("version") == "1.1"
    tasks = project_root.findall("meta/project/tasks/task")
    assert len(tasks) == project.tasks == 7
    assert sum(len(task.findall("segments/segment")) for task in tasks) == 7 * 3
    images = project_root.findall("image")
    assert len(images) == project.images == 400
    assert sum(len(image) for image in images) == project.shapes
    assert project.bytes == project.path.stat().st_size
    assert project_root.find("meta/dumped") is not None


def test_file_starts_and_ends_as_cvat_writes_it(project: ExportInfo) -> None:
    """The export opens with CVAT's declaration and version and ends with a newline after the root."""
    data = project.path.read_bytes()
    assert data.startswith(
        b'<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'
        b"  <meta>\n    <project>\n      <id>"
    )
    assert data.endswith(b"\n  </image>\n</annotations>\n")
    assert b"/>" not in data  # CVAT's XMLGenerator never writes self-closing tags


def test_indentation_is_two_spaces_per_level(project: ExportInfo) -> None:
    """Every tag line is indented two spaces per nesting level, the way CVAT's dumper indents."""
    depth = 0
    lines = project.path.read_text(encoding="utf-8").splitlines()[1:]
    for number, line in enumerate(lines, start=2):
        stripped = line.lstrip(" ")
        if not stripped.startswith("<"):  # the tail of a multi-line text value (label values, subsets)
            if "</" in stripped:
                depth -= 1
            continue
        if stripped.startswith("</"):
            depth -= 1
        assert len(line) - len(stripped) == 2 * depth, f"line {number}: {line!r}"
        if not stripped.startswith("</") and "</" not in stripped:
            depth += 1
    assert depth == 0


def test_coordinates_are_written_with_two_decimals(project_root: Element, tmp_path: Path) -> None:
    """Every coordinate in images and video tracks is formatted %.2f; mask geometry is integers."""
    video = _parse(generate_export(tmp_path / "v.xml", kind="task", media="video", images=120, seed=2).path)
    checked = 0
    for element in [*project_root.iter(), *video.iter()]:
        for name, value in element.attrib.items():
            if name in COORDINATE_ATTRIBUTES:
                assert TWO_DECIMALS.fullmatch(value), (element.tag, name, value)
                checked += 1
            elif name == "points" and element.tag != "image":
                assert POINTS.fullmatch(value), (element.tag, value)
                checked += 1
        if element.tag == "mask":
            assert all(element.attrib[key].isdigit() for key in ("left", "top", "width", "height"))
    assert checked > 1000


def test_attributes_come_in_cvat_order(project_root: Element) -> None:
    """Shape, tag, skeleton-element and image attributes are in the order CVAT's exporter writes them."""
    seen = set()
    for image in project_root.iter("image"):
        assert list(image.attrib)[:4] == ["id", "name", "subset", "task_id"]
        assert list(image.attrib)[4:] == ["width", "height"]
        for shape in image:
            names = [name for name in shape.attrib if name not in ("rotation", "group_id")]
            assert names == IMAGE_SHAPE_ORDER[shape.tag], (shape.tag, list(shape.attrib))
            if "rotation" in shape.attrib:
                keys = list(shape.attrib)
                assert keys[keys.index("rotation") + 1] == "z_order"
            if shape.tag == "skeleton":
                for element in shape.findall("points"):
                    assert list(element.attrib) == ["label", "source", "outside", "occluded", "points"]
            seen.add(shape.tag)
    assert seen == SHAPE_KINDS | {"tag"}


def test_shape_mix_is_mostly_boxes_and_polygons(project_root: Element) -> None:
    """About 60% of the annotations are boxes and 30% polygons, and every other kind is present."""
    kinds = Counter(shape.tag for image in project_root.iter("image") for shape in image)
    total = sum(kinds.values())
    assert 0.55 < kinds["box"] / total < 0.65
    assert 0.25 < kinds["polygon"] / total < 0.35
    assert all(kinds[kind] > 0 for kind in SHAPE_KINDS | {"tag"})
    assert 15 < total / len(project_root.findall("image")) < 25


def test_mask_runs_cover_the_mask_exactly(project_root: Element) -> None:
    """The run lengths of every mask's RLE add up to its width times its height."""
    masks = list(project_root.iter("mask"))
    assert masks
    for mask in masks:
        runs = [int(run) for run in mask.attrib["rle"].split(", ")]
        assert sum(runs) == int(mask.attrib["width"]) * int(mask.attrib["height"])


def test_project_image_ids_restart_per_subset(project: ExportInfo, project_root: Element) -> None:
    """Image ids restart at 0 in each subset and are offset by the sizes of the subset's earlier tasks."""
    meta_tasks = project_root.findall("meta/project/tasks/task")
    listed = [(task.findtext("subset") or "", int(task.findtext("id") or 0)) for task in meta_tasks]
    assert listed == sorted(listed), "meta lists tasks by (subset, id)"
    sizes = {int(task.findtext("id") or 0): int(task.findtext("size") or 0) for task in meta_tasks}
    offsets, running = {}, Counter[str]()
    for subset, task_id in listed:
        offsets[task_id] = running[subset]
        running[subset] += sizes[task_id]
    assert len(running) > 1 and any(running[s] > sizes[t] for s, t in listed), "needs a shared subset"

    ids_by_subset = defaultdict(list)
    task_order: list[int] = []
    for image in project_root.iter("image"):
        task_id, subset, image_id = (
            int(image.attrib["task_id"]),
            image.attrib["subset"],
            int(image.attrib["id"]),
        )
        assert offsets[task_id] <= image_id < offsets[task_id] + sizes[task_id]
        ids_by_subset[subset].append(image_id)
        if not task_order or task_order[-1] != task_id:
            task_order.append(task_id)
    assert task_order == sorted(sizes), "images come in task-id order"
    for subset, ids in ids_by_subset.items():
        assert sorted(ids) == list(range(running[subset]))
    assert {plan.id: plan.subset for plan in project.task_plans} == {t: s for s, t in listed}


def _segment_jobs(root: Element) -> dict[int, list[int]]:
    jobs = {}
    for task in root.iter("task"):
        urls = [segment.findtext("url") or "" for segment in task.findall("segments/segment")]
        assert all(url.startswith("http://localhost:8080/api/jobs/") for url in urls)
        jobs[int(task.findtext("id") or 0)] = [int(url.rsplit("/", 1)[1]) for url in urls]
    return jobs


def test_rest_job_status_agrees_with_the_segments(
    project: ExportInfo, project_root: Element, tmp_path: Path
) -> None:
    """The REST job list names exactly the XML segments' jobs, built from the ExportInfo or the task ids."""
    segments = _segment_jobs(project_root)
    assert {task: list(jobs) for task, jobs in project.jobs.items()} == segments
    from_export = generate_job_status(tmp_path / "a.json", export=project, completed_fraction=0.4, seed=1)
    from_ids = generate_job_status(
        tmp_path / "b.json", task_ids=sorted(project.jobs), jobs_per_task=3, completed_fraction=0.4, seed=1
    )
    for status in (from_export, from_ids):
        document = json.loads(status.path.read_text(encoding="utf-8"))
        assert document["next"] is None and document["previous"] is None
        assert document["count"] == len(document["results"]) == 21
        pairs = {(job["task_id"], job["id"]) for job in document["results"]}
        assert pairs == {(task, job) for task, jobs in segments.items() for job in jobs}
        for job in document["results"]:
            assert job["url"] == f"http://localhost:8080/api/jobs/{job['id']}"
            assert job["type"] == "annotation" and job["start_frame"] <= job["stop_frame"]
            assert job["assignee"] is None or isinstance(job["assignee"]["username"], str)
        _check_completion(status.completed_tasks, document["results"])
    assert len(from_export.completed_tasks) == round(0.4 * 7)
    first_segment = project_root.find("meta/project/tasks/task/segments/segment")
    assert first_segment is not None
    ranges = {job["id"]: (job["start_frame"], job["stop_frame"]) for job in json.loads(
        from_export.path.read_text(encoding="utf-8"))["results"]}  # fmt: skip
    job_id = int((first_segment.findtext("url") or "").rsplit("/", 1)[1])
    assert ranges[job_id] == (
        int(first_segment.findtext("start") or -1),
        int(first_segment.findtext("stop") or -1),
    )


def _check_completion(completed: frozenset[int], rows: list[dict[str, object]]) -> None:
    by_task = defaultdict(list)
    for row in rows:
        by_task[int(str(row["task_id"]))].append((row["stage"], row["state"]))
    for task_id, states in by_task.items():
        done = all(state == ("acceptance", "completed") for state in states)
        assert done == (task_id in completed), (task_id, states)
        # An open task stays open however "completed" is read: some job's state is not "completed".
        assert done or any(state != "completed" for _, state in states)


def test_flat_job_status_lists_string_task_ids(project: ExportInfo, tmp_path: Path) -> None:
    """The flat shape is a list of next-cvat rows with string task ids, integer job ids and the same jobs."""
    status = generate_job_status(tmp_path / "flat.json", export=project, shape="flat", seed=2)
    rows = json.loads(status.path.read_text(encoding="utf-8"))
    assert isinstance(rows, list)
    assert all(list(row) == ["task_id", "job_id", "task_name", "stage", "state", "assignee"] for row in rows)
    assert all(isinstance(row["task_id"], str) and isinstance(row["job_id"], int) for row in rows)
    assert {(int(row["task_id"]), row["job_id"]) for row in rows} == {
        (task, job) for task, jobs in project.jobs.items() for job in jobs
    }
    assert dict(status.states) == {row["job_id"]: row["state"] for row in rows}
    _check_completion(status.completed_tasks, rows)


def test_job_ids_are_blocks_per_task() -> None:
    """Job ids are consecutive blocks of jobs_per_task in the order of the task ids."""
    assert job_ids_for([11, 12], 2, first_job_id=5) == {11: (5, 6), 12: (7, 8)}


def test_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    """Two exports with the same arguments and seed are identical; another seed changes the content."""
    first = generate_export(tmp_path / "a.xml", images=60, tasks=3, jobs_per_task=2, seed=9)
    second = generate_export(tmp_path / "b.xml", images=60, tasks=3, jobs_per_task=2, seed=9)
    third = generate_export(tmp_path / "c.xml", images=60, tasks=3, jobs_per_task=2, seed=10)
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.path.read_bytes() != third.path.read_bytes()
    status_a = generate_job_status(tmp_path / "a.json", export=first, seed=3)
    status_b = generate_job_status(tmp_path / "b.json", export=second, seed=3)
    assert status_a.path.read_bytes() == status_b.path.read_bytes()


def test_task_video_export_writes_every_frame_of_each_track(tmp_path: Path) -> None:
    """A video task export has CVAT's task meta with original_size, and tracks with one shape per frame."""
    info = generate_export(tmp_path / "video.xml", kind="task", media="video", images=150, shapes_per_image=6)
    root = _parse(info.path)
    task = root.find("meta/task")
    assert task is not None and task.findtext("mode") == "interpolation"
    assert task.find("original_size/width") is not None and task.find("labels/label") is not None
    assert root.find("meta/dumped") is not None and not root.findall("image")
    tracks = root.findall("track")
    assert [int(track.attrib["id"]) for track in tracks] == list(range(len(tracks)))
    assert sum(len(track) for track in tracks) == info.shapes
    for track in tracks:
        assert list(track.attrib)[:3] == ["id", "label", "source"]
        frames = [int(shape.attrib["frame"]) for shape in track]
        assert frames == list(range(frames[0], frames[0] + len(frames))) and frames[-1] < 150
        assert all(list(shape.attrib)[:4] == ["frame", "keyframe", "outside", "occluded"] for shape in track)
        assert track[0].attrib["keyframe"] == "1"
        outside = [shape.attrib["outside"] for shape in track]
        assert "1" not in outside[:-1], "only the closing keyframe is outside"
        if outside[-1] == "1":
            assert track[-1].attrib["keyframe"] == "1"
    visible = sum(1 for track in tracks for shape in track if shape.attrib["outside"] == "0")
    assert visible >= 150 * 6


def test_project_video_tracks_name_their_task_and_subset(tmp_path: Path) -> None:
    """In a project video export each track carries task_id and subset, and frames are offset per subset."""
    info = generate_export(
        tmp_path / "pv.xml", kind="project", media="video", images=90, tasks=3, jobs_per_task=1
    )
    root = _parse(info.path)
    assert all(task.find("original_size") is not None for task in root.iter("task"))
    plans = {plan.id: plan for plan in info.task_plans}
    offsets = generate.frame_offsets(info.task_plans)
    for track in root.iter("track"):
        task_id = int(track.attrib["task_id"])
        assert track.attrib["subset"] == plans[task_id].subset
        for shape in track:
            assert offsets[task_id] <= int(shape.attrib["frame"]) < offsets[task_id] + plans[task_id].size


def test_target_mb_picks_the_image_count(tmp_path: Path) -> None:
    """Asking for a size in MB yields a file within a few percent of it."""
    info = generate_export(tmp_path / "sized.xml", target_mb=0.6, seed=1)
    assert 0.54e6 < info.bytes < 0.66e6
    assert info.images == len(_parse(info.path).findall("image"))


@pytest.mark.parametrize(
    "arguments",
    [
        {"kind": "task", "tasks": 2, "images": 10},
        {"images": 5, "tasks": 2, "jobs_per_task": 3},
        {"images": 10, "target_mb": 1.0},
        {"kind": "album", "images": 10},
    ],
)
def test_impossible_arguments_are_refused(tmp_path: Path, arguments: dict[str, object]) -> None:
    """Arguments that cannot describe a CVAT export raise ValueError and leave no file behind."""
    with pytest.raises(ValueError):
        generate_export(tmp_path / "x.xml", **arguments)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_generate_cli_writes_the_export_and_the_job_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m benchmarks.generate`` writes both files and reports the sizes and the throughput."""
    out, jobs = tmp_path / "cli.xml", tmp_path / "jobs.json"
    argv = ["--out", str(out), "--images", "30", "--tasks", "3", "--jobs-per-task", "2"]
    assert generate.main([*argv, "--jobs-out", str(jobs), "--jobs-shape", "flat"]) == 0
    assert len(_parse(out).findall("image")) == 30
    assert len(json.loads(jobs.read_text(encoding="utf-8"))) == 6
    assert "MB/s" in capsys.readouterr().out


def test_expat_baselines_read_every_byte(project: ExportInfo, tmp_path: Path) -> None:
    """Both expat passes consume the whole file and reject a malformed one."""
    assert parse_noop(project.path) == parse_bare(project.path) == project.bytes
    broken = tmp_path / "broken.xml"
    broken.write_bytes(project.path.read_bytes()[:5000])
    with pytest.raises(expat.ExpatError):
        parse_noop(broken)


def test_bench_harness_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The harness generates and caches an export, measures in child processes and prints the table."""
    path = bench_load.ensure_export(0.05, cache_dir=tmp_path)
    stamp = path.stat().st_mtime_ns
    assert bench_load.ensure_export(0.05, cache_dir=tmp_path).stat().st_mtime_ns == stamp

    baseline = bench_load.measure("expat", path, timeout=60)
    assert baseline.skipped is None and baseline.seconds is not None and baseline.seconds > 0
    assert baseline.peak_rss_bytes is not None and baseline.peak_rss_bytes >= 0

    # --no-peers: the peers' virtual environment is the benchmark's business, not the test suite's.
    arguments = ["--sizes", "0.05", "--repeat", "1", "--cache-dir", str(tmp_path), "--no-peers"]
    assert bench_load.main(arguments) == 0
    table = capsys.readouterr().out
    header, rule, row, *_notes = table.splitlines()
    assert header.startswith("| size MB | expat s | expat MB/s | cvat-watch s | MB/s | ratio to expat |")
    assert rule.count("---:") == 7 and row.count("|") == 8
    assert row.split("|")[2].strip() != "—", "the expat column is always measured"
    assert list(tmp_path.iterdir()) == [path]


def test_datumaro_folder_has_a_placeholder_for_every_image(tmp_path: Path) -> None:
    """datumaro refuses an export whose images are missing: the benchmark gives it one empty file per image."""
    path = bench_load.ensure_export(0.05, cache_dir=tmp_path)
    names = re.findall(r'<image id="[^"]*" name="([^"]*)"', path.read_text())
    assert names
    linked = bench_load.datumaro_folder(path)
    assert linked.read_bytes() == path.read_bytes()
    images = linked.parent / "images"
    assert sorted(str(p.relative_to(images)) for p in images.rglob("*") if p.is_file()) == sorted(names)
    assert bench_load.datumaro_folder(path) == linked  # the second call reuses the folder
