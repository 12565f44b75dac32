"""Nothing is announced from a partial view, end to end: the real daemon in a subprocess, real
files, a real webhook receiver on 127.0.0.1.

A visibly partial job listing is a failed load; jobs of tasks the export does not hold wait for
the export; a state in odd spelling is read as CVAT spells it, loudly; a failed load is looked at
again within about a second even when no file event comes; names from the export never forge a
line of the log or a row of ``status``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cvat_watch.testing.process import (
    EXAMPLE_JOBS,
    EXAMPLE_STATES,
    DaemonProcess,
    NotifySocket,
    StateDatabase,
    Workspace,
    run_cli,
    wait_until,
)
from cvat_watch.testing.receiver import Receiver

_DEBUG = ("--log-level", "debug")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    with NotifySocket(tmp_path / "notify.sock") as sock:
        yield sock


def _start(workspace: Workspace, notify: NotifySocket, *, args: tuple[str, ...] = _DEBUG) -> DaemonProcess:
    daemon = DaemonProcess(workspace.config, env={"NOTIFY_SOCKET": str(notify.path)}, args=args)
    notify.wait_for("READY=1")
    return daemon


def _events(receiver: Receiver) -> list[tuple[str, str]]:
    return [
        (event["type"], event["task"]["id"]) for event in map(json.loads, (r.body for r in receiver.requests))
    ]


def _job(job: str, task: str, state: str, **extra: Any) -> dict[str, Any]:
    ids = {key: int(value) if value.isdigit() else value for key, value in (("id", job), ("task_id", task))}
    return {**ids, "state": state, "stage": "annotation", **extra}


def _jobs(states: Mapping[str, str], **extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The example's four jobs in ``states`` (the example's states for the others)."""
    states = {**EXAMPLE_STATES, **states}
    return [_job(job, task, states[job], **extra.get(job, {})) for job, task in EXAMPLE_JOBS.items()]


def _page(results: list[dict[str, Any]], *, count: int | None = None, **links: str | None) -> dict[str, Any]:
    return {
        "count": len(results) if count is None else count,
        "next": links.get("next"),
        "previous": links.get("previous"),
        "results": results,
    }


def _write(workspace: Workspace, document: object) -> None:
    workspace.write(workspace.job_status, json.dumps(document).encode())


def _still_failing(daemon: DaemonProcess, count: int) -> None:
    """Wait until the daemon has re-read the same bad file ``count`` times after reporting it."""
    wait_until(
        lambda: daemon.log.count("still failing (reported already)") >= count,
        what=f"{count} re-reads of the bad file",
    )


def _hook(receiver: Receiver) -> str:
    return Workspace.webhook(receiver.url())


# -- partial listings ---------------------------------------------------------------------------------


def test_a_partial_listing_keeps_the_last_good_state_and_is_reported_once(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """One page of a longer listing, and pages with a gap, each making task 12 look completed and
    tasks 11 and 13 reopened: refused with one warning naming file and place each (also after the
    daemon re-read them), nothing sent; the next whole listing sends exactly its one event."""
    workspace.write_config(handlers=[_hook(receiver)])
    jobs = _jobs({"23": "completed"})
    with _start(workspace, notify) as daemon:
        # One page of two: only job 23 (completed) is there, CVAT counted four.
        _write(workspace, _page([jobs[2]], count=4, next="http://cvat/api/jobs?page=2&page_size=1"))
        wait_until(lambda: "job_status.json:next: partial listing" in daemon.log, what="the refusal")
        _still_failing(daemon, 1)
        # Pages 1 and 3 of three: page 2 (job 23) is missing.
        _write(
            workspace,
            [
                _page(jobs[:2], count=4, next="http://cvat/api/jobs?page=2&page_size=2"),
                _page([jobs[3]], count=4, previous="http://cvat/api/jobs?page=2&page_size=2"),
            ],
        )
        wait_until(lambda: "job_status.json:pages[1]: partial listing" in daemon.log, what="the refusal")
        _still_failing(daemon, 2)
        assert receiver.requests == []
        # The whole listing: task 12 completed, nothing else changed.
        _write(workspace, _page(jobs))
        receiver.wait_for(1)
        assert daemon.stop() == 0
    assert _events(receiver) == [("task.completed", "12")]
    warnings = [line for line in daemon.log.splitlines() if "keeping the last good state" in line]
    assert len(warnings) == 2
    assert all("partial listing" in line for line in warnings)


# -- an export behind its job list ---------------------------------------------------------------------


def _with_task_14(annotations: Path) -> bytes:
    """The example export with a task 14 (one job, 25) added, as the next export would hold it."""
    text = annotations.read_text()
    start = text.index("        <task>\n          <id>12</id>")
    end = text.index("</task>", start) + len("</task>\n")
    task = text[start:end].replace("<id>12</id>", "<id>14</id>").replace("drive-02", "drive-04")
    task = task.replace("<id>23</id>", "<id>25</id>").replace("/jobs/23<", "/jobs/25<")
    return (text[:end] + task + text[end:]).encode()


def test_jobs_of_a_task_the_export_lacks_wait_for_the_export(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """A completed job of task 14, which the export does not hold yet: no event and one warning
    that the export is behind (not repeated by later reloads); once the export holds task 14, its
    completion is sent once."""
    workspace.write_config(handlers=[_hook(receiver)])
    db = StateDatabase(workspace.state_dir / "cvat-watch.db")
    ahead = [*_jobs({}), _job("25", "14", "completed")]
    with _start(workspace, notify) as daemon:
        _write(workspace, _page(ahead))
        wait_until(lambda: "the export is behind" in daemon.log, what="the warning")
        assert "names 1 task(s) the export does not hold (14)" in daemon.log
        # Another change of the job list, task 14 still missing from the export: committed
        # (job 23's stage is in the baseline), not reported again.
        _write(workspace, _page([*_jobs({}, **{"23": {"stage": "validation"}}), ahead[-1]]))
        wait_until(lambda: _stage(db, "12") == "validation", what="the second job list committed")
        assert daemon.log.count("the export is behind") == 1
        assert receiver.requests == []
        workspace.write(workspace.annotations, _with_task_14(workspace.annotations))
        receiver.wait_for(1)
        wait_until(
            lambda: "holds every task of the job-status file again" in daemon.log, what="the all-clear"
        )
        assert daemon.stop() == 0
    assert _events(receiver) == [("task.completed", "14")]


def _stage(db: StateDatabase, task: str) -> str | None:
    rows = db.query("SELECT task FROM baseline_tasks WHERE task_id = ?", (task,))
    if not rows:
        return None
    jobs = json.loads(rows[0][0])["jobs"]
    return str(jobs[0]["stage"]) if jobs else None


# -- states in other spelling -------------------------------------------------------------------------------


def test_a_state_in_other_spelling_is_read_as_cvat_spells_it_never_a_silent_reopen(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """Job 21 (of completed task 11) rewritten as "Completed " reopens nothing; job 23 written
    "COMPLETED" completes task 12. Each is warned about once, naming the file and the record."""
    workspace.write_config(handlers=[_hook(receiver)])
    with _start(workspace, notify) as daemon:
        _write(workspace, _page(_jobs({"21": "Completed "})))
        wait_until(lambda: "results[0]: job 21: reading state 'Completed '" in daemon.log, what="the warning")
        _write(workspace, _page(_jobs({"21": "Completed ", "23": "COMPLETED"})))
        receiver.wait_for(1)
        assert daemon.stop() == 0
    assert _events(receiver) == [("task.completed", "12")]
    assert daemon.log.count("job 21: reading state") == 1
    assert daemon.log.count("results[2]: job 23: reading state 'COMPLETED' as 'completed'") == 1


# -- a failed load is retried soon ----------------------------------------------------------------------------


def test_a_failed_load_is_retried_within_about_a_second_without_a_file_event(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket, tmp_path: Path
) -> None:
    """The job-status file breaks, then is mended through a hard link in another folder, which
    the watcher cannot see; with a 60 s re-check interval, the daemon still loads the mended file
    within seconds (the first re-check after a failure comes after about one)."""
    workspace.config.write_text(
        workspace.write_config(handlers=[_hook(receiver)])
        .read_text()
        .replace("recheck_interval = 2.0", "recheck_interval = 60.0")
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with _start(workspace, notify, args=()) as daemon:
        # Renamed away and back: a failed load ("missing"), then the same file again.
        away = workspace.exports / "job_status.json.away"
        os.rename(workspace.job_status, away)
        wait_until(lambda: "job_status.json: missing" in daemon.log, what="the missing file noticed")
        os.rename(away, workspace.job_status)
        wait_until(lambda: "files are valid again" in daemon.log, what="the file back")
        link = elsewhere / "job_status.json"
        os.link(workspace.job_status, link)
        with workspace.job_status.open("wb") as file:  # in place, through the watched name: seen
            file.write(b'{"count": 4, "results": [')
        wait_until(lambda: daemon.log.count("keeping the last good state") == 2, what="the broken file")
        with link.open("r+b") as file:  # in place, through the other name: no event in exports/
            file.write(json.dumps(_page(_jobs({"23": "completed"}))).encode())
            file.truncate()
        receiver.wait_for(1, timeout=8.0)
        assert daemon.stop() == 0
    assert _events(receiver) == [("task.completed", "12")]


# -- names that could forge lines ----------------------------------------------------------------------------

_HOSTILE = "drive\n11  forged  9  9/9  yes\u202e\x85"


def test_status_escapes_control_and_bidi_characters_in_task_names(
    tmp_path: Path, workspace: Workspace
) -> None:
    """A task name with a newline, a bidi override and a C1 control is one escaped cell of its own row."""
    hostile = tmp_path / "hostile.xml"
    escaped = "drive&#10;11  forged  9  9/9  yes\u202e\u0085"
    hostile.write_text(workspace.annotations.read_text().replace("drive-01", escaped), encoding="utf-8")
    result = run_cli("status", str(hostile), "--jobs", str(workspace.job_status))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4  # the header and tasks 11, 12, 13
    row = next(line for line in lines if line.startswith("11 "))
    assert "drive\\n11  forged  9  9/9  yes\\u202e\\x85" in row
    assert "\u202e" not in result.stdout and "\x85" not in result.stdout
    data = json.loads(run_cli("status", str(hostile), "--json").stdout)
    assert data[0]["name"] == _HOSTILE  # the data itself is kept exactly


def test_log_lines_escape_bidi_and_c1_characters_from_the_export(
    workspace: Workspace, notify: NotifySocket
) -> None:
    """The log handler's line and the daemon's own messages show a task name's bidi override and C1
    control as escapes: one event, one line, reading as what it holds."""
    workspace.annotations.write_text(
        workspace.annotations.read_text().replace("drive-02", "drive\u202e20-\x85"), encoding="utf-8"
    )
    workspace.write_config(handlers=['[[handler]]\ntype = "log"'])
    with _start(workspace, notify) as daemon:
        _write(workspace, _page([*_jobs({"23": "completed"}), _job("2\u202e6", "1\x855", "Completed")]))
        wait_until(lambda: "task.completed: task 12" in daemon.log, what="the log line")
        assert daemon.stop() == 0
    log = daemon.log
    assert "\u202e" not in log and "\x85" not in log
    line = next(line for line in log.splitlines() if "task.completed: task 12" in line)
    assert '"drive\\u202e20-\\u0085"' in line
    assert "job 2\\u202e6: reading state 'Completed'" in log
    assert "(1\\x855)" in log  # the task the export lacks, in the "export is behind" warning


def test_deliveries_escapes_a_task_id_that_would_forge_a_row(workspace: Workspace) -> None:
    """`deliveries` shows a task id holding a newline as one escaped cell of its own row."""
    forged = "12\n    99  delivered"
    text = workspace.annotations.read_text().replace("<id>12</id>", "<id>12&#10;    99  delivered</id>")
    workspace.annotations.write_text(text)
    config = workspace.write_config(handlers=['[[handler]]\ntype = "log"'])
    jobs = [_job(job, forged if task == "12" else task, state) for job, task, state in _rows({})]
    _write(workspace, _page(jobs))
    assert run_cli("once", "--config", str(config)).returncode == 0
    jobs = [
        _job(job, forged if task == "12" else task, state) for job, task, state in _rows({"23": "completed"})
    ]
    _write(workspace, _page(jobs))
    result = run_cli("once", "--config", str(config))
    assert result.returncode == 0, result.stderr
    listing = run_cli("deliveries", "--config", str(config))
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 2  # the header and the one delivery
    assert "12\\n    99" in lines[1]


def _rows(states: Mapping[str, str]) -> list[tuple[str, str, str]]:
    states = {**EXAMPLE_STATES, **states}
    return [(job, task, states[job]) for job, task in EXAMPLE_JOBS.items()]
