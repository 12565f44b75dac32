"""The model's queries: completion, images of completed tasks, CVAT links."""

from __future__ import annotations

import pytest
from cvat_watch import Annotations, Box, ImageAnnotation, JobStatus, Segment, Task


def _job(job_id: int, task_id: int, state: str, **kwargs: str) -> JobStatus:
    return JobStatus(job_id=job_id, task_id=task_id, state=state, **kwargs)


def _video_task() -> Task:
    # Like CVAT's own video sample: absolute frames 10..19 with step 3, two overlapping segments.
    return Task(
        id="5",
        name="v1",
        size=4,
        mode="interpolation",
        start_frame=10,
        stop_frame=19,
        frame_filter="step=3",
        segments=[
            Segment(id="3", start=0, stop=3, url="http://localhost:7000/?id=3"),
            Segment(id="4", start=2, stop=3, url="http://localhost:7000/?id=4"),
        ],
    )


def _project() -> Annotations:
    tasks = [
        Task(
            id="1",
            name="a",
            size=3,
            subset="train",
            start_frame=0,
            frame_filter="",
            segments=[
                Segment(id="11", start=0, stop=1, url="https://cvat.example.com/api/jobs/11"),
                Segment(id="12", start=2, stop=2, url="https://cvat.example.com/api/jobs/12"),
            ],
        ),
        Task(
            id="2",
            name="b",
            size=2,
            subset="train",
            start_frame=0,
            segments=[Segment(id="21", start=0, stop=1, url="https://cvat.example.com/api/jobs/21")],
        ),
        Task(
            id="3",
            name="c",
            size=2,
            subset="val",
            start_frame=0,
            segments=[Segment(id="31", start=0, stop=1, url="https://cvat.example.com/api/jobs/31")],
        ),
    ]
    images = (
        [
            ImageAnnotation(
                id=i, name=f"a{i}.jpg", task_id="1", subset="train", boxes=[Box("car", 0, 0, 1, 1)]
            )
            for i in range(3)
        ]
        + [ImageAnnotation(id=3 + i, name=f"b{i}.jpg", task_id="2", subset="train") for i in range(2)]
        + [ImageAnnotation(id=i, name=f"c{i}.jpg", task_id="3", subset="val") for i in range(2)]
    )
    jobs = [
        _job(11, 1, "completed"),
        _job(12, 1, "completed"),
        _job(21, 2, "completed"),
        _job(22, 2, "in progress"),
        _job(31, 3, "completed", type="annotation"),
        _job(32, 3, "new", type="ground_truth"),
    ]
    return Annotations(kind="project", tasks=tasks, images=images, job_status=jobs)


def test_task_status_maps_job_ids_to_states() -> None:
    """get_task_status gives job id → state for the task's counting jobs, accepting int ids."""
    annotations = _project()
    assert annotations.get_task_status(2) == {"21": "completed", "22": "in progress"}
    assert annotations.get_task_status("3") == {"31": "completed"}


def test_completed_tasks_need_every_counting_job_completed() -> None:
    """A task is completed when all its jobs are; ground-truth jobs do not count."""
    annotations = _project()
    assert annotations.get_completed_task_ids() == ["1", "3"]
    assert [task.name for task in annotations.get_completed_tasks()] == ["a", "c"]


def test_no_job_status_means_nothing_completed() -> None:
    """Without a job-status file no task is completed."""
    annotations = Annotations(tasks=[Task(id="1")], images=[])
    assert annotations.get_completed_task_ids() == []


def test_task_without_jobs_is_not_completed() -> None:
    """A task needs at least one job to be completed."""
    annotations = Annotations(tasks=[Task(id="1"), Task(id="2")], job_status=[_job(1, 2, "completed")])
    assert annotations.get_completed_task_ids() == ["2"]


@pytest.mark.parametrize(
    ("stage", "expected"),
    [("acceptance", ["1"]), ("validation", []), (None, [])],
)
def test_accepted_rule_also_needs_the_acceptance_stage(stage: str | None, expected: list[str]) -> None:
    """The accepted rule is CVAT's own: completed state at the acceptance stage."""
    annotations = Annotations(tasks=[Task(id="1")], job_status=[_job(1, 1, "completed", stage=stage)])
    assert annotations.get_completed_task_ids(rule="accepted") == expected
    assert annotations.get_completed_task_ids() == ["1"]


def test_unfamiliar_state_is_not_done() -> None:
    """Only the state 'completed' counts as done; anything else is kept but not done."""
    annotations = Annotations(tasks=[Task(id="1")], job_status=[_job(1, 1, "archived")])
    assert annotations.get_task_status(1) == {"1": "archived"}
    assert annotations.get_completed_task_ids() == []


def test_images_from_completed_tasks() -> None:
    """Images of completed tasks come back in file order, others are left out."""
    names = [image.name for image in _project().get_images_from_completed_tasks()]
    assert names == ["a0.jpg", "a1.jpg", "a2.jpg", "c0.jpg", "c1.jpg"]


@pytest.mark.parametrize(
    ("image", "link"),
    [
        ("a0.jpg", "https://cvat.example.com/tasks/1/jobs/11?frame=0"),
        ("a2.jpg", "https://cvat.example.com/tasks/1/jobs/12?frame=2"),
        # Task 2 is the second task of subset train: CVAT offset its ids by task 1's 3 frames.
        ("b0.jpg", "https://cvat.example.com/tasks/2/jobs/21?frame=0"),
        ("b1.jpg", "https://cvat.example.com/tasks/2/jobs/21?frame=1"),
        # Subset val restarts at 0.
        ("c1.jpg", "https://cvat.example.com/tasks/3/jobs/31?frame=1"),
    ],
)
def test_project_export_links_undo_the_subset_offset(image: str, link: str) -> None:
    """In a project export the frame is the image id minus the earlier tasks' frames of its subset."""
    assert _project().create_cvat_link(image) == link


def test_link_base_url_overrides_and_tolerates_trailing_slash() -> None:
    """An explicit base URL replaces the export's host; a trailing slash is tolerated."""
    link = _project().create_cvat_link("a1.jpg", base_url="https://labels.internal/")
    assert link == "https://labels.internal/tasks/1/jobs/11?frame=1"


@pytest.mark.parametrize(
    ("image_id", "frame", "job"), [(10, 0, "3"), (13, 1, "3"), (16, 2, "3"), (19, 3, "3")]
)
def test_task_export_frame_uses_start_and_step(image_id: int, frame: int, job: str) -> None:
    """In a task export the frame is (id - start_frame) / step; overlapping segments: the first wins."""
    annotations = Annotations(tasks=[_video_task()], images=[ImageAnnotation(id=image_id, name="f.png")])
    assert annotations.create_cvat_link("f.png") == f"http://localhost:7000/tasks/5/jobs/{job}?frame={frame}"


def test_incomplete_meta_falls_back_to_rank_by_id() -> None:
    """Where the meta cannot explain an id, the image's rank among its task's images is its frame."""
    task = Task(
        id="7",
        segments=[
            Segment(id="70", start=0, stop=0, url="http://h/api/jobs/70"),
            Segment(id="71", start=1, stop=5, url="http://h/api/jobs/71"),
        ],
    )
    images = [ImageAnnotation(id=i, name=f"{i}.jpg", task_id="7") for i in (40, 20, 30)]
    annotations = Annotations(kind="project", tasks=[task], images=images)
    assert annotations.create_cvat_link("20.jpg") == "http://h/tasks/7/jobs/70?frame=0"
    assert annotations.create_cvat_link("40.jpg") == "http://h/tasks/7/jobs/71?frame=2"


def test_unknown_image_raises_lookup_error_naming_it() -> None:
    """Asking for a link to an image the export lacks raises LookupError naming the image."""
    with pytest.raises(LookupError, match=r"nope\.jpg"):
        _project().create_cvat_link("nope.jpg")


def test_link_without_any_job_url_needs_base_url() -> None:
    """Without job URLs in the export, a link needs base_url, and says so."""
    annotations = Annotations(
        tasks=[Task(id="1", segments=[Segment(id="9", start=0, stop=9)])],
        images=[ImageAnnotation(id=0, name="x.jpg")],
    )
    with pytest.raises(ValueError, match="base_url"):
        annotations.create_cvat_link("x.jpg")
    assert annotations.create_cvat_link("x.jpg", "http://c") == "http://c/tasks/1/jobs/9?frame=0"


@pytest.mark.parametrize(
    ("url", "job_id"),
    [
        ("http://localhost:8080/api/jobs/6", "6"),
        ("http://localhost:7000/?id=3", "3"),
        ("https://app.cvat.ai/api/jobs/123456", "123456"),
        (None, "42"),
    ],
)
def test_segment_job_id_parsed_from_either_url_form(url: str | None, job_id: str) -> None:
    """A segment's job id comes from a 2.x or 1.x URL, else it is the segment id."""
    assert Segment(id="42", start=0, stop=1, url=url).job_id == job_id


def test_equality_ignores_where_a_model_was_loaded_from(tmp_path: object) -> None:
    """Two models with the same content are equal whatever their paths."""
    from pathlib import Path

    first = Annotations(tasks=[Task(id="1")], path=Path("/a.xml"))
    second = Annotations(tasks=[Task(id="1")], path=Path("/b.xml"))
    assert first == second


def test_models_are_frozen_and_hashable() -> None:
    """Model values cannot be changed in place and can live in sets."""
    import attrs

    task = _video_task()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        task.name = "other"  # type: ignore[misc]
    assert len({task, _video_task()}) == 1


def test_repr_of_a_big_export_stays_short() -> None:
    """repr(Annotations) summarises instead of printing every shape."""
    images = [ImageAnnotation(id=i, name=f"{i}.jpg", boxes=[Box("x", 0, 0, 1, 1)] * 5) for i in range(1000)]
    assert len(repr(Annotations(images=images))) < 200


def test_to_dict_is_json_ready_and_from_dict_restores_the_model() -> None:
    """to_dict gives JSON-serialisable data and from_dict turns it back into an equal model."""
    import json

    annotations = _project()
    data = json.loads(json.dumps(annotations.to_dict()))
    assert data["tasks"][0]["segments"][0]["id"] == "11"
    assert Annotations.from_dict(data) == annotations
