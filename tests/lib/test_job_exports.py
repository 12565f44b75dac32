"""Job exports (CVAT's "Export job annotations", ``<meta><job>``): the job they hold, the task found
through the job-status file, links in task frame numbers, and the daemon announcing the task.

The job exports are made from the project export a real CVAT v2.23.1 wrote (../shared/corpus),
laid out as CVAT's exporter lays out a job (its ``JobData`` meta: the job's id, the job's absolute
start/stop frames, one segment with the segment's task-relative range and the job's URL; image ids
that are the task's absolute frame numbers, no task id anywhere). One small job export written out
here runs without the corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from cvat_watch import cvatxml
from cvat_watch.config import WatchConfig
from cvat_watch.daemon.events import Event
from cvat_watch.daemon.reload import WatchRunner
from cvat_watch.daemon.snapshot import build_snapshot
from cvat_watch.daemon.store import Store
from cvat_watch.errors import QueryError
from cvat_watch.eventtypes import TASK_COMPLETED
from cvat_watch.jobstatus import load_job_status, parse_job_status
from cvat_watch.model import Annotations, ImageAnnotation, Segment, Task
from cvat_watch.testing.process import run_cli

PROJECT = "cvat-2.23/exports/project-3_cvat-for-images-1.1.xml"
JOB_STATUS = "cvat-2.23/job_status.json"
BASE = "http://127.0.0.1:8080"
#: (task, job) → the job's task-relative frames, as CVAT's GET /api/jobs said (recordings 039-042).
JOB_RANGES = {("3", "5"): (0, 3), ("3", "6"): (4, 7), ("3", "7"): (8, 11), ("4", "8"): (0, 5),
              ("5", "9"): (0, 5), ("5", "10"): (4, 9), ("5", "11"): (8, 12)}  # fmt: skip


def job_export(project: Annotations, task_id: str, job_id: str) -> bytes:
    """The job export CVAT writes for ``job_id``, made from the project export's meta and images."""
    meta = project.get_task(task_id)
    segment = next(segment for segment in meta.segments if segment.job_id == job_id)
    assert meta.start_frame is not None
    images = [image for image in project.images if image.task_id == task_id]
    # A project export shifts each subset's frame ids by the earlier tasks' frames (T3: by 12).
    offset = min(int(image.id) for image in images) - meta.start_frame
    start = meta.start_frame + segment.start * meta.step
    stop = meta.start_frame + segment.stop * meta.step
    job_images = []
    for image in images:
        frame = int(image.id) - offset  # the task's absolute frame number
        if start <= frame <= stop:
            order = tuple(token for token in image.xml_layout or () if token.startswith("children="))
            job_images.append(
                attrs.evolve(
                    image,
                    id=str(frame),
                    task_id=None,
                    subset=None,
                    xml_layout=("id", "name", "width", "height", *order),
                )
            )
    job = Task(
        id=job_id, size=len(job_images), mode=meta.mode, overlap=meta.overlap, bugtracker=meta.bugtracker,
        created=meta.created, updated=meta.updated, subset=meta.subset, start_frame=start, stop_frame=stop,
        frame_filter=meta.frame_filter, segments=[Segment(id=segment.id, start=segment.start, stop=segment.stop,
        url=f"{BASE}/api/jobs/{job_id}")], owner=meta.owner, assignee=meta.assignee,
        labels=project.project.labels if project.project else (),
    )  # fmt: skip
    return cvatxml.dumps(Annotations(tasks=[job], images=job_images, kind="job", dumped=project.dumped))


@pytest.fixture
def project(corpus: Path) -> Annotations:
    return cvatxml.load(corpus / PROJECT)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("task_id", "job_id"), [("3", "6"), ("5", "10"), ("4", "8")])
def test_a_job_export_is_read_as_the_job_it_is(
    project: Annotations, tmp_path: Path, task_id: str, job_id: str
) -> None:
    """kind "job", the job's id kept; no image claims the job's id as its task; the summary agrees;
    and the file is saved back byte for byte."""
    data = job_export(project, task_id, job_id)
    assert b"<job>" in data and b"task_id" not in data
    path = _write(tmp_path, "job.xml", data)
    annotations = cvatxml.load(path)
    assert (annotations.kind, annotations.job_id, annotations.tasks[0].id) == ("job", job_id, job_id)
    assert all(image.task_id is None for image in annotations.images)
    summary = cvatxml.load_summary(path)
    assert summary == annotations.summary()
    assert summary.job_id == job_id
    assert summary.image_counts == {None: len(annotations.images)}
    assert cvatxml.dumps(annotations) == data


@pytest.mark.parametrize(("task_id", "job_id"), list(JOB_RANGES))
def test_job_export_links_are_task_frames_within_the_job_range(
    project: Annotations, corpus: Path, tmp_path: Path, task_id: str, job_id: str
) -> None:
    """Every image links to /tasks/T/jobs/J?frame=F: T from the job-status file, J the job, F the
    task frame the project export gives the same image, inside the range CVAT's API gives the job."""
    path = _write(tmp_path, "job.xml", job_export(project, task_id, job_id))
    annotations = Annotations.from_path(path, corpus / JOB_STATUS)
    first, last = JOB_RANGES[(task_id, job_id)]
    assert len(annotations.images) == last - first + 1
    for image in annotations.images:
        same = project.get_image(image.name, task=task_id)
        frame = project.frame_of_image(same)
        assert first <= frame <= last
        assert annotations.frame_of_image(image) == frame
        assert (
            annotations.create_cvat_link(image.name) == f"{BASE}/tasks/{task_id}/jobs/{job_id}?frame={frame}"
        )
        assert annotations.task_id_of_image(image) == task_id


@pytest.mark.parametrize(
    ("task_id", "job_id", "completed", "accepted"),
    [("3", "6", ["3"], []), ("4", "8", ["4"], ["4"]), ("5", "10", [], [])],
)
def test_a_job_export_completes_with_its_task(
    project: Annotations,
    corpus: Path,
    tmp_path: Path,
    task_id: str,
    job_id: str,
    completed: list[str],
    accepted: list[str],
) -> None:
    """Completion is the task's (all its counting jobs), found through the job: T1 and T2 completed,
    T2 also accepted, T3 not; the images of a completed job export are its images."""
    path = _write(tmp_path, "job.xml", job_export(project, task_id, job_id))
    annotations = Annotations.from_path(path, corpus / JOB_STATUS)
    assert annotations.get_completed_task_ids() == completed
    assert annotations.get_completed_task_ids(rule="accepted") == accepted
    assert [task.id for task in annotations.get_completed_tasks()] == [job_id] * len(completed)
    assert annotations.is_task_completed(task_id) == bool(completed)
    assert annotations.get_images_from_completed_tasks() == (list(annotations.images) if completed else [])
    assert annotations.images_of_task(task_id) == list(annotations.images)
    assert annotations.images_of_task(job_id) == []
    assert annotations.get_task(task_id) is annotations.tasks[0]


def test_without_the_job_status_the_task_of_a_job_export_is_unknown(
    project: Annotations, tmp_path: Path
) -> None:
    """Questions needing the task say it is a job export whose task is unknown, and what would tell."""
    path = _write(tmp_path, "job.xml", job_export(project, "3", "6"))
    annotations = Annotations.from_path(path)
    assert annotations.get_completed_task_ids() == []
    with pytest.raises(
        QueryError, match=r"is a job export \(job 6\) whose task is unknown: load it with a job-s"
    ):
        annotations.create_cvat_link("t1_img_05.png")
    with pytest.raises(QueryError, match=r"no task with id '6' .*job export \(job 6\) whose task is unknown"):
        annotations.get_task("6")
    others = attrs.evolve(annotations, job_status=load_job_status(_jobs(tmp_path, [("5", "3", "completed")])))
    with pytest.raises(QueryError, match="the job-status records do not name job 6"):
        others.create_cvat_link("t1_img_05.png")


def _jobs(tmp_path: Path, records: list[tuple[str, str, str]]) -> Path:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"job_id": j, "task_id": t, "state": s} for j, t, s in records]))
    return path


# A job of task 21 covering the task's frames 4–7 (start_frame 0, step 1), as CVAT writes it.
SMALL_JOB = """\
<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <job>
      <id>77</id>
      <size>4</size>
      <mode>annotation</mode>
      <overlap>0</overlap>
      <bugtracker></bugtracker>
      <created>2026-12-04 10:59:39.935137+00:00</created>
      <updated>2026-12-04 11:01:53.465735+00:00</updated>
      <subset>default</subset>
      <start_frame>4</start_frame>
      <stop_frame>7</stop_frame>
      <frame_filter></frame_filter>
      <segments>
        <segment>
          <id>31</id>
          <start>4</start>
          <stop>7</stop>
          <url>http://cvat.local:8080/api/jobs/77</url>
        </segment>
      </segments>
      <owner>
        <username>admin</username>
        <email>admin@localhost.localdomain</email>
      </owner>
      <assignee></assignee>
      <labels>
        <label>
          <name>car</name>
          <color>#fa3253</color>
          <type>rectangle</type>
          <attributes>
          </attributes>
        </label>
      </labels>
    </job>
    <dumped>2026-12-04 11:03:29.071526+00:00</dumped>
  </meta>
  <image id="4" name="f4.png" width="8" height="8">
    <box label="car" source="manual" occluded="0" xtl="1.00" ytl="1.00" xbr="2.00" ybr="2.00" z_order="0">
    </box>
  </image>
  <image id="5" name="f5.png" width="8" height="8">
  </image>
  <image id="6" name="f6.png" width="8" height="8">
  </image>
  <image id="7" name="f7.png" width="8" height="8">
  </image>
</annotations>
"""


def test_a_job_covering_task_frames_4_to_7_links_its_image_ids_as_they_are(tmp_path: Path) -> None:
    """Image ids 4–7 are task frames 4–7: the link keeps them (no start frame subtracted again)."""
    path = _write(tmp_path, "job.xml", SMALL_JOB.encode())
    jobs = _jobs(tmp_path, [("76", "21", "completed"), ("77", "21", "completed"), ("78", "22", "new")])
    annotations = Annotations.from_path(path, jobs)
    links = [annotations.create_cvat_link(image.name) for image in annotations.images]
    assert links == [f"http://cvat.local:8080/tasks/21/jobs/77?frame={frame}" for frame in range(4, 8)]
    assert annotations.create_cvat_link(image_id=6) == "http://cvat.local:8080/tasks/21/jobs/77?frame=6"
    assert annotations.get_completed_task_ids() == ["21"]
    assert cvatxml.dumps(annotations) == SMALL_JOB.encode()


def test_status_of_a_job_export_shows_its_task_or_says_what_is_missing(tmp_path: Path) -> None:
    """`cvat-watch status` on a job export: the task row through the job-status file; without it,
    no empty table but a line saying the task is unknown and what to pass."""
    path = _write(tmp_path, "job.xml", SMALL_JOB.encode())
    jobs = _jobs(tmp_path, [("76", "21", "completed"), ("77", "21", "completed")])
    result = run_cli("status", str(path), "--jobs", str(jobs), "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert (row["id"], row["images"], row["jobs_completed"], row["jobs_total"], row["completed"]) == (
        "21",
        4,
        2,
        2,
        True,
    )
    assert row["link"] == "http://cvat.local:8080/tasks/21"
    alone = run_cli("status", str(path))
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout == ""
    assert (
        "job export of job 77, whose task is unknown: pass --jobs with a job-status file that lists job 77"
        in (alone.stderr)
    )


def test_the_daemon_announces_the_task_of_a_watched_job_export(tmp_path: Path) -> None:
    """A watched job export: its task completes when the last of the task's jobs does (a job the
    export does not hold included), and the runner commits task.completed for the task's id."""
    path = _write(tmp_path, "job.xml", SMALL_JOB.encode())
    jobs = _jobs(tmp_path, [("76", "21", "in progress"), ("77", "21", "completed")])
    summary = cvatxml.load_summary(path)
    open_snapshot = build_snapshot(watch="w", summary=summary, jobs=parse_job_status(jobs.read_bytes()))
    assert [
        (task.id, task.completed, task.image_count, task.shape_count) for task in open_snapshot.tasks
    ] == [("21", False, 4, 1)]
    announced: list[Event] = []

    def targets(event: Event) -> list[str]:
        announced.append(event)
        return ["hook"]

    store = Store.open(tmp_path / "state" / "cvat-watch.db")
    try:
        watch = WatchConfig(name="w", annotations=path, job_status=jobs)
        runner = WatchRunner(config=watch, store=store, targets=targets, clock=lambda: 1_780_000_000.0)
        assert runner.reload(force=True).status == "committed"
        assert not [event for event in announced if event.type == TASK_COMPLETED]
        _jobs(tmp_path, [("76", "21", "completed"), ("77", "21", "completed")])
        outcome = runner.reload(force=True)
    finally:
        store.close()
    assert outcome.status == "committed", outcome.error
    assert [(event.type, event.task.id) for event in outcome.events] == [(TASK_COMPLETED, "21")]


def test_an_unresolved_job_export_gives_the_daemon_no_task(tmp_path: Path) -> None:
    """Until a record names the job, the job export has no task to announce (never the job's id)."""
    path = _write(tmp_path, "job.xml", SMALL_JOB.encode())
    summary = cvatxml.load_summary(path)
    snapshot = build_snapshot(
        watch="w",
        summary=summary,
        jobs=parse_job_status(b'[{"job_id": 5, "task_id": 1, "state": "completed"}]'),
    )
    assert snapshot.tasks == ()


def test_image_annotation_of_a_job_export_has_no_task_id() -> None:
    """A job export names no task: its images' task_id stays None and is not written."""
    annotations = cvatxml.loads(SMALL_JOB.encode())
    assert {image.task_id for image in annotations.images} == {None}
    assert annotations.task_id_of_image(annotations.images[0]) is None
    assert isinstance(annotations.images[0], ImageAnnotation)
