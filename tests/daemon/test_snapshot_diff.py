"""Snapshots of an export and the pure diff that turns two of them into events."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping

import attrs
import pytest
from cvat_watch.daemon.diff import DiffResult, diff
from cvat_watch.daemon.events import JOB_STATE_CHANGED, TASK_COMPLETED, TASK_REOPENED, Event
from cvat_watch.daemon.snapshot import (
    JobState,
    Snapshot,
    SnapshotBuilder,
    TaskState,
    build_snapshot,
    id_sort_key,
)
from cvat_watch.model import ExportSummary, JobStatus, Project, Segment, Task
from cvat_watch.testing.ids import documented_event_id
from hypothesis import given, settings
from hypothesis import strategies as st

TS = "2024-05-01T10:00:00.000000Z"
EPOCH = "e" * 32

# -- building snapshots ----------------------------------------------------------------------


def summary(*tasks: Task, project: Project | None = None) -> ExportSummary:
    return ExportSummary(
        kind="project" if project else "task",
        project=project,
        tasks=tasks,
        image_counts={t.id: 2 for t in tasks},
        shape_counts={t.id: 5 for t in tasks},
    )


def test_build_snapshot_counts_only_counting_jobs_of_described_tasks() -> None:
    """Tasks without an id, jobs of unknown tasks and ground-truth jobs stay out of the snapshot."""
    export = summary(Task(id="1", name="a", subset="train"), Task(id=None, name="anonymous"))
    jobs = [
        JobStatus(job_id="10", task_id="1", state="completed", stage="acceptance", assignee="ann"),
        JobStatus(job_id="11", task_id="1", state="new", type="ground_truth"),
        JobStatus(job_id="99", task_id="9", state="completed"),
    ]
    snapshot = build_snapshot(watch="w", summary=export, jobs=jobs)
    assert snapshot.tasks == (
        TaskState(
            id="1",
            name="a",
            subset="train",
            completed=True,
            jobs=(JobState(id="10", state="completed", stage="acceptance", assignee="ann", type=None),),
            image_count=2,
            shape_count=5,
        ),
    )


@pytest.mark.parametrize(
    ("states", "rule", "completed"),
    [
        ([("completed", "acceptance"), ("completed", "validation")], "completed", True),
        ([("completed", "acceptance"), ("completed", "validation")], "accepted", False),
        ([("completed", "acceptance")], "accepted", True),
        ([("completed", None), ("in progress", None)], "completed", False),
        ([], "completed", False),
    ],
)
def test_completion_rule(states: list[tuple[str, str | None]], rule: str, completed: bool) -> None:
    """A task is completed with at least one counting job and all of them done under the rule."""
    jobs = [
        JobStatus(job_id=str(10 + i), task_id="1", state=state, stage=stage)
        for i, (state, stage) in enumerate(states)
    ]
    snapshot = build_snapshot(
        watch="w",
        summary=summary(Task(id="1")),
        jobs=jobs,
        rule=rule,  # type: ignore[arg-type]
    )
    assert snapshot.tasks[0].completed is completed


def test_later_record_of_a_job_wins() -> None:
    """A job listed twice in the job-status file counts once, with its last record."""
    jobs = [
        JobStatus(job_id="10", task_id="1", state="new"),
        JobStatus(job_id="10", task_id="1", state="completed"),
    ]
    snapshot = build_snapshot(watch="w", summary=summary(Task(id="1")), jobs=jobs)
    assert [j.state for j in snapshot.tasks[0].jobs] == ["completed"]
    assert snapshot.tasks[0].completed


def test_tasks_and_jobs_are_sorted_numerically() -> None:
    """Tasks and jobs are ordered by id with numbers compared as numbers (9 before 10)."""
    export = summary(Task(id="10"), Task(id="9"), Task(id="x2"), Task(id="100"))
    jobs = [JobStatus(job_id=j, task_id="10", state="new") for j in ("20", "3", "100")]
    snapshot = build_snapshot(watch="w", summary=export, jobs=jobs)
    assert [t.id for t in snapshot.tasks] == ["9", "10", "100", "x2"]
    assert [j.id for j in snapshot.by_id()["10"].jobs] == ["3", "20", "100"]
    assert sorted(["a10", "a9", "b1", "10"], key=id_sort_key) == ["10", "a9", "a10", "b1"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://cvat.example.org/", "https://cvat.example.org"),
        (None, "http://localhost:8080"),
    ],
)
def test_base_url_given_or_from_the_export(given: str | None, expected: str) -> None:
    """The base URL is the configured one, else scheme and host of the export's job URLs."""
    task = Task(id="1", segments=(Segment(id="4", start=0, stop=1, url="http://localhost:8080/api/jobs/4"),))
    assert build_snapshot(watch="w", summary=summary(task), jobs=[], base_url=given).base_url == expected


def test_no_base_url_without_job_urls() -> None:
    """An export without job URLs and no configured base URL has no base URL."""
    assert build_snapshot(watch="w", summary=summary(Task(id="1")), jobs=[]).base_url is None


def test_snapshot_json_round_trip() -> None:
    """A snapshot survives to_dict → JSON → from_dict unchanged (the store keeps it that way)."""
    export = summary(Task(id="1", name="ä"), Task(id="2"), project=Project(id="3", name="roads"))
    jobs = [JobStatus(job_id="10", task_id="1", state="completed", type="annotation")]
    snapshot = build_snapshot(watch="w", summary=export, jobs=jobs, base_url="http://c")
    assert Snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict()))) == snapshot
    assert snapshot.project_id == "3"
    assert snapshot.project_name == "roads"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789٣߂a-", max_size=8))
def test_id_sort_key_reads_digit_runs_as_numbers(value: str) -> None:
    """The key is the id cut into runs of digits (as numbers, any decimal digits) and of other text."""
    pieces = tuple(
        (0, int(run), run) if run[0].isdecimal() else (1, 0, run) for run in re.findall(r"\d+|\D+", value)
    )
    assert id_sort_key(value) == pieces


# -- building snapshot after snapshot ----------------------------------------------------------------

_TASK_IDS = ("1", "2", "3", "10", "x4")


@st.composite
def _builds(draw: st.DrawFn) -> list[tuple[ExportSummary, tuple[JobStatus, ...], str]]:
    """Successive (summary, jobs, rule) of one watch, as the runner passes them: the same summary object
    while the export is unchanged, and the same JobStatus object for a record that did not change."""

    def summary() -> ExportSummary:
        ids = draw(st.lists(st.sampled_from((*_TASK_IDS, None)), max_size=5))
        tasks = tuple(Task(id=i, name=draw(st.sampled_from(["a", "b", None]))) for i in ids)
        counts = {i: draw(st.integers(0, 2)) for i in ids}
        return ExportSummary(kind="project", project=None, tasks=tasks, image_counts=counts, shape_counts={})

    def job() -> JobStatus:
        return JobStatus(
            job_id=draw(st.sampled_from(["5", "6", "7", "8", "9", "11"])),
            task_id=draw(st.sampled_from((*_TASK_IDS, "99"))),
            state=draw(st.sampled_from(["new", "completed"])),
            stage=draw(st.sampled_from([None, "acceptance"])),
            type=draw(st.sampled_from([None, "annotation", "ground_truth"])),
        )

    current = summary()
    rule = draw(st.sampled_from(["completed", "accepted"]))
    jobs = [job() for _ in range(draw(st.integers(0, 8)))]
    builds = [(current, tuple(jobs), rule)]
    for _ in range(draw(st.integers(1, 8))):
        edits = ["state", "state", "state", "move", "insert", "remove", "summary", "rule", "none"]
        edit = draw(st.sampled_from(edits))
        if edit == "summary":
            current = summary()
        elif edit == "rule":
            rule = draw(st.sampled_from(["completed", "accepted"]))
        elif edit == "insert":
            jobs.insert(draw(st.integers(0, len(jobs))), job())
        elif jobs and edit == "remove":
            del jobs[draw(st.integers(0, len(jobs) - 1))]
        elif jobs and edit in ("state", "move"):
            place = draw(st.integers(0, len(jobs) - 1))
            if edit == "state":
                jobs[place] = attrs.evolve(jobs[place], state=draw(st.sampled_from(["new", "completed"])))
            else:
                jobs[place] = attrs.evolve(jobs[place], task_id=draw(st.sampled_from(_TASK_IDS)))
        builds.append((current, tuple(jobs), rule))
    return builds


@settings(max_examples=300, deadline=None)
@given(_builds())
def test_a_builder_builds_what_build_snapshot_builds(
    builds: list[tuple[ExportSummary, tuple[JobStatus, ...], str]],
) -> None:
    """Build after build, a SnapshotBuilder returns exactly the snapshot build_snapshot returns."""
    builder = SnapshotBuilder()
    for summary, jobs, rule in builds:
        expected = build_snapshot(watch="w", summary=summary, jobs=jobs, rule=rule)  # type: ignore[arg-type]
        assert builder.build(watch="w", summary=summary, jobs=jobs, rule=rule) == expected  # type: ignore[arg-type]


def test_tasks_and_jobs_given_as_tuples_are_sorted_too() -> None:
    """A snapshot's tasks and a task's jobs come out sorted by id whatever sequence they are given in."""
    jobs = (JobState(id="10", state="new"), JobState(id="9", state="new"))
    task = TaskState(id="1", jobs=jobs)
    assert [job.id for job in task.jobs] == ["9", "10"]
    snapshot = Snapshot(watch="w", tasks=(TaskState(id="10"), task))
    assert [t.id for t in snapshot.tasks] == ["1", "10"]
    assert type(snapshot.tasks) is tuple


def test_a_builder_keeps_the_task_states_whose_inputs_did_not_change() -> None:
    """Changing one record rebuilds its task only; a new summary with the same tasks rebuilds none."""
    export = summary(*(Task(id=str(i), name=f"t{i}") for i in range(1, 5)))
    jobs = [
        JobStatus(job_id=str(10 * t + j), task_id=str(t), state="new") for t in range(1, 5) for j in range(3)
    ]
    builder = SnapshotBuilder()
    first = builder.build(watch="w", summary=export, jobs=jobs)
    jobs[4] = attrs.evolve(jobs[4], state="completed")
    second = builder.build(watch="w", summary=export, jobs=jobs)
    assert [a is b for a, b in zip(first.tasks, second.tasks, strict=True)] == [True, False, True, True]
    assert second == build_snapshot(watch="w", summary=export, jobs=jobs)
    same_export = summary(*(Task(id=str(i), name=f"t{i}") for i in range(1, 5)))
    third = builder.build(watch="w", summary=same_export, jobs=jobs)
    assert all(a is b for a, b in zip(second.tasks, third.tasks, strict=True))
    renamed = summary(*(Task(id=str(i), name="other" if i == 3 else f"t{i}") for i in range(1, 5)))
    fourth = builder.build(watch="w", summary=renamed, jobs=jobs)
    assert [a is b for a, b in zip(third.tasks, fourth.tasks, strict=True)] == [True, True, False, True]
    assert fourth.tasks[2].name == "other"
    builder.forget()
    fresh = builder.build(watch="w", summary=renamed, jobs=jobs)
    assert all(a is not b for a, b in zip(fourth.tasks, fresh.tasks, strict=True))


# -- the diff --------------------------------------------------------------------------------

Spec = Mapping[str, "str | tuple[str, ...]"]


def snap(spec: Spec, *, watch: str = "w") -> Snapshot:
    """A snapshot from {task id: job states}; one state string means a single job.

    Job ids are the task id times 10 plus the job's index; a task is completed when every job is.
    """
    tasks = []
    for task_id, states in spec.items():
        states = (states,) if isinstance(states, str) else states
        jobs = [JobState(id=str(int(task_id) * 10 + i), state=s) for i, s in enumerate(states)]
        completed = bool(jobs) and all(s == "completed" for s in states)
        tasks.append(TaskState(id=task_id, name=f"task {task_id}", completed=completed, jobs=jobs))
    return Snapshot(watch=watch, project_id="3", project_name="p", base_url="http://c", tasks=tasks)


def kinds(result: DiffResult) -> list[tuple[str, str]]:
    return [(e.type, e.task.id) for e in result.events]


@pytest.mark.parametrize(
    ("old", "new", "notify_existing", "expected"),
    [
        pytest.param(None, {"1": "completed", "2": "new"}, False, [], id="first-start-silent"),
        pytest.param(
            None, {"1": "completed", "2": "new"}, True, [(TASK_COMPLETED, "1")], id="first-start-notify"
        ),
        pytest.param({"1": "new"}, {"1": "completed"}, False, [(TASK_COMPLETED, "1")], id="complete"),
        pytest.param({}, {"1": "completed"}, False, [(TASK_COMPLETED, "1")], id="appears-completed"),
        pytest.param({"1": "completed"}, {"1": "in progress"}, False, [(TASK_REOPENED, "1")], id="reopen"),
        pytest.param({"1": "completed"}, {}, False, [], id="completed-task-removed"),
        pytest.param({"1": "new"}, {}, False, [], id="open-task-removed"),
        pytest.param({"1": "completed"}, {"1": "completed"}, True, [], id="unchanged"),
        pytest.param(
            {"1": ("completed", "new")},
            {"1": ("completed", "completed")},
            False,
            [(TASK_COMPLETED, "1")],
            id="last-job-completes-the-task",
        ),
        pytest.param(
            {"10": "new", "9": "new", "2": "completed"},
            {"10": "completed", "9": "completed", "2": "new"},
            False,
            [(TASK_REOPENED, "2"), (TASK_COMPLETED, "9"), (TASK_COMPLETED, "10")],
            id="numeric-task-order",
        ),
    ],
)
def test_task_transitions(
    old: Spec | None, new: Spec, notify_existing: bool, expected: list[tuple[str, str]]
) -> None:
    """Task completions and reopenings between two snapshots, as the rules say."""
    result = diff(
        snap(old) if old is not None else None,
        snap(new),
        generations={},
        timestamp=TS,
        epoch=EPOCH,
        notify_existing=notify_existing,
    )
    assert kinds(result) == expected


def test_event_content() -> None:
    """A completion event carries the watch, project, task, links, jobs and the given timestamp."""
    result = diff(snap({"1": "new"}), snap({"1": "completed"}), generations={}, timestamp=TS, epoch=EPOCH)
    (event,) = result.events
    assert event.id == documented_event_id("w", "1", TASK_COMPLETED, 1, epoch=EPOCH)
    assert event.timestamp == TS
    assert event.watch == "w"
    assert (event.project.id, event.project.name) == ("3", "p")  # type: ignore[union-attr]
    assert event.task.url == "http://c/tasks/1"
    assert [(j.id, j.state, j.url) for j in event.task.jobs] == [
        ("10", "completed", "http://c/tasks/1/jobs/10")
    ]
    assert event.job is None
    assert event.previous_state is None
    assert result.generations == {"task:1": 1}


def test_first_start_keeps_given_generations() -> None:
    """A silent first start changes no counter; the next completion still gets a fresh generation."""
    result = diff(None, snap({"1": "completed"}), generations={"task:1": 4}, timestamp=TS, epoch=EPOCH)
    assert result.events == ()
    assert result.generations == {"task:1": 4}


def test_complete_reopen_complete_gets_new_ids() -> None:
    """Complete, reopen, complete again: each event has its own id; the reopen shares the generation."""
    states = [{"1": "new"}, {"1": "completed"}, {"1": "in progress"}, {"1": "completed"}]
    generations: Mapping[str, int] = {}
    events: list[Event] = []
    for old, new in itertools.pairwise(states):
        result = diff(snap(old), snap(new), generations=generations, timestamp=TS, epoch=EPOCH)
        generations = result.generations
        events.extend(result.events)
    assert [e.type for e in events] == [TASK_COMPLETED, TASK_REOPENED, TASK_COMPLETED]
    assert [e.id for e in events] == [
        documented_event_id("w", "1", TASK_COMPLETED, 1, epoch=EPOCH),
        documented_event_id("w", "1", TASK_REOPENED, 1, epoch=EPOCH),
        documented_event_id("w", "1", TASK_COMPLETED, 2, epoch=EPOCH),
    ]
    assert generations == {"task:1": 2}


def test_ids_are_stable_across_identical_diffs() -> None:
    """Diffing the same baseline twice (a replay after a crash) gives the same ids and counters."""
    old, new = snap({"1": "new", "2": "completed"}), snap({"1": "completed", "2": "new"})
    first = diff(old, new, generations={"task:2": 3}, timestamp=TS, epoch=EPOCH, job_events=True)
    second = diff(old, new, generations={"task:2": 3}, timestamp="another time", epoch=EPOCH, job_events=True)
    assert [e.id for e in first.events] == [e.id for e in second.events]
    assert first.generations == second.generations


def test_diff_does_not_change_the_given_generations() -> None:
    """The caller's mapping is left alone; the new counters come back in the result."""
    generations = {"task:1": 1}
    diff(snap({"1": "new"}), snap({"1": "completed"}), generations=generations, timestamp=TS, epoch=EPOCH)
    assert generations == {"task:1": 1}


def test_watches_do_not_share_ids() -> None:
    """The same transition in two watches gives two ids."""
    a = diff(
        snap({"1": "new"}, watch="a"),
        snap({"1": "completed"}, watch="a"),
        generations={},
        timestamp=TS,
        epoch=EPOCH,
    )
    b = diff(
        snap({"1": "new"}, watch="b"),
        snap({"1": "completed"}, watch="b"),
        generations={},
        timestamp=TS,
        epoch=EPOCH,
    )
    assert a.events[0].id != b.events[0].id


# -- job events ------------------------------------------------------------------------------


def job_changes(result: DiffResult) -> list[tuple[str, str | None, str]]:
    return [
        (e.job.id, e.previous_state, e.job.state)  # type: ignore[union-attr]
        for e in result.events
        if e.type == JOB_STATE_CHANGED
    ]


def test_job_events_are_opt_in() -> None:
    """Without job_events a job's state change produces no event."""
    old, new = snap({"1": ("new", "new")}), snap({"1": ("in progress", "new")})
    result = diff(old, new, generations={}, timestamp=TS, epoch=EPOCH)
    assert result.events == ()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            {"1": ("new", "new")}, {"1": ("in progress", "new")}, [("10", "new", "in progress")], id="one"
        ),
        pytest.param({"1": "new"}, {"1": ("new", "new")}, [], id="new-job-in-state-new"),
        pytest.param(
            {"1": "new"}, {"1": ("new", "completed")}, [("11", None, "completed")], id="new-job-done"
        ),
        pytest.param({}, {"1": "in progress"}, [("10", None, "in progress")], id="new-task"),
        pytest.param({"1": ("new", "new")}, {"1": "new"}, [], id="job-removed"),
    ],
)
def test_job_state_changes(old: Spec, new: Spec, expected: list[tuple[str, str | None, str]]) -> None:
    """With job_events, a job whose state differs (or that appears in a state other than new) is announced."""
    result = diff(snap(old), snap(new), generations={}, timestamp=TS, epoch=EPOCH, job_events=True)
    assert job_changes(result) == expected


def test_no_job_events_on_first_start() -> None:
    """A first start announces no job states, even with notify_existing."""
    result = diff(
        None,
        snap({"1": "completed"}),
        generations={},
        timestamp=TS,
        epoch=EPOCH,
        notify_existing=True,
        job_events=True,
    )
    assert kinds(result) == [(TASK_COMPLETED, "1")]


def test_job_events_come_before_the_task_event_they_explain() -> None:
    """Within a task, job changes (by job id) precede the completion; tasks go in id order."""
    result = diff(
        snap({"2": ("new", "new"), "1": "new"}),
        snap({"2": ("completed", "completed"), "1": "completed"}),
        generations={},
        timestamp=TS,
        epoch=EPOCH,
        job_events=True,
    )
    assert [(e.type, e.task.id, e.job.id if e.job else None) for e in result.events] == [
        (JOB_STATE_CHANGED, "1", "10"),
        (TASK_COMPLETED, "1", None),
        (JOB_STATE_CHANGED, "2", "20"),
        (JOB_STATE_CHANGED, "2", "21"),
        (TASK_COMPLETED, "2", None),
    ]
    job_event = result.events[0]
    assert job_event.job is not None
    assert job_event.job.url == "http://c/tasks/1/jobs/10"
    assert job_event.to_payload()["previous_state"] == "new"


def test_job_flapping_gets_distinct_ids() -> None:
    """A job going a → b → a → b gets a new id for every change."""
    states = ["new", "in progress", "new", "in progress"]
    generations: Mapping[str, int] = {}
    ids: list[str] = []
    for old, new in itertools.pairwise(states):
        result = diff(
            snap({"1": old}),
            snap({"1": new}),
            generations=generations,
            timestamp=TS,
            epoch=EPOCH,
            job_events=True,
        )
        generations = result.generations
        ids.extend(e.id for e in result.events)
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert generations == {"job:10": 3}
