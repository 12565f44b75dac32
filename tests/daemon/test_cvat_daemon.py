"""cvat-watch reading CVAT itself, end to end: the real daemon in a subprocess, the stand-in CVAT
server and a webhook receiver on 127.0.0.1, real files, signals and NOTIFY_SOCKET."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cvat_watch.cvatxml import loads_summary
from cvat_watch.jobstatus import load_job_status
from cvat_watch.model import is_task_complete
from cvat_watch.testing.cvat_server import ADMIN_TOKEN, CvatStandIn
from cvat_watch.testing.process import SECRET, DaemonRig, StateDatabase, run_cli, wait_until
from cvat_watch.testing.receiver import Receiver, free_port
from standardwebhooks.webhooks import Webhook

HOOK_SECRET = "cvat-hook-secret-for-tests"


@pytest.fixture
def server() -> Iterator[CvatStandIn]:
    with CvatStandIn() as stand_in:
        stand_in.add_project(3, tasks=3, jobs_per_task=2, images_per_task=4, ground_truth=True)
        stand_in.complete_task(1)
        yield stand_in


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[DaemonRig]:
    with DaemonRig(tmp_path) as running:
        yield running


def write_config(
    root: Path,
    server: CvatStandIn,
    receiver: Receiver | None,
    *,
    poll_interval: float = 0.3,
    extra: str = "",
    top: str = "",
) -> Path:
    handler = (
        ""
        if receiver is None
        else f"""[[handler]]
type = "webhook"
name = "hook"
url = "{receiver.url()}"
secret_env = "CVAT_WATCH_TEST_SECRET"
retry_delays = [0.2, 0.2, 0.2]
"""
    )
    config = root / "cvat-watch.toml"
    config.write_text(
        f"""state_dir = "state"
[[watch]]
name = "street"
annotations = "exports/annotations.xml"
job_status = "exports/job_status.json"
debounce = 0.1
max_wait = 1.0
recheck_interval = 2.0

[watch.cvat]
url = "{server.url}"
project = 3
token_env = "CVAT_TOKEN"
poll_interval = {poll_interval}
page_size = 4
{extra}

{handler}
{top}
"""
    )
    return config


def env(token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"CVAT_TOKEN": token, "CVAT_HOOK_SECRET": HOOK_SECRET}


def events(receiver: Receiver) -> list[dict]:
    return [Webhook(SECRET).verify(request.body, request.headers) for request in receiver.requests]


def listings(server: CvatStandIn) -> int:
    """How many job listings (first pages) the stand-in has served."""
    return sum(
        1 for method, path in server.requests if method == "GET" and path.startswith("/api/jobs?page_size")
    )


def wait_for_baseline(root: Path) -> None:
    """Until the daemon has taken the source's first files as its baseline (silently): a
    completion before that would be part of the baseline, not an event."""
    state = StateDatabase(root / "state" / "cvat-watch.db")
    wait_until(
        lambda: state.baseline_completed("street") is not None, timeout=30, what="the daemon's baseline"
    )


def complete_through_the_api(server: CvatStandIn, task_id: int) -> None:
    for job in server.jobs_of_task(task_id):
        if job.type == "annotation":
            answer = server.patch_job(job.id, {"stage": "acceptance", "state": "completed"})
            assert answer.status_code == 200


def complete_on_disk(path: Path) -> set[str]:
    records = [r for r in load_job_status(path) if r.counts]
    return {
        t for t in {r.task_id for r in records} if is_task_complete([r for r in records if r.task_id == t])
    }


def shape_count(xml: bytes, task_id: str) -> int:
    return loads_summary(xml).shape_counts[task_id]


def test_a_job_completed_in_cvat_is_exported_then_announced_once(
    tmp_path: Path, server: CvatStandIn, rig: DaemonRig
) -> None:
    receiver = rig.receiver()
    config = write_config(tmp_path, server, receiver)
    annotations = tmp_path / "exports" / "annotations.xml"
    daemon = rig.start(config, env=env())
    wait_for_baseline(tmp_path)
    assert receiver.requests == []  # what was complete before the first start is the baseline
    first_export = annotations.read_bytes()
    server.edit_annotations()  # the export after the completion holds other shapes
    complete_through_the_api(server, 2)
    (request,) = receiver.wait_for(1, timeout=20)
    event = Webhook(SECRET).verify(request.body, request.headers)
    assert (event["type"], event["task"]["id"]) == ("task.completed", "2")
    on_disk = annotations.read_bytes()
    assert on_disk == server._export_xml("project", 3) != first_export
    # The event was built from the export made after the completion, not the one before.
    assert event["task"]["image_count"] == loads_summary(on_disk).image_counts["2"] == 4
    assert event["task"]["shape_count"] == shape_count(on_disk, "2") != shape_count(first_export, "2")
    # More polls find nothing new: exactly one event.
    seen = listings(server)
    wait_until(lambda: listings(server) >= seen + 3, what="three more polls")
    assert len(receiver.requests) == 1
    assert daemon.stop() == 0
    assert ADMIN_TOKEN not in daemon.log


def test_cvats_webhook_pushes_a_poll_and_a_bad_signature_changes_nothing(
    tmp_path: Path, server: CvatStandIn, rig: DaemonRig
) -> None:
    receiver = rig.receiver()
    port = free_port()
    config = write_config(
        tmp_path,
        server,
        receiver,
        poll_interval=3600,  # only the push can make the source poll again within the test
        extra='webhook_secret_env = "CVAT_HOOK_SECRET"',
        top=f'[http]\nlisten = "127.0.0.1:{port}"\n',
    )
    job_status = tmp_path / "exports" / "job_status.json"
    rig.start(config, env=env())
    wait_for_baseline(tmp_path)
    hook_url = f"http://127.0.0.1:{port}/cvat/webhook/street"
    server.add_webhook(hook_url, secret=HOOK_SECRET, project_id=3)
    assert server.ping(1).status == 200

    # A forged delivery: CVAT's shape, a wrong signature. Refused, and the source does not poll.
    server.complete_task(2)  # silently, so that a poll would show it
    before = job_status.read_bytes()
    polls = listings(server)
    body = json.dumps(
        {"event": "update:job", "job": {"id": 3, "state": "completed"}, "webhook_id": 1}
    ).encode()
    forged = "sha256=" + hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    with httpx.Client() as client:
        answer = client.post(hook_url, content=body, headers={"X-Signature-256": forged})
        assert answer.status_code == 401
        assert client.post(hook_url, content=body).status_code == 401
    # (A bounded look, not a timing assertion: the trigger would poll within 0.2 s.)
    with pytest.raises(AssertionError):
        wait_until(lambda: listings(server) > polls, timeout=1.5, what="no poll")
    assert job_status.read_bytes() == before and receiver.requests == []

    # A real delivery from the stand-in (a PATCH in CVAT) makes the daemon poll now.
    server.jobs[5].stage = "acceptance"
    complete_through_the_api(server, 3)
    got = receiver.wait_for(2, timeout=20)
    assert sorted(event["task"]["id"] for event in (json.loads(r.body) for r in got)) == ["2", "3"]
    assert all(json.loads(r.body)["type"] == "task.completed" for r in got)


def test_server_down_then_back_and_401_is_reported_clearly(
    tmp_path: Path, server: CvatStandIn, rig: DaemonRig
) -> None:
    receiver = rig.receiver()
    config = write_config(tmp_path, server, receiver, poll_interval=0.2)
    server.go_down()
    daemon = rig.start(config, env=env(), args=("--log-level", "info"))
    wait_until(lambda: "cannot connect" in daemon.log, what="the connection error in the log")
    server.come_back()
    wait_for_baseline(tmp_path)
    wait_until(lambda: "answers again" in daemon.log, what="the recovery in the log")
    assert daemon.log.count("cannot connect") == 1  # once per distinct problem, not per poll
    complete_through_the_api(server, 2)
    (request,) = receiver.wait_for(1, timeout=20)
    assert json.loads(request.body)["task"]["id"] == "2"
    assert daemon.stop() == 0

    wrong = "wrong-token-5d1e7a"
    daemon = rig.start(config, env=env(wrong), args=("--log-level", "info"))
    wait_until(lambda: "401" in daemon.log, what="the 401 in the log")
    polls = len(server.requests)
    wait_until(lambda: len(server.requests) >= polls + 2, what="two more attempts")
    assert daemon.stop() == 0
    log = daemon.log
    assert log.count("401 Unauthorized") == 1
    assert "check the token" in log and server.url in log
    assert wrong not in log and ADMIN_TOKEN not in log


def test_an_export_that_fails_is_retried_and_the_completion_waits_for_it(
    tmp_path: Path, server: CvatStandIn, rig: DaemonRig
) -> None:
    receiver = rig.receiver()
    config = write_config(tmp_path, server, receiver, poll_interval=0.2)
    job_status = tmp_path / "exports" / "job_status.json"
    daemon = rig.start(config, env=env(), args=("--log-level", "info"))
    wait_for_baseline(tmp_path)
    server.export_fails = True
    complete_through_the_api(server, 2)
    wait_until(lambda: "failed on the server" in daemon.log, what="the failed export in the log")
    assert "2" not in complete_on_disk(job_status) and receiver.requests == []  # the completion is withheld
    server.export_fails = False
    (request,) = receiver.wait_for(1, timeout=30)
    assert json.loads(request.body)["task"]["id"] == "2"
    assert daemon.stop() == 0
    assert daemon.log.count("failed on the server") == 1


def test_sigkill_during_an_export_then_restart_announces_once(
    tmp_path: Path, server: CvatStandIn, rig: DaemonRig
) -> None:
    receiver = rig.receiver()
    config = write_config(tmp_path, server, receiver, poll_interval=0.2)
    job_status = tmp_path / "exports" / "job_status.json"
    daemon = rig.start(config, env=env())
    wait_for_baseline(tmp_path)
    server.hold_exports()
    exports_before = sum(1 for m, p in server.requests if m == "POST")
    complete_through_the_api(server, 2)
    wait_until(
        lambda: (
            sum(1 for m, p in server.requests if m == "POST") > exports_before
            and server.requests[-1][1].startswith("/api/requests/")
        ),
        what="an export in progress",
    )
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(timeout=10)
    assert receiver.requests == []
    assert "2" not in complete_on_disk(job_status)
    server.release_exports()
    rig.start(config, env=env())
    (request,) = receiver.wait_for(1, timeout=30)
    assert json.loads(request.body)["task"]["id"] == "2"
    polls = listings(server)
    wait_until(lambda: listings(server) >= polls + 3, what="three more polls")
    assert len(receiver.requests) == 1


def test_pull_writes_both_files_once_or_fails_with_one_line(tmp_path: Path, server: CvatStandIn) -> None:
    config = write_config(tmp_path, server, None)
    config.write_text("# no handlers: pull does not notify\n" + config.read_text())
    result = run_cli("pull", "--config", str(config), env=env())
    assert result.returncode == 0, result.stderr
    assert "street:" in result.stdout
    assert loads_summary((tmp_path / "exports" / "annotations.xml").read_bytes()).image_counts == {
        "1": 4,
        "2": 4,
        "3": 4,
    }
    assert len(load_job_status(tmp_path / "exports" / "job_status.json")) == len(server.jobs)

    wrong = "wrong-token-88aa"
    result = run_cli("pull", "--config", str(config), env=env(wrong))
    assert result.returncode == 2
    lines = [line for line in result.stderr.strip().splitlines() if "no [[handler]] tables" not in line]
    assert len(lines) == 1, result.stderr
    assert "401" in lines[0] and "check the token" in lines[0] and wrong not in lines[0]

    server.go_down()
    result = run_cli("pull", "--config", str(config), env=env())
    assert result.returncode == 2 and result.stderr.count("cvat-watch: error:") == 1
    assert "cannot connect" in result.stderr

    result = run_cli("pull", "--config", str(config), "--watch", "nope", env=env())
    assert result.returncode == 2 and "no watch named 'nope'" in result.stderr


def test_check_config_names_the_wrong_key(tmp_path: Path, server: CvatStandIn) -> None:
    with Receiver() as receiver:
        config = write_config(tmp_path, server, receiver, extra='export = "sometimes"')
    result = run_cli("check-config", "--config", str(config), env=env())
    assert result.returncode == 2
    assert "watch[0].cvat.export" in result.stderr
    config.write_text(
        config.read_text().replace('export = "sometimes"', 'webhook_secret_env = "CVAT_HOOK_SECRET"')
    )
    result = run_cli("check-config", "--config", str(config), env=env())
    assert (
        result.returncode == 2
        and "watch[0].cvat.webhook_secret_env" in result.stderr
        and "[http]" in result.stderr
    )
    result = run_cli("check-config", "--config", str(config), env={"CVAT_HOOK_SECRET": "x"})
    assert result.returncode == 2 and "watch[0].cvat.token_env" in result.stderr


def test_sighup_reload_and_no_secret_in_anything_written(
    tmp_path: Path, server: CvatStandIn, rig: DaemonRig
) -> None:
    """A token, a password and CVAT's webhook secret, through 503s, a forged delivery, a SIGHUP, the
    server down, a failed export and a 401, at debug level: none of them in any log, output or file."""
    password = "bobby-password-6c0f11"
    token = ADMIN_TOKEN
    server.add_user("bobby", password=password, admin=True)
    server.add_project(4, tasks=2, jobs_per_task=2, images_per_task=4, first_task_id=10, first_job_id=100)
    receiver = rig.receiver()
    port = free_port()
    config = write_config(
        tmp_path,
        server,
        receiver,
        poll_interval=0.3,
        extra='webhook_secret_env = "CVAT_HOOK_SECRET"',
        top=f'[http]\nlisten = "127.0.0.1:{port}"\n',
    )
    config.write_text(
        config.read_text()
        + f"""
[[watch]]
name = "alley"
annotations = "alley/annotations.xml"
job_status = "alley/job_status.json"
debounce = 0.1
[watch.cvat]
url = "{server.url}"
project = 4
username = "bobby"
password_env = "CVAT_PASSWORD"
poll_interval = 0.3
"""
    )
    environment = {**env(token), "CVAT_PASSWORD": password}
    server.add_webhook(f"http://127.0.0.1:{port}/cvat/webhook/street", secret=HOOK_SECRET, project_id=3)
    server.fail_next(3, status=503)
    daemon = rig.start(config, env=environment, args=("--log-level", "debug"))
    wait_for_baseline(tmp_path)
    state = StateDatabase(tmp_path / "state" / "cvat-watch.db")
    wait_until(lambda: state.baseline_completed("alley") is not None, timeout=30, what="alley's baseline")
    with httpx.Client() as client:
        forged = client.post(
            f"http://127.0.0.1:{port}/cvat/webhook/street",
            content=b'{"event": "update:job"}',
            headers={"X-Signature-256": "sha256=" + "0" * 64},
        )
        assert forged.status_code == 401
    complete_through_the_api(server, 2)
    receiver.wait_for(1, timeout=20)
    daemon.signal(signal.SIGHUP)
    rig.notify.wait_for("READY=1", count=2)
    wait_until(lambda: "reload: applying" in daemon.log, what="the reload")
    complete_through_the_api(server, 10)  # the alley watch, through basic auth, after the reload
    got = receiver.wait_for(2, timeout=20)
    assert [json.loads(r.body)["watch"] for r in got] == ["street", "alley"]
    server.go_down()
    wait_until(lambda: "cannot connect" in daemon.log, what="the server down")
    server.come_back()
    server.export_fails = True
    complete_through_the_api(server, 3)  # pushed by CVAT's webhook after the reload
    wait_until(lambda: "failed on the server" in daemon.log, what="a failed export")
    server.export_fails = False
    got = receiver.wait_for(3, timeout=30)
    assert json.loads(got[-1].body)["task"]["id"] == "3"
    assert daemon.stop() == 0
    # An unchanged [watch.cvat] keeps its source (no new server check) across the reload.
    assert (
        daemon.log.count("watch street: CVAT 2.23.1 at")
        == daemon.log.count("watch alley: CVAT 2.23.1 at")
        == 1
    )

    outputs = [daemon.log]
    for args in (["check-config"], ["pull"], ["pull", "--watch", "alley"]):
        result = run_cli(*args, "--config", str(config), env=environment)
        assert result.returncode == 0, result.stderr
        outputs += [result.stdout, result.stderr]
    result = run_cli(
        "pull", "--config", str(config), env={**environment, "CVAT_PASSWORD": "wrong-" + password}
    )
    assert result.returncode == 2 and "401" in result.stderr
    outputs += [result.stdout, result.stderr]
    files = [
        p.read_bytes().decode("utf-8", "replace")
        for p in tmp_path.rglob("*")
        if p.is_file() and p.suffix != ".sock"
    ]
    everything = "\n".join(outputs + files + [r.body.decode() for r in receiver.requests])
    for secret in (token, password, HOOK_SECRET):
        assert secret not in everything
    assert "DEBUG" in daemon.log  # the log was at debug level


def test_cvat_poll_success_is_a_metric(tmp_path: Path, server: CvatStandIn, rig: DaemonRig) -> None:
    """/metrics shows when each CVAT source last polled its server successfully."""
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    config = write_config(tmp_path, server, None, top=f'[http]\nlisten = "127.0.0.1:{port}"\n')
    rig.start(config, env=env())

    def polled() -> float | None:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "cvat_watch_cvat_poll_last_success_timestamp_seconds":
                    assert sample.labels == {"watch": "street"}
                    return sample.value
        return None

    first = wait_until(polled, timeout=30, what="a successful poll in the metrics")
    assert first > 1.7e9
    wait_until(lambda: (polled() or 0) > first, timeout=30, what="a later poll")
