"""Integrity under real operations: one process per state, rows bound to their handler, reloads
that never resend, ids that never repeat across state resets, a lost state file, retention.

Everything is real: ``python -m cvat_watch`` in subprocesses, receivers on 127.0.0.1, real
signals, real files. The scenarios shared with ``benchmarks/reliability.py`` run there too.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from benchmarks import reliability
from cvat_watch.testing.process import (
    DaemonRig,
    GeneratedExport,
    StateDatabase,
    Workspace,
    run_cli,
    wait_until,
    write_daemon_config,
)
from cvat_watch.testing.receiver import Receiver, Reply

STATE_DB = Path("state") / "cvat-watch.db"


def _ids(receiver: Receiver) -> list[str]:
    return [request.headers["webhook-id"] for request in receiver.requests]


# -- 1. one process per state ---------------------------------------------------------------------


def test_a_second_run_once_or_redeliver_on_a_running_state_refuses_at_once_naming_the_holder(
    tmp_path: Path,
) -> None:
    """While `run` holds the state, another `run` and a `once` exit 2 at once with an error naming the
    running process (a `redeliver` is handed to it); the running one goes on and delivers each event once."""
    export = GeneratedExport(tmp_path / "export", tasks=3)
    with DaemonRig(tmp_path) as rig:
        receiver = rig.receiver()
        config = write_daemon_config(
            tmp_path / "cvat-watch.toml",
            watches=[export.watch("w")],
            handlers=[Workspace.webhook(receiver.url())],
        )
        daemon = rig.start(config)
        holder = f"pid {daemon.process.pid}: cvat-watch run --config {config}"
        for command in (["run", "--allow-root"], ["once"]):
            result = run_cli(command[0], "--config", str(config), *command[1:], timeout=30)
            assert result.returncode == 2, (command, result.stderr)
            assert "the state folder is in use by" in result.stderr
            assert holder in result.stderr, result.stderr
        # `redeliver` does not write past the lock either: the running daemon carries it out
        # (issue 12; tests/cli/test_admin.py), and answers for a row that does not exist.
        result = run_cli("redeliver", "1", "--config", str(config), timeout=30)
        assert result.returncode == 2 and "no delivery with id 1" in result.stderr, result.stderr
        export.write_jobs({export.task_ids[0]})
        receiver.wait_for(1)
        db = StateDatabase(tmp_path / STATE_DB)
        wait_until(lambda: db.unsettled() == 0, what="the delivery settled")
        assert daemon.stop() == 0, daemon.log
    assert len(receiver.requests) == 1
    # Once the holder is gone, `once` may run (the kernel released the lock with the process).
    assert run_cli("once", "--config", str(config)).returncode == 0


def test_two_configs_sharing_a_state_folder_never_deliver_each_others_rows(tmp_path: Path) -> None:
    """Team A's rows, pending when A stops, are never sent to team B's URL by B's daemon on the same
    state folder (B's handler has the same name); `deliveries` of B lists them as orphaned, and A
    delivers them when it runs again. B warns that the state was last used by A's configuration."""
    run = reliability.two_configs(tmp_path)
    assert run.cross_deliveries == 0
    assert run.a_ids_at_b == set()
    assert run.orphaned_listed == run.pending_of_a > 0
    assert run.a_received == run.expected_a
    assert run.b_received == run.expected_b
    assert run.duplicated == 0
    assert run.b_warned


# -- 2. a reload never resends ----------------------------------------------------------------------


def test_sighup_twice_while_a_webhook_is_in_flight_sends_the_event_once(tmp_path: Path) -> None:
    """Two SIGHUPs while a POST is held by a slow receiver: the POST completes and is recorded, the
    event is POSTed exactly once, and a file change during the attempt is committed at once."""
    run = reliability.reload_in_flight(tmp_path, reply_delay=11.0)
    assert run.reloads == 2
    # The file change after the reloads was committed while the first POST was still open: the
    # main loop never waited for the attempt.
    assert run.committed_while_in_flight
    assert run.posts_of_first == 1
    assert run.duplicated == 0
    assert run.delivered == run.expected
    assert run.first_row_attempts == 1


def test_a_burst_of_sighups_is_one_reload(tmp_path: Path) -> None:
    """100 SIGHUPs within about half a second are one reload (two at most, should the test itself be
    held up for longer than the daemon's gathering pause); a later file change is still processed."""
    export = GeneratedExport(tmp_path / "export", tasks=2)
    with DaemonRig(tmp_path) as rig:
        receiver = rig.receiver()
        config = write_daemon_config(
            tmp_path / "cvat-watch.toml",
            watches=[export.watch("w")],
            handlers=[Workspace.webhook(receiver.url())],
        )
        daemon = rig.start(config)
        for _ in range(100):
            os.kill(daemon.process.pid, signal.SIGHUP)
            # Paced, so that each SIGHUP reaches the daemon's handler on its own: the kernel
            # merges a signal sent while the same one is still pending.
            time.sleep(0.005)
        rig.notify.wait_for("READY=1", count=2)
        # A sentinel behind the burst: once its event is out, every SIGHUP has been handled.
        export.write_jobs({export.task_ids[0]})
        receiver.wait_for(1, timeout=30)
        assert daemon.stop() == 0, daemon.log
    assert 1 <= rig.notify.count("RELOADING=1") <= 2


def test_sigterm_goes_ahead_of_pending_reloads(tmp_path: Path) -> None:
    """SIGHUPs followed at once by SIGTERM: the daemon stops without reloading first, exit 0."""
    export = GeneratedExport(tmp_path / "export", tasks=2)
    with DaemonRig(tmp_path) as rig:
        config = write_daemon_config(tmp_path / "cvat-watch.toml", watches=[export.watch("w")], handlers=[])
        daemon = rig.start(config)
        for _ in range(5):
            os.kill(daemon.process.pid, signal.SIGHUP)
        os.kill(daemon.process.pid, signal.SIGTERM)
        assert daemon.process.wait(timeout=30) == 0, daemon.log
        daemon.stop()
    assert rig.notify.count("RELOADING=1") == 0
    assert rig.notify.count("STOPPING=1") == 1


def test_a_changed_handler_gets_the_next_event_and_a_removed_one_keeps_its_rows(tmp_path: Path) -> None:
    """A reload that points handler "hook" at another URL: later events go to the new URL only; the
    old URL's pending row stays bound to it (orphaned), it is never sent to the new URL, even once
    it is due again."""
    export = GeneratedExport(tmp_path / "export", tasks=3)
    with DaemonRig(tmp_path) as rig:
        old = rig.receiver(default=Reply(503))
        new = rig.receiver()
        config_path = tmp_path / "cvat-watch.toml"
        watches = [export.watch("w")]
        write_daemon_config(
            config_path,
            watches=watches,
            handlers=[Workspace.webhook(old.url(), retry_delays="[0.2, 0.2, 0.2, 0.2]")],
        )
        daemon = rig.start(config_path)
        db = StateDatabase(tmp_path / STATE_DB)
        export.write_jobs({export.task_ids[0]})
        wait_until(lambda: any(row["attempts"] >= 2 for row in db.deliveries()), what="two failed attempts")
        write_daemon_config(config_path, watches=watches, handlers=[Workspace.webhook(new.url())])
        daemon.signal(signal.SIGHUP)
        rig.notify.wait_for("READY=1", count=2)
        export.write_jobs(set(export.task_ids[:2]))
        new.wait_for(1)
        # The old row is due again (its retry delay is 0.2 s) ...
        wait_until(
            lambda: db.query("SELECT next_attempt_at FROM deliveries WHERE id = 1")[0][0] < time.time(),
            what="the old row due",
        )
        # ... and the new handler's worker has looked at the store since: a third event is out.
        export.write_jobs(set(export.task_ids))
        new.wait_for(2)
        listing = run_cli("deliveries", "--config", str(config_path))
        assert daemon.stop() == 0, daemon.log
    first, second, third = (event[0] for event in db.events())
    assert _ids(new) == [second, third]
    assert set(_ids(old)) == {first}
    assert listing.returncode == 0, listing.stderr
    orphaned = [line for line in listing.stdout.splitlines() if "orphaned" in line]
    assert len(orphaned) == 1 and "task.completed" in orphaned[0], listing.stdout


# -- 3. ids never repeat; a lost state stops the daemon loudly ---------------------------------------


def test_ids_stay_across_restarts_and_never_repeat_after_a_state_reset(tmp_path: Path) -> None:
    """A retry across a restart of the same state keeps its id; after the state is lost (deleted
    under the daemon, which stops with an error) the same completion, generation 1 again, gets a
    new id."""
    run = reliability.state_lost(tmp_path)
    assert run.reused_ids == 0
    assert run.first_id != run.after_reset_id
    assert run.retry_ids_across_restart == {run.first_id}
    assert len(run.receipts_before.requests) >= 2  # the 503, then the retry after the restart
    assert run.exit_code != 0


def test_a_state_file_deleted_or_replaced_under_the_daemon_stops_it_loudly(tmp_path: Path) -> None:
    """Deleting the state database (with its WAL), or renaming another file over it, makes the
    running daemon exit non-zero with an error naming the file; nothing is silently started over."""
    for how in ("deleted", "replaced"):
        root = tmp_path / how
        root.mkdir()
        export = GeneratedExport(root / "export", tasks=2)
        with DaemonRig(root) as rig:
            config = write_daemon_config(root / "cvat-watch.toml", watches=[export.watch("w")], handlers=[])
            daemon = rig.start(config)
            state = root / STATE_DB
            if how == "deleted":
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{state}{suffix}").unlink(missing_ok=True)
            else:
                other = root / "other.db"
                other.write_bytes(state.read_bytes())
                os.replace(other, state)
            code = daemon.process.wait(timeout=30)
            daemon.stop()
        assert code != 0, daemon.log
        assert f"{state}: the state database was {how}" in daemon.log, daemon.log
        assert "CRITICAL" in daemon.log


def test_an_existing_file_that_is_not_a_state_database_is_an_error_not_a_first_start(tmp_path: Path) -> None:
    """A state path holding something else (here: text, then another SQLite database) is refused by
    `once` with exit 2 naming the file; the file is left as it was."""
    workspace = Workspace(tmp_path)
    workspace.write_config(handlers=[])
    workspace.state_dir.mkdir()
    state = workspace.state_dir / "cvat-watch.db"
    state.write_bytes(b"not a database at all, but someone's notes\n" * 100)
    before = state.read_bytes()
    result = run_cli("once", "--config", str(workspace.config))
    assert result.returncode == 2
    assert str(state) in result.stderr and "not a cvat-watch state database" in result.stderr
    assert state.read_bytes() == before


def test_deliveries_and_events_older_than_retention_days_are_deleted_without_resending(
    tmp_path: Path,
) -> None:
    """`once` with a tiny retention_days: delivered rows and their events are deleted by the next
    `once`, which sends nothing again; a pending row is kept."""
    workspace = Workspace(tmp_path)
    with DaemonRig(tmp_path) as rig:
        receiver = rig.receiver()
        workspace.write_config(handlers=[workspace.webhook(receiver.url())], top="retention_days = 0.00001")
        assert run_cli("once", "--config", str(workspace.config)).returncode == 0  # the silent baseline
        workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
        assert run_cli("once", "--config", str(workspace.config)).returncode == 0
        assert len(receiver.requests) == 1
        db = StateDatabase(workspace.state_dir / "cvat-watch.db")
        assert [row["status"] for row in db.deliveries()] == ["delivered"]
        settled = time.time()
        wait_until(lambda: time.time() > settled + 1.0, what="the row to age past retention_days")
        assert run_cli("once", "--config", str(workspace.config)).returncode == 0
        assert db.deliveries() == [] and db.events() == []
        # Dedupe stands on the baseline: the same files again announce nothing.
        assert run_cli("once", "--config", str(workspace.config)).returncode == 0
        listing = run_cli("deliveries", "--config", str(workspace.config))
    assert len(receiver.requests) == 1
    assert listing.returncode == 0 and "(no deliveries)" in listing.stdout
    assert json.loads(run_cli("deliveries", "--json", "--config", str(workspace.config)).stdout) == []
