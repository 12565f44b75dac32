"""Clear answers where the export cannot answer: repeated image names, tasks without ids, files
without job links, and a CVAT tasks listing given as the job-status file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cvat_watch import cvatxml
from cvat_watch.errors import JobStatusError, QueryError
from cvat_watch.jobstatus import load_job_status
from cvat_watch.model import Annotations
from cvat_watch.testing.process import run_cli


def _segment(job: int, start: int, stop: int) -> str:
    return (
        f"<segment><id>{job}</id><start>{start}</start><stop>{stop}</stop>"
        f"<url>http://cvat.local/api/jobs/{job}</url></segment>"
    )


def _task(task_id: int, name: str, segments: str) -> str:
    return (
        f"<task><id>{task_id}</id><name>{name}</name><size>2</size><mode>annotation</mode>"
        f"<subset>default</subset><start_frame>0</start_frame><stop_frame>1</stop_frame>"
        f"<segments>{segments}</segments></task>"
    )


# Two tasks of one subset, both with frames named frame_000000.png and frame_000001.png: CVAT
# numbers the second task's frames after the first's (ids 2 and 3).
REPEATED = f"""<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version><meta><project><id>1</id><name>p</name><tasks>
{_task(1, "first", _segment(11, 0, 1))}{_task(2, "second", _segment(21, 0, 0) + _segment(22, 1, 1))}
</tasks></project></meta>
<image id="0" name="frame_000000.png" subset="default" task_id="1"></image>
<image id="1" name="frame_000001.png" subset="default" task_id="1"></image>
<image id="2" name="frame_000000.png" subset="default" task_id="2"></image>
<image id="3" name="frame_000001.png" subset="default" task_id="2"></image>
</annotations>
"""


@pytest.fixture
def repeated(tmp_path: Path) -> Annotations:
    path = tmp_path / "project.xml"
    path.write_text(REPEATED)
    return cvatxml.load(path)


def test_a_name_in_several_tasks_is_refused_naming_the_tasks(repeated: Annotations) -> None:
    """create_cvat_link(name) no longer picks the first: it names the candidate tasks."""
    with pytest.raises(
        QueryError, match=r"'frame_000001.png' is ambiguous: it occurs in tasks 1, 2 of .*task="
    ):
        repeated.create_cvat_link("frame_000001.png")
    with pytest.raises(LookupError, match="ambiguous"):  # still a LookupError for older callers
        repeated.get_image("frame_000000.png")


def test_the_caller_says_which_by_task_or_by_image_id(repeated: Annotations) -> None:
    """task= picks the task's image; image_id= (unique here) or the image itself picks one directly."""
    assert (
        repeated.create_cvat_link("frame_000001.png", task=2) == "http://cvat.local/tasks/2/jobs/22?frame=1"
    )
    assert (
        repeated.create_cvat_link("frame_000001.png", task="1") == "http://cvat.local/tasks/1/jobs/11?frame=1"
    )
    assert repeated.create_cvat_link(image_id=3) == "http://cvat.local/tasks/2/jobs/22?frame=1"
    assert repeated.create_cvat_link(image_id="2", task=2) == "http://cvat.local/tasks/2/jobs/21?frame=0"
    assert repeated.create_cvat_link(image=repeated.images[1]) == "http://cvat.local/tasks/1/jobs/11?frame=1"
    assert repeated.get_image("frame_000000.png", task=2).id == "2"
    with pytest.raises(QueryError, match=r"no image named 'frame_000001.png' in task 3 in "):
        repeated.get_image("frame_000001.png", task=3)
    with pytest.raises(TypeError, match="one of them"):
        repeated.get_image()


def _export(tmp_path: Path, meta: str, images: str) -> Path:
    path = tmp_path / "export.xml"
    path.write_text(f"<annotations><version>1.1</version><meta>{meta}</meta>{images}</annotations>")
    return path


def test_a_task_without_an_id_is_named_as_what_is_missing(tmp_path: Path) -> None:
    """`status` prints no empty table but says which task has no id; links say the same."""
    path = _export(
        tmp_path, "<task><name>edited</name><size>1</size></task>", '<image id="0" name="a.png"></image>'
    )
    result = run_cli("status", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (
        "task 'edited' has no <id> in the export: its jobs cannot be matched with the job status"
        in result.stderr
    )
    annotations = cvatxml.load(path)
    with pytest.raises(QueryError, match=r"cannot link image 'a.png': its task has no <id> in .*export.xml"):
        annotations.create_cvat_link("a.png", "http://cvat.local")


def test_a_task_without_job_links_says_so(tmp_path: Path) -> None:
    """A task whose meta lists no segment: the error names the task and the missing <segments>."""
    path = _export(tmp_path, "<task><id>7</id><size>1</size></task>", '<image id="0" name="a.png"></image>')
    with pytest.raises(QueryError, match=r"cannot link image 'a.png': task 7 lists no jobs in .*<segments>"):
        cvatxml.load(path).create_cvat_link("a.png", "http://cvat.local")


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ("", r"describes no task \(its <meta> has no <task>\)"),
        ("<project><tasks><task><id>1</id></task><task><id>2</id></task></tasks></project>",
         "describes 2 tasks and the image has no task_id to say which is its"),
    ],
)  # fmt: skip
def test_an_image_whose_task_cannot_be_told_says_why(tmp_path: Path, meta: str, problem: str) -> None:
    """No more "names task None": what the export lacks is said instead."""
    path = _export(tmp_path, meta, '<image id="0" name="a.png"></image>')
    with pytest.raises(QueryError, match=problem) as caught:
        cvatxml.load(path).create_cvat_link("a.png", "http://cvat.local")
    assert "None" not in str(caught.value)


def test_a_tasks_listing_as_job_status_is_named_for_what_it_is(corpus: Path, tmp_path: Path) -> None:
    """CVAT's GET /api/tasks (the corpus page, and the page a real CVAT 2.23.1 answered) is refused
    with a message saying it is a tasks listing and that a jobs listing is needed; so does `status`."""
    recorded = json.loads((corpus / "cvat-2.23/recordings/http/045_tasks_of_project.json").read_bytes())
    page = tmp_path / "tasks.json"
    page.write_text(json.dumps(recorded["response"]["body"]))
    for path in (corpus / "cvat-api-tasks.json", page):
        with pytest.raises(
            JobStatusError, match=r"results\[0\]: this looks like a CVAT tasks listing"
        ) as caught:
            load_job_status(path)
        assert "a jobs listing (GET /api/jobs" in str(caught.value)
    export = corpus / "cvat-2.23/exports/task-4-T2_cvat-for-images-1.1.xml"
    result = run_cli("status", str(export), "--jobs", str(page))
    assert result.returncode != 0
    assert "looks like a CVAT tasks listing" in result.stderr
