"""project.completed / project.reopened: every task of a project export complete, and when that stops."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cvat_watch.daemon.diff import DiffResult, diff
from cvat_watch.daemon.events import (
    PROJECT_COMPLETED,
    PROJECT_REOPENED,
    TASK_COMPLETED,
    TASK_REOPENED,
    event_id,
    project_event_id,
)
from cvat_watch.daemon.snapshot import JobState, Snapshot, TaskState
from cvat_watch.handlers.base import event_fields
from cvat_watch.handlers.log import format_line
from cvat_watch.testing.process import DaemonProcess, NotifySocket, Workspace, run_cli
from cvat_watch.testing.receiver import Receiver

Spec = Mapping[str, bool]


def snap(spec: Spec, *, project_id: str | None = "3") -> Snapshot:
    """A snapshot whose tasks are complete or not as ``spec`` says (5 images and 2 shapes each)."""
    tasks = [
        TaskState(
            id=task_id,
            name=f"task {task_id}",
            completed=done,
            jobs=[JobState(id=str(int(task_id) * 10), state="completed" if done else "in progress")],
            image_count=5,
            shape_count=2,
        )
        for task_id, done in spec.items()
    ]
    return Snapshot(
        watch="w",
        project_id=project_id,
        project_name="roads" if project_id else None,
        base_url="http://cvat",
        tasks=tasks,
    )


EPOCH = "e" * 32


def run(
    old: Snapshot | None, new: Snapshot, generations: Mapping[str, int] | None = None, **options: bool
) -> DiffResult:
    options.setdefault("project_events", True)
    return diff(
        old,
        new,
        generations=generations or {},
        timestamp="2026-12-04T15:00:00.000000Z",
        epoch=EPOCH,
        **options,
    )


def kinds(result: DiffResult) -> list[tuple[str, str]]:
    return [
        (e.type, e.task.id if e.task else f"project {e.project.id if e.project else ''}")
        for e in result.events
    ]


@pytest.mark.parametrize(
    ("old", "new", "notify_existing", "expected"),
    [
        pytest.param(
            {"1": True, "2": False},
            {"1": True, "2": True},
            False,
            [(TASK_COMPLETED, "2"), (PROJECT_COMPLETED, "project 3")],
            id="last-task-completes-the-project",
        ),
        pytest.param(
            {"1": True, "2": True},
            {"1": True, "2": False},
            False,
            [(TASK_REOPENED, "2"), (PROJECT_REOPENED, "project 3")],
            id="a-reopened-task-reopens-the-project",
        ),
        pytest.param(
            {"1": True, "2": True},
            {"1": True, "2": True, "3": False},
            False,
            [(PROJECT_REOPENED, "project 3")],
            id="a-new-open-task-reopens-the-project",
        ),
        pytest.param(
            {"1": True, "2": False},
            {"1": True},
            False,
            [(PROJECT_COMPLETED, "project 3")],
            id="the-open-task-removed-completes-it",
        ),
        pytest.param({"1": False}, {"1": False}, False, [], id="still-open"),
        pytest.param({"1": True}, {"1": True}, True, [], id="still-complete"),
        pytest.param({}, {}, False, [], id="no-tasks-is-not-complete"),
        pytest.param(None, {"1": True}, False, [], id="first-start-silent"),
        pytest.param(
            None,
            {"1": True},
            True,
            [(TASK_COMPLETED, "1"), (PROJECT_COMPLETED, "project 3")],
            id="first-start-notify-existing",
        ),
    ],
)
def test_project_transitions(
    old: Spec | None, new: Spec, notify_existing: bool, expected: list[tuple[str, str]]
) -> None:
    """Project events follow the completion of all tasks, after the task events that cause them."""
    result = run(snap(old) if old is not None else None, snap(new), notify_existing=notify_existing)
    assert kinds(result) == expected


def test_only_for_project_exports() -> None:
    """A task export (no project id) never gets project events."""
    result = run(snap({"1": False}, project_id=None), snap({"1": True}, project_id=None))
    assert kinds(result) == [(TASK_COMPLETED, "1")]


def test_only_when_some_handler_wants_them() -> None:
    """Without project_events (no handler lists them) nothing is produced and no counter moves."""
    result = run(snap({"1": False}), snap({"1": True}), project_events=False)
    assert kinds(result) == [(TASK_COMPLETED, "1")]
    assert "project:3" not in result.generations


def test_ids_are_stable_and_new_after_a_reopen() -> None:
    """The same transition gives the same id; completing again after a reopen gives a new one."""
    first = run(snap({"1": False}), snap({"1": True}))
    again = run(snap({"1": False}), snap({"1": True}))
    completed = first.events[-1]
    assert (
        completed.id == again.events[-1].id == project_event_id("w", "3", PROJECT_COMPLETED, 1, epoch=EPOCH)
    )
    reopened = run(snap({"1": True}), snap({"1": False}), first.generations).events[-1]
    assert reopened.type == PROJECT_REOPENED
    second = run(snap({"1": False}), snap({"1": True}), first.generations)
    assert second.generations["project:3"] == 2
    ids = {completed.id, reopened.id, second.events[-1].id}
    assert len(ids) == 3
    # And never the id of a task event, whatever the ids look like.
    assert completed.id != event_id("w", "3", PROJECT_COMPLETED, 1, epoch=EPOCH)
    # And another state (another epoch) never repeats it.
    assert completed.id != project_event_id("w", "3", PROJECT_COMPLETED, 1, epoch="f" * 32)


def test_payload_follows_the_task_event_conventions() -> None:
    """type, id, timestamp, watch and the project with its link and counts; no task."""
    event = run(snap({"1": True, "2": False}), snap({"1": True, "2": True})).events[-1]
    payload = event.to_payload()
    assert payload == {
        "type": "project.completed",
        "id": event.id,
        "timestamp": "2026-12-04T15:00:00.000000Z",
        "watch": "w",
        "project": {
            "id": "3",
            "name": "roads",
            "url": "http://cvat/projects/3",
            "task_count": 2,
            "image_count": 10,
            "shape_count": 4,
        },
    }
    fields = event_fields(payload)
    assert (fields["summary"], fields["task_count"], fields["image_count"]) == (
        "project completed",
        "2",
        "10",
    )
    assert format_line(payload) == (
        'project.completed: project 3 "roads" (watch w) — 2 tasks, 10 images — http://cvat/projects/3'
    )


# --- end to end: real files, the real daemon, a real receiver --------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def _hook(url: str) -> str:
    return Workspace.webhook(
        url, extra='events = ["task.completed", "task.reopened", "project.completed", "project.reopened"]'
    )


def test_the_daemon_announces_project_completion_and_reopening(tmp_path: Path, receiver: Receiver) -> None:
    """The example project (3 tasks): the last task completing announces the project; a reopen takes it back."""
    workspace = Workspace(tmp_path)
    workspace.write_config(handlers=[_hook(receiver.url())])
    notify = NotifySocket(tmp_path / "notify.sock")
    with notify, DaemonProcess(workspace.config, env={"NOTIFY_SOCKET": str(notify.path)}) as daemon:
        notify.wait_for("READY=1")
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
        receiver.wait_for(2)
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "in progress"})
        receiver.wait_for(4)
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
        requests = receiver.wait_for(6)
        assert daemon.stop() == 0
    events = [json.loads(request.body) for request in requests]
    assert [(e["type"], (e.get("task") or {}).get("id")) for e in events] == [
        ("task.completed", "12"),
        ("project.completed", None),
        ("task.reopened", "12"),
        ("project.reopened", None),
        ("task.completed", "12"),
        ("project.completed", None),
    ]
    project = events[1]["project"]
    assert project == {
        "id": "1",
        "name": "Street scenes",
        "url": "http://localhost:8080/projects/1",
        "task_count": 3,
        "image_count": 8,
        "shape_count": project["shape_count"],
    }
    assert events[1]["id"] != events[5]["id"]
    assert len({e["id"] for e in events}) == 6


def test_once_with_notify_existing_announces_a_complete_project_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    """`once` on an already complete project with notify_existing: one project.completed; a second `once` none."""
    workspace = Workspace(tmp_path)
    workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
    workspace.write_config(handlers=[_hook(receiver.url())], watch_extra="notify_existing = true")
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0
    requests = receiver.wait_for(4)
    assert [json.loads(r.body)["type"] for r in requests].count("project.completed") == 1
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0
    assert len(receiver.requests) == 4
