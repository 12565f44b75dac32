"""The CVAT source in-process against the stand-in: which files it writes, when, and in what order;
and the signed webhook route on the real HTTP listener."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cvat_watch.config import WatchConfig, load_config
from cvat_watch.converter import Secret
from cvat_watch.cvatxml import loads_summary
from cvat_watch.daemon.cvat.push import CvatWebhooks
from cvat_watch.daemon.cvat.source import CvatSource
from cvat_watch.daemon.http import HttpListener
from cvat_watch.jobstatus import load_job_status
from cvat_watch.model import is_task_complete
from cvat_watch.testing.cvat_server import ADMIN_TOKEN, CvatStandIn


@pytest.fixture
def server() -> Iterator[CvatStandIn]:
    with CvatStandIn() as stand_in:
        stand_in.add_project(3, tasks=3, jobs_per_task=2, images_per_task=4, ground_truth=True)
        yield stand_in


def watch_config(tmp_path: Path, server: CvatStandIn, extra: str = "") -> WatchConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "cvat-watch.toml"
    config.write_text(
        f"""
[[watch]]
name = "street"
annotations = "out/annotations.xml"
job_status = "out/job_status.json"
[watch.cvat]
url = "{server.url}"
project = 3
token_env = "CVAT_TOKEN"
page_size = 4
{extra}
"""
    )
    return load_config(config, environ={"CVAT_TOKEN": ADMIN_TOKEN}).watches[0]


@pytest.fixture
def source(tmp_path: Path, server: CvatStandIn) -> Iterator[CvatSource]:
    made = CvatSource(watch_config(tmp_path, server))
    yield made
    made.close()


def complete_on_disk(path: Path) -> set[str]:
    records = load_job_status(path)
    tasks = {record.task_id for record in records}
    return {t for t in tasks if is_task_complete([r for r in records if r.task_id == t and r.counts])}


def exports(server: CvatStandIn, start: int = 0) -> int:
    return sum(
        1 for method, path in server.requests[start:] if method == "POST" and "/dataset/export" in path
    )


def test_first_poll_writes_both_files_in_next_cvats_flat_format(
    source: CvatSource, server: CvatStandIn
) -> None:
    server.jobs[2].assignee = "admin"
    outcome = source.poll()
    assert outcome.error is None and outcome.wrote_annotations and outcome.wrote_job_status
    rows = json.loads(source.watch.job_status.read_text())  # type: ignore[union-attr]
    assert len(rows) == len(server.jobs)
    assert list(rows[0]) == ["task_id", "job_id", "task_name", "stage", "state", "assignee", "type"]
    by_job = {row["job_id"]: row for row in rows}
    assert by_job[2] == {
        "task_id": "1",
        "job_id": 2,
        "task_name": server.tasks[1].name,
        "stage": "annotation",
        "state": "new",
        "assignee": "admin",
        "type": "annotation",
    }
    assert {row["type"] for row in rows} == {"annotation", "ground_truth"}
    assert loads_summary(source.watch.annotations.read_bytes()).image_counts == {"1": 4, "2": 4, "3": 4}


def test_an_unchanged_listing_is_not_rewritten(source: CvatSource, server: CvatStandIn) -> None:
    source.poll()
    job_status = source.watch.job_status
    assert job_status is not None
    before = os.stat(job_status)
    outcome = source.poll()
    assert not outcome.wrote_job_status and not outcome.exported
    after = os.stat(job_status)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_completion_is_exported_before_the_listing_shows_it(
    source: CvatSource, server: CvatStandIn
) -> None:
    source.poll()
    server.edit_annotations()  # the export after the completion differs from the first one
    server.complete_task(2)
    start = len(server.requests)
    outcome = source.poll()
    assert outcome.newly_complete == ("2",) and outcome.exported
    assert exports(server, start) == 1
    fresh = server._export_xml("project", 3)
    assert source.watch.annotations.read_bytes() == fresh
    job_status = source.watch.job_status
    assert job_status is not None
    assert complete_on_disk(job_status) == {"2"}
    # The annotations file was replaced before the job-status file that shows the completion.
    assert os.stat(source.watch.annotations).st_mtime_ns <= os.stat(job_status).st_mtime_ns


def test_a_completion_takes_the_tasks_current_name(source: CvatSource, server: CvatStandIn) -> None:
    source.poll()
    server.tasks[2].name = "renamed in CVAT"
    source.poll()  # nothing completed: names are not listed again
    job_status = source.watch.job_status
    assert job_status is not None
    assert {r.task_name for r in load_job_status(job_status) if r.task_id == "2"} != {"renamed in CVAT"}
    server.complete_task(2)
    source.poll()
    assert {r.task_name for r in load_job_status(job_status) if r.task_id == "2"} == {"renamed in CVAT"}


def test_several_completions_share_one_export(source: CvatSource, server: CvatStandIn) -> None:
    source.poll()
    server.complete_task(1)
    server.complete_task(3)
    start = len(server.requests)
    outcome = source.poll()
    assert outcome.newly_complete == ("1", "3")
    assert exports(server, start) == 1


@pytest.mark.parametrize("fault", ["export_fails", "truncated", "no-xml", "timeout"])
def test_a_failed_export_keeps_the_good_file_and_withholds_the_completion(
    source: CvatSource, server: CvatStandIn, fault: str
) -> None:
    source.poll()
    good = source.watch.annotations.read_bytes()
    job_status = source.watch.job_status
    assert job_status is not None
    server.edit_annotations()
    server.complete_task(2)
    server.set_jobs({1: ("annotation", "in progress")})  # an unrelated change still goes out
    if fault == "export_fails":
        server.export_fails = True
    elif fault == "timeout":
        server.hold_exports()
        assert source._ensure_client() is not None
        source._client.export_timeout = 0.3  # type: ignore[union-attr]
    else:
        server.corrupt_download = fault  # type: ignore[assignment]
    outcome = source.poll()
    assert outcome.error is not None and outcome.error.retry
    assert outcome.withheld == ("2",)
    assert source.watch.annotations.read_bytes() == good
    assert complete_on_disk(job_status) == set()
    assert {r.job_id: r.state for r in load_job_status(job_status)}["1"] == "in progress"
    # Retried later: the next poll, with the fault gone, exports and shows the completion.
    server.export_fails = False
    server.corrupt_download = None
    server.release_exports()
    outcome = source.poll()
    assert outcome.error is None and outcome.exported
    assert source.watch.annotations.read_bytes() == server._export_xml("project", 3)
    assert complete_on_disk(job_status) == {"2"}


def test_an_export_that_does_not_load_never_replaces_the_file(
    source: CvatSource, server: CvatStandIn
) -> None:
    source.poll()
    good = source.watch.annotations.read_bytes()
    server.complete_task(1)
    server._xml_cache[("project", 3, server._revision)] = b"<annotations><image></annotations>"
    outcome = source.poll()
    assert outcome.error is not None and "does not load" in str(outcome.error)
    assert source.watch.annotations.read_bytes() == good
    assert complete_on_disk(source.watch.job_status) == set()  # type: ignore[arg-type]


def test_export_never_and_on_change(tmp_path: Path, server: CvatStandIn) -> None:
    never = CvatSource(watch_config(tmp_path / "never", server, 'export = "never"'))
    on_change = CvatSource(watch_config(tmp_path / "change", server, 'export = "on-change"'))
    try:
        never.poll()
        assert not never.watch.annotations.exists() and never.watch.job_status.exists()  # type: ignore[union-attr]
        on_change.poll()
        start = len(server.requests)
        server.set_jobs({1: ("annotation", "in progress")})
        assert on_change.poll().exported
        assert exports(server, start) == 1
        assert not on_change.poll().exported
        # A failed export is owed: the next poll exports although the listing did not change again.
        server.export_fails = True
        server.set_jobs({1: ("annotation", "completed")})
        assert on_change.poll().error is not None
        server.export_fails = False
        assert on_change.poll().exported
        assert not on_change.poll().exported
    finally:
        never.close()
        on_change.close()


def test_on_change_keeps_the_listing_until_its_export_is_on_disk_across_a_restart(
    tmp_path: Path, server: CvatStandIn
) -> None:
    """A failed on-change export leaves the old listing, so a new process still owes the export."""
    watch = watch_config(tmp_path, server, 'export = "on-change"')
    first = CvatSource(watch)
    try:
        first.poll()
        listing = watch.job_status.read_bytes()  # type: ignore[union-attr]
        # A change that completes nothing (a completion's rows are held back in every mode).
        server.export_fails = True
        server.set_jobs({1: ("validation", "in progress")})
        outcome = first.poll()
        assert outcome.error is not None and not outcome.wrote_job_status
        assert watch.job_status.read_bytes() == listing  # type: ignore[union-attr]
    finally:
        first.close()
    server.export_fails = False
    restarted = CvatSource(watch)
    try:
        start = len(server.requests)
        outcome = restarted.poll()
        assert outcome.exported and outcome.wrote_job_status
        assert exports(server, start) == 1
        stages = {r.job_id: r.stage for r in load_job_status(watch.job_status)}  # type: ignore[arg-type]
        assert stages["1"] == "validation"
    finally:
        restarted.close()


def test_server_problems_are_reported_in_the_outcome_and_logged_once(
    source: CvatSource, server: CvatStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    source.poll()
    server.go_down()
    source._client.retries = 0  # type: ignore[union-attr]
    first = source.poll()
    second = source.poll()
    assert first.error is not None and first.error.retry and second.error is not None
    assert sum("cannot connect" in record.getMessage() for record in caplog.records) == 1
    server.come_back()
    assert source.poll().error is None
    assert sum("answers again" in record.getMessage() for record in caplog.records) == 1
    assert ADMIN_TOKEN not in caplog.text


def test_the_webhook_route_accepts_only_cvats_signature(tmp_path: Path) -> None:
    polls: list[str] = []
    webhooks = CvatWebhooks()
    webhooks.set_targets({"street": (Secret("hook-secret"), lambda: polls.append("street"))})
    listener = HttpListener(port=0)
    webhooks.install(listener)
    listener.start()
    body = json.dumps({"event": "update:job", "job": {"id": 5, "state": "completed"}}).encode()
    good = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    try:
        with httpx.Client(base_url=listener.url) as client:

            def post(path: str, content: bytes, signature: str | None) -> int:
                headers = {"Content-Type": "application/json"}
                if signature is not None:
                    headers["X-Signature-256"] = signature
                return client.post(path, content=content, headers=headers).status_code

            assert post("/cvat/webhook/street", body, None) == 401
            assert post("/cvat/webhook/street", body, good.replace("sha256=", "sha1=")) == 401
            assert post("/cvat/webhook/street", body, good[:-1] + ("0" if good[-1] != "0" else "1")) == 401
            assert post("/cvat/webhook/street", body + b" ", good) == 401
            assert post("/cvat/webhook/other", body, good) == 401
            assert polls == []  # nothing changed
            ping = json.dumps({"event": "ping"}).encode()
            signed_ping = "sha256=" + hmac.new(b"hook-secret", ping, hashlib.sha256).hexdigest()
            assert post("/cvat/webhook/street", ping, signed_ping) == 200
            assert polls == []
            assert post("/cvat/webhook/street", body, good) == 200
            assert polls == ["street"]
    finally:
        listener.stop()
    assert (webhooks.accepted, webhooks.refused) == (2, 5)
