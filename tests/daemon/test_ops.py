"""Metrics, health and the status page of the real daemon: the CLI in a subprocess, HTTP on 127.0.0.1,
a real receiver, a real headless Chromium where it is installed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cvat_watch.testing.browser import Chromium
from cvat_watch.testing.process import (
    DaemonRig,
    GeneratedExport,
    StateDatabase,
    Workspace,
    run_cli,
    wait_until,
    write_daemon_config,
)
from cvat_watch.testing.receiver import Receiver, Reply, free_port
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def _listen(config: Path) -> int:
    """Add an [http] table on a free loopback port to ``config``; the port."""
    port = free_port()
    config.write_text(config.read_text() + f'\n[http]\nlisten = "127.0.0.1:{port}"\n')
    return port


def _get(port: int, path: str) -> httpx.Response:
    with httpx.Client(timeout=10.0) as client:
        return client.get(f"http://127.0.0.1:{port}{path}")


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = _get(port, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(port: int, name: str, **labels: str) -> float | None:
    return _samples(port).get((name, tuple(sorted(labels.items()))))


def _complete(workspace: Workspace, *jobs: str) -> None:
    workspace.write_jobs({"21": "completed", "22": "completed", **dict.fromkeys(jobs, "completed")})


def test_metrics_follow_events_deliveries_and_a_restart(
    tmp_path: Path, workspace: Workspace, receiver: Receiver
) -> None:
    """A completion counts as an event; a failed attempt leaves a pending row the gauges show, also right
    after a restart; a redelivery that goes through is counted with its latency and empties the outbox."""
    receiver.script(Reply(503, body=b"busy"))
    workspace.write_config(handlers=[workspace.webhook(receiver.url(), name="hook", retry_delays="[3600]")])
    port = _listen(workspace.config)
    state = StateDatabase(workspace.state_dir / "cvat-watch.db")
    with DaemonRig(tmp_path) as rig:
        daemon = rig.start(workspace.config)
        assert _value(port, "cvat_watch_config_last_reload_successful") == 1
        assert _value(port, "cvat_watch_reloads_total", watch="example", outcome="committed") == 1
        assert _value(port, "cvat_watch_outbox_pending", handler="hook") == 0
        assert _value(port, "cvat_watch_tasks", watch="example") == 3
        assert _value(port, "cvat_watch_tasks_completed", watch="example") == 2
        _complete(workspace, "23")
        receiver.wait_for(1, timeout=15)
        wait_until(
            lambda: _value(port, "cvat_watch_deliveries_total", handler="hook", outcome="failed") == 1,
            what="a failed attempt",
        )
        found = _samples(port)
        assert found[("cvat_watch_events_total", (("type", "task.completed"), ("watch", "example")))] == 1
        assert found[("cvat_watch_outbox_pending", (("handler", "hook"),))] == 1
        assert found[("cvat_watch_outbox_retrying", (("handler", "hook"),))] == 1
        assert found[("cvat_watch_outbox_oldest_pending_age_seconds", (("handler", "hook"),))] >= 0
        assert found[("cvat_watch_tasks_completed", (("watch", "example"),))] == 3
        assert found[("cvat_watch_reload_last_success_timestamp_seconds", (("watch", "example"),))] > 1.7e9
        assert daemon.stop() == 0

        # A new process: nothing counted yet, but the outbox is read from the state.
        rig.start(workspace.config)
        assert _value(port, "cvat_watch_outbox_pending", handler="hook") == 1
        assert _value(port, "cvat_watch_deliveries_total", handler="hook", outcome="failed") is None
        (row,) = state.deliveries()
        assert run_cli("redeliver", str(row["id"]), "--state-dir", str(workspace.state_dir)).returncode == 0
        receiver.wait_for(2, timeout=15)
        wait_until(
            lambda: _value(port, "cvat_watch_deliveries_total", handler="hook", outcome="delivered") == 1,
            what="the delivery counted",
        )
        found = _samples(port)
        assert found[("cvat_watch_delivery_latency_seconds_count", (("handler", "hook"),))] == 1
        # Latency runs from the event's commit, before the restart: more than the last attempt took.
        assert found[("cvat_watch_delivery_latency_seconds_sum", (("handler", "hook"),))] > 0.05
        assert found[("cvat_watch_outbox_pending", (("handler", "hook"),))] == 0


def test_failed_reloads_are_counted_and_shown(tmp_path: Path, workspace: Workspace) -> None:
    """A broken export counts as a failed reload; a broken configuration on SIGHUP sets the config gauge to 0."""
    workspace.write_config(handlers=[])
    port = _listen(workspace.config)
    with DaemonRig(tmp_path) as rig:
        daemon = rig.start(workspace.config)
        workspace.write(workspace.annotations, b"<annotations><broken")
        wait_until(
            lambda: _value(port, "cvat_watch_reloads_total", watch="example", outcome="failed") == 1,
            what="a failed reload",
        )
        page = _get(port, "/").text
        assert "Last error:" in page and "annotations.xml" in page
        good = workspace.config.read_text()
        workspace.config.write_text(good + "\nunknown_key = 1\n")
        daemon.signal(signal.SIGHUP)
        wait_until(
            lambda: _value(port, "cvat_watch_config_last_reload_successful") == 0,
            what="the failed config reload",
        )
        assert "last reload failed" in _get(port, "/").text
        workspace.config.write_text(good)
        daemon.signal(signal.SIGHUP)
        wait_until(
            lambda: _value(port, "cvat_watch_config_last_reload_successful") == 1,
            what="the good config reload",
        )
        assert daemon.stop() == 0


def test_health_and_readiness(tmp_path: Path, workspace: Workspace) -> None:
    """/healthz and /readyz answer 200 with one line while the daemon runs; unknown paths are 404."""
    workspace.write_config(handlers=[])
    port = _listen(workspace.config)
    with DaemonRig(tmp_path) as rig:
        daemon = rig.start(workspace.config)
        health = _get(port, "/healthz")
        assert (health.status_code, health.text) == (200, "ok\n")
        ready = _get(port, "/readyz")
        assert (ready.status_code, ready.text) == (200, "ready\n")
        assert _get(port, "/nothing-here").status_code == 404
        assert daemon.stop() == 0


@pytest.fixture(scope="module")
def big_export(tmp_path_factory: pytest.TempPathFactory) -> GeneratedExport:
    return GeneratedExport(tmp_path_factory.mktemp("big"), tasks=20_000, shapes_per_image=0)


def test_not_ready_but_alive_during_the_first_load(tmp_path: Path, big_export: GeneratedExport) -> None:
    """While the first load of a large export runs, /readyz is 503 with the reason and /healthz is 200 (busy)."""
    config = write_daemon_config(tmp_path / "cvat-watch.toml", watches=[big_export.watch("big")], handlers=[])
    port = _listen(config)
    with DaemonRig(tmp_path) as rig:
        daemon = rig.start(config, ready=False)

        def answered() -> httpx.Response | None:
            try:
                return _get(port, "/readyz")
            except httpx.TransportError:
                return None

        first = wait_until(answered, timeout=60, what="the listener")
        assert first.status_code == 503 and first.text == "not ready: the first load is not done\n"
        health = _get(port, "/healthz")
        assert health.status_code == 200 and health.text.startswith("ok: loading watch big")
        wait_until(lambda: _get(port, "/readyz").status_code == 200, timeout=120, what="ready")
        assert rig.notify.count("READY=1") == 1
        assert daemon.stop() == 0


@pytest.fixture
def chromium() -> Chromium:
    if not Chromium.available():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    return Chromium()


HOSTILE = '<img src=x onerror="alert(1)">'


def test_status_page_in_a_real_browser(
    tmp_path: Path, workspace: Workspace, receiver: Receiver, chromium: Chromium
) -> None:
    """Headless Chromium renders the live page: the watch, "2/3", task 12 in progress with its job's state,
    the handler's row, a hostile task name as text; after job 23 completes, "3/3" and no task in progress."""
    text = workspace.annotations.read_text()
    workspace.annotations.write_text(
        text.replace("<name>drive-02</name>", "<name>&lt;img src=x onerror=&quot;alert(1)&quot;&gt;</name>")
    )
    receiver.set_default(Reply(503))
    workspace.write_config(handlers=[workspace.webhook(receiver.url(), name="hook", retry_delays="[3600]")])
    port = _listen(workspace.config)
    url = f"http://127.0.0.1:{port}/"
    with DaemonRig(tmp_path) as rig:
        daemon = rig.start(workspace.config)
        dom = chromium.dump_dom(url)
        assert 'data-watch="example"' in dom and '<h2 class="watch-name">example</h2>' in dom
        assert '<span class="count">2/3</span>' in dom and '<span class="rule">completed</span>' in dom
        assert 'data-task="12"' in dom and "#23: in progress (annotation)" in dom
        assert "<img" not in dom and "&lt;img src=x onerror=" in dom
        assert 'data-handler="hook"' in dom
        page = chromium.screenshot(url, tmp_path / "status.png")
        assert page.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        _complete(workspace, "23")
        wait_until(lambda: "3/3" in _get(port, "/").text, what="the page to show 3/3")
        dom = chromium.dump_dom(url)
        assert '<span class="count">3/3</span>' in dom and 'data-task="12"' not in dom
        assert "No task in progress." in dom
        receiver.wait_for(1, timeout=15)
        wait_until(
            lambda: '<td class="n pending">1</td>' in _get(port, "/").text, what="the pending delivery"
        )
        dom = chromium.dump_dom(url)
        assert '<td class="n pending">1</td>' in dom and '<td class="n retrying">1</td>' in dom
        assert daemon.stop() == 0


def test_a_taken_port_is_a_clear_error(tmp_path: Path, workspace: Workspace) -> None:
    """When the listen address is taken, `run` exits 2 naming the address instead of running blind."""
    import socket

    workspace.write_config(handlers=[])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        workspace.config.write_text(workspace.config.read_text() + f'\n[http]\nlisten = "127.0.0.1:{port}"\n')
        with DaemonRig(tmp_path) as rig:
            daemon = rig.start(workspace.config, ready=False)
            assert daemon.process.wait(timeout=30) == 2
            assert f"cannot listen on 127.0.0.1:{port}" in daemon.log


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the modes say")
def test_not_ready_when_the_state_is_not_writable(tmp_path: Path, workspace: Workspace) -> None:
    """A state folder that became read-only makes /readyz 503 with the reason; /healthz stays 200."""
    workspace.write_config(handlers=[])
    port = _listen(workspace.config)
    with DaemonRig(tmp_path) as rig:
        daemon = rig.start(workspace.config)
        workspace.state_dir.chmod(0o500)
        try:
            ready = _get(port, "/readyz")
            assert ready.status_code == 503 and "not writable" in ready.text
            assert _get(port, "/healthz").status_code == 200
        finally:
            workspace.state_dir.chmod(0o700)
        assert daemon.stop() == 0


def test_digest_deliveries_are_counted_per_event(
    tmp_path: Path, workspace: Workspace, receiver: Receiver
) -> None:
    """A chat digest of two events counts two deliveries, each with its latency."""
    pytest.importorskip("apprise")
    all_open = {"21": "in progress", "22": "in progress", "23": "in progress", "24": "in progress"}
    workspace.write_jobs(all_open)
    workspace.write_config(
        handlers=[
            f'[[handler]]\ntype = "apprise"\nname = "chat"\nurls = ["json://127.0.0.1:{receiver.port}/chat"]\n'
            'group_wait = "1h"\ngroup_max = 2\nretry_delays = [0.3]\n'
        ]
    )
    port = _listen(workspace.config)
    with DaemonRig(tmp_path) as rig:
        daemon = rig.start(workspace.config)
        workspace.write_jobs({**all_open, "21": "completed", "22": "completed", "24": "completed"})
        receiver.wait_for(1, timeout=15)
        wait_until(
            lambda: _value(port, "cvat_watch_deliveries_total", handler="chat", outcome="delivered") == 2,
            what="two deliveries counted",
        )
        assert _value(port, "cvat_watch_delivery_latency_seconds_count", handler="chat") == 2
        assert _value(port, "cvat_watch_outbox_pending", handler="chat") == 0
        assert daemon.stop() == 0
