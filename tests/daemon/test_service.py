"""The daemon end to end: the real CLI in a subprocess, real files, a real watchdog observer,
a real webhook receiver on 127.0.0.1, real signals and a real NOTIFY_SOCKET."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvat_watch.testing.process import SECRET, DaemonProcess, NotifySocket, Workspace, run_cli, wait_until
from cvat_watch.testing.receiver import Receiver, Reply
from standardwebhooks.webhooks import Webhook


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


def _events(receiver: Receiver) -> list[dict]:
    return [json.loads(request.body) for request in receiver.requests]


def _start(
    workspace: Workspace, notify: NotifySocket, *, args: tuple[str, ...] = (), **env: str
) -> DaemonProcess:
    daemon = DaemonProcess(workspace.config, env={"NOTIFY_SOCKET": str(notify.path), **env}, args=args)
    notify.wait_for("READY=1")
    return daemon


def test_first_start_is_silent_then_a_completion_is_posted_signed(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """After READY=1 a job-status rewrite that completes a task posts one signed task.completed."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url())])
    with _start(workspace, notify) as daemon:
        assert receiver.requests == []
        # STATUS= follows READY=1 as a separate datagram: wait for it rather than race it.
        notify.wait_for("STATUS=")
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
        (request,) = receiver.wait_for(1)
        event = Webhook(SECRET).verify(request.body, request.headers)
        assert event["type"] == "task.completed"
        assert event["task"]["id"] == "12"
        assert event["task"]["url"] == "http://localhost:8080/tasks/12"
        assert request.headers["webhook-id"] == event["id"]
        assert daemon.stop() == 0
    assert notify.count("STOPPING=1") == 1
    assert "first start, 2 of 3 tasks already completed" in daemon.log


def test_reopen_then_complete_again_gets_a_new_id(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """A rejected job reopens its task; completing it again is a new event with a new id."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url())])
    with _start(workspace, notify) as daemon:
        workspace.write_jobs({"21": "rejected", "22": "completed"})
        receiver.wait_for(1)
        workspace.write_jobs({"21": "completed", "22": "completed"})
        receiver.wait_for(2)
        daemon.stop()
    reopened, completed = _events(receiver)
    assert (reopened["type"], reopened["task"]["id"]) == ("task.reopened", "11")
    assert (completed["type"], completed["task"]["id"]) == ("task.completed", "11")
    assert reopened["id"] != completed["id"]


def test_task_finished_while_down_is_announced_once_on_start(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """A completion that happened while the daemon was stopped is sent once at the next start."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url())])
    _start(workspace, notify).stop()
    workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
    with _start(workspace, notify) as daemon:
        receiver.wait_for(1)
        daemon.stop()
    with _start(workspace, notify) as daemon:
        daemon.stop()
    assert [event["task"]["id"] for event in _events(receiver)] == ["12"]


def test_malformed_or_missing_files_keep_the_last_good_state(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """A truncated, deleted or emptied job-status file reopens nothing and is reported once: one
    warning each, also after the daemon has read the same bad file again."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url())])
    with _start(workspace, notify, args=("--log-level", "debug")) as daemon:

        def warned(needle: str) -> list[str]:
            return [
                line
                for line in daemon.log.splitlines()
                if "keeping the last good state" in line and needle in line
            ]

        def reported_once(needle: str, rereads: int) -> None:
            wait_until(lambda: warned(needle), what=f"a warning containing {needle!r}")
            # The daemon looks at a failed file again about a second later (and on every event).
            wait_until(
                lambda: daemon.log.count("still failing (reported already)") >= rereads,
                what="the bad file read again",
            )
            assert len(warned(needle)) == 1

        workspace.write(workspace.job_status, b'{"count": 4, "results": [{"id": 21, "task_')
        reported_once("job_status.json:line 1 column", 1)
        workspace.job_status.unlink()
        reported_once("job_status.json: missing", 2)
        workspace.write(workspace.job_status, b"", atomic=False)
        reported_once("empty file", 3)
        # Valid again, and task 12 now done: exactly that one event, no reopen of task 11.
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
        receiver.wait_for(1)
        daemon.stop()
    assert [(e["type"], e["task"]["id"]) for e in _events(receiver)] == [("task.completed", "12")]
    assert daemon.log.count("keeping the last good state") == 3


def test_non_atomic_rewrite_is_read_once_complete(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """A file rewritten in place, in pieces, is announced once and nothing else: whether or not the
    daemon catches a piece (that is timing), a half-written file is a failed load, never an event."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url())])
    with _start(workspace, notify) as daemon:
        data = json.dumps(
            {
                "count": 4,
                "next": None,
                "previous": None,
                "results": [
                    {"id": 21, "task_id": 11, "state": "completed"},
                    {"id": 22, "task_id": 11, "state": "completed"},
                    {"id": 23, "task_id": 12, "state": "completed"},
                    {"id": 24, "task_id": 13, "state": "completed"},
                ],
            }
        ).encode()
        with workspace.job_status.open("wb") as file:
            for start in range(0, len(data), 64):
                file.write(data[start : start + 64])
                file.flush()
        receiver.wait_for(1)
        daemon.stop()
    assert [(e["type"], e["task"]["id"]) for e in _events(receiver)] == [("task.completed", "12")]


def test_receiver_down_then_back_gets_every_event_once_after_sigkill(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """Failing deliveries survive a SIGKILL and reach the receiver once it recovers, same id."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url(), retry_delays="[0.3, 0.3, 0.3, 60]")])
    receiver.script(Reply(503), Reply(503))
    daemon = _start(workspace, notify)
    workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
    receiver.wait_for(2)
    daemon.kill()
    with _start(workspace, notify) as again:
        requests = receiver.wait_for(3)
        again.stop()
    ids = {request.headers["webhook-id"] for request in requests}
    assert len(ids) == 1
    assert len(receiver.requests) == 3


def test_sighup_reloads_and_keeps_old_config_when_the_new_one_is_invalid(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """SIGHUP sends RELOADING=1 then READY=1; an invalid new config is reported and the old kept."""
    config = workspace.write_config(handlers=[workspace.webhook(receiver.url())])
    with _start(workspace, notify) as daemon:
        good = config.read_text()
        config.write_text(good + "\nbogus_key = 1\n")
        daemon.signal(signal.SIGHUP)
        notify.wait_for("READY=1", count=2)
        assert notify.count("RELOADING=1") == 1
        assert "RELOADING=1\nMONOTONIC_USEC=" in "\n".join(notify.messages)
        wait_until(lambda: "keeping the running configuration" in daemon.log, what="reload error")
        assert "bogus_key" in daemon.log
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
        receiver.wait_for(1)
        config.write_text(good)
        daemon.signal(signal.SIGHUP)
        notify.wait_for("READY=1", count=3)
        workspace.write_jobs({"23": "completed", "24": "rejected"})
        assert json.loads(receiver.wait_for(2)[1].body)["type"] == "task.reopened"
        assert daemon.stop() == 0


def test_sighup_with_a_watch_unchanged_does_not_parse_its_export_again(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """A SIGHUP keeps the runner of a watch whose configuration is unchanged (the export is re-read and
    re-hashed, not parsed again) and still diffs against its baseline; a changed watch gets a new runner,
    which takes the export's brief stored with the baseline (the same bytes), not a parse either."""
    config = workspace.write_config(handlers=[workspace.webhook(receiver.url())])
    env = {"NOTIFY_SOCKET": str(notify.path)}
    with DaemonProcess(workspace.config, env=env, args=["--log-level", "debug"]) as daemon:
        notify.wait_for("READY=1")
        assert daemon.log.count("export parsed") == 1
        daemon.signal(signal.SIGHUP)
        notify.wait_for("READY=1", count=2)
        assert daemon.log.count("export parsed") == 1
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
        assert json.loads(receiver.wait_for(1)[0].body)["type"] == "task.completed"
        config.write_text(config.read_text().replace("debounce = 0.1", "debounce = 0.2"))
        daemon.signal(signal.SIGHUP)
        notify.wait_for("READY=1", count=3)
        assert daemon.log.count("export parsed") == 1
        assert daemon.log.count("export unchanged since the last run") == 1
        workspace.write_jobs({"23": "completed", "24": "rejected"})
        assert json.loads(receiver.wait_for(2)[1].body)["type"] == "task.reopened"
        assert daemon.stop() == 0


def test_watchdog_pings_at_half_the_interval(workspace: Workspace, notify: NotifySocket) -> None:
    """With WATCHDOG_USEC set the daemon sends WATCHDOG=1 repeatedly from its main loop."""
    workspace.write_config(handlers=['[[handler]]\ntype = "log"'])
    with _start(workspace, notify, WATCHDOG_USEC="400000") as daemon:
        notify.wait_for("WATCHDOG=1", count=3)
        assert daemon.stop() == 0


def test_log_handler_writes_one_line_per_event(workspace: Workspace, notify: NotifySocket) -> None:
    """The log handler writes a readable line naming the task for each event."""
    workspace.write_config(handlers=['[[handler]]\ntype = "log"'])
    with _start(workspace, notify) as daemon:
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
        wait_until(lambda: 'task.completed: task 12 "drive-02"' in daemon.log, what="the event line")
        daemon.stop()


def test_run_refuses_root_without_allow_root(workspace: Workspace) -> None:
    """As root, `run` refuses to start unless --allow-root is given."""
    import os

    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    workspace.write_config(handlers=['[[handler]]\ntype = "log"'])
    result = run_cli("run", "--config", str(workspace.config))
    assert result.returncode == 2
    assert "refusing to run as root" in result.stderr


def test_once_dry_run_prints_events_and_creates_nothing(workspace: Workspace, receiver: Receiver) -> None:
    """`once --dry-run` prints the events as JSON and writes no state."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url())], watch_extra="notify_existing = true")
    result = run_cli("once", "--dry-run", "--config", str(workspace.config))
    assert result.returncode == 0, result.stderr
    assert sorted(event["task"]["id"] for event in json.loads(result.stdout)) == ["11", "13"]
    assert not workspace.state_dir.exists()
    assert receiver.requests == []


def test_once_delivers_and_deliveries_lists_then_redeliver_resends(
    workspace: Workspace, receiver: Receiver
) -> None:
    """`once` delivers, `deliveries` lists the outbox, `redeliver` sends one again with the same id."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url())], watch_extra="notify_existing = true")
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0
    assert len(receiver.wait_for(2)) == 2
    listing = run_cli("deliveries", "--json", "--config", str(workspace.config))
    rows = json.loads(listing.stdout)
    assert {row["status"] for row in rows} == {"delivered"}
    assert SECRET not in listing.stdout
    first = rows[0]
    result = run_cli("redeliver", str(first["id"]), "--config", str(workspace.config))
    assert result.returncode == 0, result.stderr
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0
    third = receiver.wait_for(3)[2]
    assert third.headers["webhook-id"] == first["event_id"]
    # A second `once` with nothing new sends nothing.
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0
    assert len(receiver.requests) == 3
    with sqlite3.connect(workspace.state_dir / "cvat-watch.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_failed_delivery_is_listed_with_its_error(workspace: Workspace, receiver: Receiver) -> None:
    """A 400 answer dead-letters the delivery and `deliveries --failed` shows why."""
    receiver.script(Reply(400), Reply(400))
    workspace.write_config(handlers=[workspace.webhook(receiver.url())], watch_extra="notify_existing = true")
    run_cli("once", "--config", str(workspace.config))
    listing = run_cli("deliveries", "--failed", "--config", str(workspace.config))
    assert listing.returncode == 0
    assert listing.stdout.count("dead") == 2
    assert "400" in listing.stdout


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ('[[watch]]\nname = "x"\nanotations = "a.xml"\n', "anotations"),
        ("[[watch]\n", "invalid TOML"),
        ('state_dir = 3\n[[watch]]\nname = "x"\nannotations = "a.xml"\n', "state_dir"),
    ],
)
def test_check_config_reports_one_line_and_exit_2(tmp_path: Path, config_text: str, message: str) -> None:
    """A bad configuration is one error line naming the file and the key, exit code 2."""
    config = tmp_path / "bad.toml"
    config.write_text(config_text)
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_never_prints_the_secret(workspace: Workspace) -> None:
    """check-config describes a signed webhook without showing its secret."""
    workspace.write_config(handlers=[workspace.webhook("https://hooks.example.com/x?token=abc")])
    result = run_cli("check-config", "--config", str(workspace.config))
    assert result.returncode == 0, result.stderr
    assert "signed" in result.stdout
    assert SECRET not in result.stdout + result.stderr
    assert "token=abc" not in result.stdout


def test_status_command_on_the_example(tmp_path: Path) -> None:
    """`status` prints one row per task; --json gives the same rows as data."""
    from cvat_watch.testing.process import EXAMPLE

    args = ("status", str(EXAMPLE / "annotations.xml"), "--jobs", str(EXAMPLE / "job_status.json"))
    table = run_cli(*args)
    assert table.returncode == 0, table.stderr
    assert "drive-02" in table.stdout and "2/2" in table.stdout
    rows = json.loads(run_cli(*args, "--json").stdout)
    assert [(row["id"], row["completed"]) for row in rows] == [("11", True), ("12", False), ("13", True)]


def test_status_on_broken_xml_is_one_line_with_file_line_and_column(tmp_path: Path) -> None:
    """A malformed export gives exit 2 and one line naming file, line and column."""
    broken = tmp_path / "broken.xml"
    broken.write_text("<annotations>\n  <version>1.1</version>\n  <image id='0' name='a'>\n")
    result = run_cli("status", str(broken))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert f"{broken}:4" in result.stderr or f"{broken}:3" in result.stderr
