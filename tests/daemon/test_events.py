"""Events: stable ids, links, and the exact payload handlers receive."""

from __future__ import annotations

import json
import re

import pytest
from cvat_watch.daemon.events import (
    JOB_STATE_CHANGED,
    TASK_COMPLETED,
    TASK_REOPENED,
    Event,
    JobInfo,
    ProjectInfo,
    TaskInfo,
    event_id,
    job_url,
    task_url,
)

TASK = TaskInfo(
    id="7",
    name="street",
    subset="train",
    url="http://cvat:8080/tasks/7",
    image_count=3,
    shape_count=12,
    jobs=(JobInfo(id="70", state="completed", stage="acceptance", assignee="ann", url=None),),
)


EPOCH = "e" * 32


def test_event_id_shape() -> None:
    """An id is "evt_" followed by 32 lower-case hex digits."""
    assert re.fullmatch(r"evt_[0-9a-f]{32}", event_id("w", "7", TASK_COMPLETED, 1, epoch=EPOCH))


def test_event_id_is_stable() -> None:
    """The same parts give the same id, call after call (and process after process)."""
    assert event_id("w", "7", TASK_COMPLETED, 1, epoch=EPOCH) == event_id(
        "w", "7", TASK_COMPLETED, 1, epoch=EPOCH
    )
    # Pinned, so that an innocent refactoring cannot change every id a receiver has deduplicated:
    # sha256 of the JSON array [epoch, watch, task, transition, generation, job], 32 hex digits.
    assert event_id("w", "7", TASK_COMPLETED, 1, epoch=EPOCH) == "evt_6c2b3ed904a044a1ca565fdc8e64b119"


@pytest.mark.parametrize(
    "other",
    [
        ("w2", "7", TASK_COMPLETED, 1, None, EPOCH),
        ("w", "8", TASK_COMPLETED, 1, None, EPOCH),
        ("w", "7", TASK_REOPENED, 1, None, EPOCH),
        ("w", "7", TASK_COMPLETED, 2, None, EPOCH),
        ("w", "7", TASK_COMPLETED, 1, "70", EPOCH),
        ("w", "7", TASK_COMPLETED, 1, None, "f" * 32),
    ],
)
def test_event_id_differs_in_any_part(other: tuple[str, str, str, int, str | None, str]) -> None:
    """Changing the watch, task, transition, generation, job or the state's epoch gives a different id."""
    *parts, epoch = other
    assert event_id(*parts, epoch=epoch) != event_id("w", "7", TASK_COMPLETED, 1, epoch=EPOCH)


def test_event_id_keeps_parts_apart() -> None:
    """Parts are not simply concatenated: moving a character between parts changes the id."""
    assert event_id("a:b", "c", "t", 1, epoch=EPOCH) != event_id("a", "b:c", "t", 1, epoch=EPOCH)
    assert event_id("w1", "2", "t", 1, epoch=EPOCH) != event_id("w", "12", "t", 1, epoch=EPOCH)
    assert event_id("w", "2", "t", 1, epoch="e1") != event_id("we", "2", "t", 1, epoch="1")


@pytest.mark.parametrize(
    ("base", "task", "job"),
    [
        ("http://cvat:8080", "http://cvat:8080/tasks/7", "http://cvat:8080/tasks/7/jobs/70"),
        ("http://cvat:8080/", "http://cvat:8080/tasks/7", "http://cvat:8080/tasks/7/jobs/70"),
        (None, None, None),
        ("", None, None),
    ],
)
def test_links(base: str | None, task: str | None, job: str | None) -> None:
    """Task and job links are built on the base URL (trailing slash or not), None without one."""
    assert task_url(base, "7") == task
    assert job_url(base, "7", "70") == job


def test_task_event_payload_has_exactly_the_documented_keys() -> None:
    """A task event's payload has type, id, timestamp, watch, project and task, nothing else."""
    event = Event(
        type=TASK_COMPLETED,
        id="evt_1",
        timestamp="2024-05-01T10:00:00.000000Z",
        watch="w",
        project=ProjectInfo(id="3", name="roads"),
        task=TASK,
    )
    assert event.to_payload() == {
        "type": "task.completed",
        "id": "evt_1",
        "timestamp": "2024-05-01T10:00:00.000000Z",
        "watch": "w",
        "project": {"id": "3", "name": "roads"},
        "task": {
            "id": "7",
            "name": "street",
            "subset": "train",
            "url": "http://cvat:8080/tasks/7",
            "image_count": 3,
            "shape_count": 12,
            "jobs": [
                {"id": "70", "state": "completed", "stage": "acceptance", "assignee": "ann", "url": None}
            ],
        },
    }


def test_job_event_payload_adds_job_and_previous_state() -> None:
    """A job.state_changed payload carries the job and its previous state as well."""
    job = JobInfo(
        id="70", state="completed", stage="acceptance", assignee=None, url="http://x/tasks/7/jobs/70"
    )
    event = Event(
        type=JOB_STATE_CHANGED,
        id="evt_2",
        timestamp="t",
        watch="w",
        project=None,
        task=TASK,
        job=job,
        previous_state="in progress",
    )
    payload = event.to_payload()
    assert list(payload) == ["type", "id", "timestamp", "watch", "project", "task", "job", "previous_state"]
    assert payload["project"] is None
    assert payload["job"] == {
        "id": "70",
        "state": "completed",
        "stage": "acceptance",
        "assignee": None,
        "url": "http://x/tasks/7/jobs/70",
    }
    assert payload["previous_state"] == "in progress"


def test_payload_is_json() -> None:
    """The payload survives a JSON round trip unchanged (it is what the store keeps)."""
    event = Event(type=TASK_REOPENED, id="evt_3", timestamp="t", watch="w", project=None, task=TASK)
    payload = event.to_payload()
    assert json.loads(json.dumps(payload)) == payload
