"""Admin commands against a real state: the CLI in a subprocess, a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from cvat_watch.cli.state import SYSTEMD_STATE_DIR
from cvat_watch.testing.process import DaemonRig, StateDatabase, Workspace, run_cli, wait_until
from cvat_watch.testing.receiver import Receiver, Reply


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def _complete_task_12(workspace: Workspace) -> None:
    workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})


def _state_with_a_failed_and_a_delivered_row(workspace: Workspace, receiver: Receiver) -> StateDatabase:
    """One delivery that failed once and then went through, one still failing (pending)."""
    workspace.write_config(
        handlers=[
            workspace.webhook(receiver.url("/a"), name="alpha", retry_delays="[0.1, 0.1]"),
            workspace.webhook(receiver.url("/b"), name="beta-with-a-longer-name", retry_delays="[3600]"),
        ]
    )
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0  # the baseline
    receiver.script(Reply(500, body=b"first\nline"), Reply(503, body=b"down"))
    _complete_task_12(workspace)
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0
    state = StateDatabase(workspace.state_dir / "cvat-watch.db")

    def alpha_delivered() -> bool:
        run_cli("once", "--config", str(workspace.config))
        return [row["status"] for row in state.deliveries("alpha")] == ["delivered"]

    wait_until(alpha_delivered, what="alpha's retry to go through")
    assert [row["status"] for row in state.deliveries("beta-with-a-longer-name")] == ["pending"]
    return state


def test_deliveries_needs_no_secret_and_shows_errors_only_for_undelivered_rows(
    workspace: Workspace, receiver: Receiver
) -> None:
    """`deliveries` reads the state with the handlers' secret unset; columns line up; a delivered
    row's old error is not shown, an undelivered one's is, on one line."""
    _state_with_a_failed_and_a_delivered_row(workspace, receiver)
    result = run_cli("deliveries", "--config", str(workspace.config), env={"CVAT_WATCH_TEST_SECRET": ""})
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert len(rows) == 2
    columns = ["STATUS", "HANDLER", "EVENT", "TASK", "NEXT / DONE", "LAST ERROR"]
    starts = [header.index(name) for name in columns]
    beta = next(row for row in rows if "beta-with-a-longer-name" in row)
    alpha = next(row for row in rows if " alpha " in row)
    for row in (alpha, beta):
        # Every left-aligned cell starts under its header.
        assert all(row[start - 1] == " " and row[start] != " " for start in starts[:-1]), (header, row)
    assert beta[starts[-1] :].startswith("HTTP 503") or "503" in beta[starts[-1] :]
    assert "500" not in alpha and "first" not in alpha
    assert alpha.rstrip() == alpha and len(alpha.rstrip()) <= starts[-1]


def test_deliveries_json_has_iso_8601_times(workspace: Workspace, receiver: Receiver) -> None:
    """`deliveries --json` writes times as ISO 8601 strings with their UTC offset."""
    _state_with_a_failed_and_a_delivered_row(workspace, receiver)
    result = run_cli("deliveries", "--json", "--state-dir", str(workspace.state_dir))
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    delivered = next(row for row in rows if row["status"] == "delivered")
    pending = next(row for row in rows if row["status"] == "pending")
    for value in (delivered["created_at"], delivered["delivered_at"], pending["next_attempt_at"]):
        assert isinstance(value, str) and value.endswith("+00:00")
        assert datetime.fromisoformat(value).tzinfo is not None
    assert pending["delivered_at"] is None


def test_no_state_is_an_error_and_nothing_is_created(tmp_path: Path, workspace: Workspace) -> None:
    """Pointed at a folder without a state, `deliveries` and `redeliver` fail naming it and create nothing."""
    missing = tmp_path / "nowhere"
    for command in (["deliveries"], ["redeliver", "1"]):
        result = run_cli(*command, "--state-dir", str(missing))
        assert result.returncode == 2
        assert str(missing) in result.stderr and "no cvat-watch state database" in result.stderr
    assert not missing.exists()
    # A config whose state_dir has no database yet: the same, and the folder stays absent.
    workspace.write_config(handlers=[])
    result = run_cli("deliveries", "--config", str(workspace.config))
    assert result.returncode == 2 and str(workspace.state_dir) in result.stderr
    assert not workspace.state_dir.exists()


def test_without_a_configured_state_dir_the_systemd_places_are_tried(
    tmp_path: Path, workspace: Workspace
) -> None:
    """A config without state_dir (as under systemd): $STATE_DIRECTORY is used, and without it the
    error lists /var/lib/cvat-watch and the user default."""
    workspace.write_config(handlers=[])
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0
    config = tmp_path / "systemd.toml"
    config.write_text(workspace.config.read_text().replace('state_dir = "state"', ""))
    home = tmp_path / "home"
    found = run_cli(
        "deliveries",
        "--config",
        str(config),
        env={"STATE_DIRECTORY": str(workspace.state_dir), "HOME": str(home)},
    )
    assert found.returncode == 0, found.stderr
    assert "(no deliveries)" in found.stdout
    if (SYSTEMD_STATE_DIR / "cvat-watch.db").exists():
        pytest.skip("this machine has a real /var/lib/cvat-watch state")
    lost = run_cli(
        "deliveries",
        "--config",
        str(config),
        env={"STATE_DIRECTORY": "", "HOME": str(home), "XDG_STATE_HOME": ""},
    )
    assert lost.returncode == 2
    assert str(SYSTEMD_STATE_DIR) in lost.stderr and str(home / ".local/state/cvat-watch") in lost.stderr
    assert "--state-dir" in lost.stderr
    assert not home.exists()


def test_check_config_prints_each_warning_once(workspace: Workspace) -> None:
    """check-config shows each warning of the configuration exactly once (on stderr)."""
    workspace.write_config(
        handlers=['[[handler]]\ntype = "webhook"\nurl = "http://127.0.0.1:9/x"\nsecret = "whsec_abc"\n']
    )
    result = run_cli("check-config", "--config", str(workspace.config))
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert output.count("inline secret") == 1
    assert output.count("signed but not encrypted") == 1
    assert "whsec_abc" not in output


def test_redeliver_wakes_the_running_daemon(tmp_path: Path, workspace: Workspace, receiver: Receiver) -> None:
    """`redeliver` beside the running service (which holds the state's lock) hands the request to the
    daemon, which sends the dead letter at once, not at its next idle wake (60 s) or restart."""
    receiver.script(Reply(400, body=b"no"))  # not retryable: a dead letter at once
    workspace.write_config(handlers=[workspace.webhook(receiver.url(), name="hook")])
    state = StateDatabase(workspace.state_dir / "cvat-watch.db")
    with DaemonRig(tmp_path) as rig:
        rig.start(workspace.config)
        _complete_task_12(workspace)
        receiver.wait_for(1, timeout=15)
        wait_until(lambda: [row["status"] for row in state.deliveries()] == ["dead"], what="a dead letter")
        (row,) = state.deliveries()
        result = run_cli("redeliver", str(row["id"]), "--config", str(workspace.config))
        assert result.returncode == 0, result.stderr
        assert "the running daemon is sending it" in result.stdout
        # Well under the dispatcher's 60 s idle wait, with room for a slow machine.
        receiver.wait_for(2, timeout=10)
        wait_until(lambda: [row["status"] for row in state.deliveries()] == ["delivered"], what="delivered")


def test_daemon_logs_one_summary_line_at_start_and_at_reload(
    tmp_path: Path, workspace: Workspace, receiver: Receiver
) -> None:
    """The foreground daemon says what it watches, whom it tells and where its state is, once at
    start and once per reload."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url(), name="hook")])
    with DaemonRig(tmp_path) as rig:
        daemon = rig.start(workspace.config, args=("--log-level", "info"))
        pattern = re.compile(
            r"watching 1 export\(s\): example \(.*annotations\.xml\); handlers: hook; state: .*cvat-watch\.db"
        )
        wait_until(lambda: len(pattern.findall(daemon.log)) == 1, what="the start line")
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: "reload: watching 1 export(s)" in daemon.log, what="the reload line")
        assert len(pattern.findall(daemon.log)) == 2
        assert daemon.stop() == 0


def test_apprise_info_lines_stay_out_of_the_log(
    tmp_path: Path, workspace: Workspace, receiver: Receiver
) -> None:
    """At the default level, Apprise's own INFO lines ("Sent JSON notification") do not appear."""
    apprise_url = f"json://127.0.0.1:{receiver.port}/chat"
    workspace.write_config(
        handlers=[
            f'[[handler]]\ntype = "apprise"\nname = "chat"\nurls = ["{apprise_url}"]\nretry_delays = [0.2]\n'
        ]
    )
    with DaemonRig(tmp_path) as rig:
        daemon = rig.start(workspace.config, args=("--log-level", "info"))
        _complete_task_12(workspace)
        receiver.wait_for(1, timeout=15)
        state = StateDatabase(workspace.state_dir / "cvat-watch.db")
        wait_until(lambda: [row["status"] for row in state.deliveries()] == ["delivered"], what="delivered")
        assert daemon.stop() == 0
    assert "watching 1 export(s)" in daemon.log  # our INFO lines are there
    assert "Sent JSON notification" not in daemon.log
    assert not [line for line in daemon.log.splitlines() if " apprise" in line and "INFO" in line]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, as an admin under systemd has")
def test_root_leaves_no_root_owned_files_in_the_service_state(
    workspace: Workspace, receiver: Receiver
) -> None:
    """Run by root on a state owned by the service's user, the commands leave every file there owned by
    that user (SQLite's -wal and -shm included), so the service can still open its state."""
    _state_with_a_failed_and_a_delivered_row(workspace, receiver)
    service_uid, service_gid = 61234, 61234
    for path in [workspace.state_dir, *workspace.state_dir.iterdir()]:
        os.chown(path, service_uid, service_gid)
    (row, *_) = StateDatabase(workspace.state_dir / "cvat-watch.db").deliveries("beta-with-a-longer-name")
    # The read-only listing is what leaves SQLite's -wal and -shm behind.
    assert run_cli("deliveries", "--state-dir", str(workspace.state_dir)).returncode == 0
    owners = {path.name: (path.stat().st_uid, path.stat().st_gid) for path in workspace.state_dir.iterdir()}
    assert "cvat-watch.db-shm" in owners
    assert set(owners.values()) == {(service_uid, service_gid)}, owners
    assert run_cli("redeliver", str(row["id"]), "--state-dir", str(workspace.state_dir)).returncode == 0
    owners = {path.name: (path.stat().st_uid, path.stat().st_gid) for path in workspace.state_dir.iterdir()}
    assert set(owners.values()) == {(service_uid, service_gid)}, owners
