"""Metrics in process: the instruments' names and labels, and outbox gauges read from a real state."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cvat_watch.daemon.events import TASK_COMPLETED, Event, ProjectInfo, TaskInfo, event_id
from cvat_watch.daemon.metrics import Metrics
from cvat_watch.daemon.ops import Operations
from cvat_watch.daemon.snapshot import JobState, Snapshot, TaskState
from cvat_watch.daemon.store import Store
from cvat_watch.errors import StateError
from prometheus_client.parser import text_string_to_metric_families


def _event(task_id: str) -> Event:
    return Event(
        type=TASK_COMPLETED,
        id=event_id("w", task_id, TASK_COMPLETED, 1, epoch="test"),
        timestamp="2026-12-01T10:00:00.000000Z",
        watch="w",
        project=ProjectInfo(id="3", name="p"),
        task=TaskInfo(id=task_id, name=f"task {task_id}", url=None),
    )


def _snapshot(*tasks: str) -> Snapshot:
    return Snapshot(
        watch="w",
        tasks=[
            TaskState(id=t, completed=True, jobs=[JobState(id=f"{t}0", state="completed")]) for t in tasks
        ],
    )


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_outbox_gauges_are_read_from_the_state_after_a_restart(tmp_path: Path) -> None:
    """A fresh process's scrape shows the pending, retrying and dead rows a previous one left, and the oldest's age."""
    path = tmp_path / "cvat-watch.db"
    with Store.open(path) as store:
        store.commit_reload(
            "w", _snapshot("1", "2"), {}, [_event("1"), _event("2")], lambda _: ["a", "b"], now=1000.0
        )
        store.commit_reload(
            "w", _snapshot("1", "2", "3"), {}, [_event("3")], lambda _: ["a", "b"], now=1050.0
        )
        (first, *_rest) = store.due_deliveries("a", now=1000.0)
        store.record_failure(first.id, "HTTP 503", 1001.0, 2000.0)  # retrying: still pending
        for row in store.due_deliveries("b", now=1050.0):
            store.record_delivered(row.id, 1002.0)
    operations = Operations(
        state_path=path, runners=dict, handlers=lambda: ["a", "b", "c"], clock=lambda: 1100.0
    )
    try:
        found = samples(operations.answer_metrics()[2])
    finally:
        operations.close()
    assert found[("cvat_watch_outbox_pending", (("handler", "a"),))] == 3
    assert found[("cvat_watch_outbox_retrying", (("handler", "a"),))] == 1
    assert found[("cvat_watch_outbox_oldest_pending_age_seconds", (("handler", "a"),))] == 100.0
    assert found[("cvat_watch_outbox_pending", (("handler", "b"),))] == 0
    assert found[("cvat_watch_outbox_oldest_pending_age_seconds", (("handler", "b"),))] == 0
    # A configured handler that never had a delivery shows zeros rather than nothing.
    assert found[("cvat_watch_outbox_pending", (("handler", "c"),))] == 0


def test_instruments_have_the_documented_names_and_labels() -> None:
    """The hooks feed the metrics the README lists, with exactly these names and labels."""
    clock = iter([50.0, 60.0, 70.0, 80.0]).__next__
    metrics = Metrics(clock=clock)
    metrics.reloaded("w", "committed", ["task.completed", "task.completed"])
    metrics.reloaded("w", "failed")
    metrics.delivery("hook", "failed")
    metrics.delivery("hook", "delivered", 0.3)
    metrics.delivery("hook", "dead")
    metrics.delivery("chat", "gone")
    metrics.config_loaded(False)
    metrics.cvat_polled("w")
    found = samples(metrics.exposition())
    assert found[("cvat_watch_events_total", (("type", "task.completed"), ("watch", "w")))] == 2
    assert found[("cvat_watch_reloads_total", (("outcome", "committed"), ("watch", "w")))] == 1
    assert found[("cvat_watch_reloads_total", (("outcome", "failed"), ("watch", "w")))] == 1
    assert found[("cvat_watch_reload_last_success_timestamp_seconds", (("watch", "w"),))] == 50.0
    for outcome in ("failed", "delivered", "dead"):
        assert found[("cvat_watch_deliveries_total", (("handler", "hook"), ("outcome", outcome)))] == 1
    assert found[("cvat_watch_deliveries_total", (("handler", "chat"), ("outcome", "gone")))] == 1
    assert found[("cvat_watch_delivery_latency_seconds_count", (("handler", "hook"),))] == 1
    assert found[("cvat_watch_delivery_latency_seconds_bucket", (("handler", "hook"), ("le", "0.5")))] == 1
    assert found[("cvat_watch_delivery_latency_seconds_bucket", (("handler", "hook"), ("le", "0.25")))] == 0
    assert found[("cvat_watch_config_last_reload_successful", ())] == 0
    assert found[("cvat_watch_cvat_poll_last_success_timestamp_seconds", (("watch", "w"),))] == 60.0


def test_two_daemons_in_one_process_do_not_share_counters() -> None:
    """Each Metrics has its own registry: nothing lands in prometheus-client's global one."""
    one, two = Metrics(), Metrics()
    one.delivery("hook", "delivered", 0.1)
    assert ("cvat_watch_deliveries_total", (("handler", "hook"), ("outcome", "delivered"))) not in samples(
        two.exposition()
    )


def test_read_only_open_never_creates_and_refuses_other_databases(tmp_path: Path) -> None:
    """open_read_only: a missing file is an error and stays missing; another application's database is refused."""
    missing = tmp_path / "none" / "cvat-watch.db"
    with pytest.raises(StateError, match="no state database"):
        Store.open_read_only(missing)
    assert not missing.parent.exists()
    other = tmp_path / "other.db"
    connection = sqlite3.connect(other)
    connection.execute("CREATE TABLE t (x)")
    connection.close()
    with pytest.raises(StateError, match="not a cvat-watch state database"):
        Store.open_read_only(other)
    with Store.open(tmp_path / "ours.db"):
        pass
    reader = Store.open_read_only(tmp_path / "ours.db")
    try:
        assert reader.outbox_summary(0.0) == {}
        with pytest.raises(StateError):
            reader.redeliver(1, 0.0)  # a read-only connection cannot write
    finally:
        reader.close()
