"""How long a Prometheus scrape of the real daemon takes with a large outbox.

``python -m benchmarks.bench_scrape [--pending 10000] [--delivered 40000] [--scrapes 50]``

A state database is filled with ``--pending`` deliveries waiting for a retry (not due for a day, so
the daemon does not try them) and ``--delivered`` delivered ones, over two handlers. Then
``cvat-watch run`` starts in a subprocess on it with ``[http] listen`` on a free port of 127.0.0.1,
and ``GET /metrics`` is timed ``--scrapes`` times (after one warm-up), on a fresh connection each
time, as Prometheus does. Also timed in this process: the outbox query and the whole exposition.
The result is a Markdown table with the ratio to the 50 ms target. Nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cvat_watch.daemon.events import TASK_COMPLETED, Event, ProjectInfo, TaskInfo, event_id
from cvat_watch.daemon.ops import Operations
from cvat_watch.daemon.snapshot import Snapshot, TaskState
from cvat_watch.daemon.store import Store
from cvat_watch.testing.process import EXAMPLE, NotifySocket, wait_until
from cvat_watch.testing.receiver import free_port

TARGET = 0.050


def fill_state(path: Path, *, pending: int, delivered: int) -> None:
    """``pending`` rows due in a day and ``delivered`` delivered rows, for handlers hook and chat."""
    total = pending + delivered
    now = time.time()
    events = [
        Event(
            type=TASK_COMPLETED,
            id=event_id("old", str(task), TASK_COMPLETED, 1, epoch="bench"),
            timestamp="2026-12-01T10:00:00.000000Z",
            watch="old",
            project=ProjectInfo(id="1", name="p"),
            task=TaskInfo(id=str(task), name=f"task {task}", url=None),
        )
        for task in range(total // 2 + 1)
    ]
    snapshot = Snapshot(watch="old", tasks=[TaskState(id=str(t), completed=True) for t in range(len(events))])
    with Store.open(path) as store:
        store.commit_reload("old", snapshot, {}, events, lambda _: ["hook", "chat"], now=now - 3600)
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.execute(
                "UPDATE deliveries SET status = 'delivered', attempts = 1, next_attempt_at = NULL,"
                " delivered_at = ? WHERE id > ?",
                (now - 60, pending),
            )
            connection.execute(
                "UPDATE deliveries SET attempts = 1, last_error = 'HTTP 503', next_attempt_at = ?"
                " WHERE id <= ?",
                (now + 86400, pending),
            )
    finally:
        connection.close()


def in_process(path: Path, repeat: int) -> tuple[float, float]:
    """Median seconds of the outbox query, and of the whole exposition, in this process."""
    operations = Operations(state_path=path, runners=dict, handlers=lambda: ["hook", "chat"])
    try:
        queries, expositions = [], []
        for _ in range(repeat):
            started = time.perf_counter()
            operations.scrape_state()
            queries.append(time.perf_counter() - started)
            started = time.perf_counter()
            operations.answer_metrics()
            expositions.append(time.perf_counter() - started)
    finally:
        operations.close()
    return statistics.median(queries), statistics.median(expositions)


def scrape(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    elapsed = time.perf_counter() - started
    if b"cvat_watch_outbox_pending" not in body:
        raise SystemExit(f"no outbox gauge in the scrape of {url}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pending", type=int, default=10_000)
    parser.add_argument("--delivered", type=int, default=40_000)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cvat-watch-bench-scrape-") as folder:
        root = Path(folder)
        state = root / "state"
        print(f"filling {args.pending} pending + {args.delivered} delivered rows …", file=sys.stderr)
        fill_state(state / "cvat-watch.db", pending=args.pending, delivered=args.delivered)
        query, exposition = in_process(state / "cvat-watch.db", 20)
        port = free_port()
        config = root / "cvat-watch.toml"
        config.write_text(
            f'state_dir = "{state}"\n[http]\nlisten = "127.0.0.1:{port}"\n'
            f'[[watch]]\nname = "example"\nannotations = "{EXAMPLE / "annotations.xml"}"\n'
            f'job_status = "{EXAMPLE / "job_status.json"}"\n'
            '[[handler]]\ntype = "webhook"\nname = "hook"\nurl = "http://127.0.0.1:9/hook"\n'
            '[[handler]]\ntype = "webhook"\nname = "chat"\nurl = "http://127.0.0.1:9/chat"\n'
        )
        with NotifySocket(root / "notify.sock") as notify:
            daemon = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cvat_watch",
                    "run",
                    "--config",
                    str(config),
                    "--allow-root",
                    "--log-level",
                    "warning",
                ],
                env={**os.environ, "NOTIFY_SOCKET": str(notify.path)},
                stdin=subprocess.DEVNULL,
            )
            try:
                wait_until(
                    lambda: notify.count("READY=1") or daemon.poll() is not None, timeout=60, what="READY=1"
                )
                if daemon.poll() is not None:
                    raise SystemExit(f"the daemon exited with {daemon.returncode}")
                url = f"http://127.0.0.1:{port}/metrics"
                scrape(url)
                times = sorted(scrape(url) for _ in range(args.scrapes))
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    median = statistics.median(times)
    print(f"\n{args.pending:,} pending and {args.delivered:,} delivered deliveries, {args.scrapes} scrapes\n")
    print("| what | median | p95 | max | ÷ 50 ms target |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(
        f"| GET /metrics over HTTP (real daemon) | {median * 1000:.1f} ms | {p95 * 1000:.1f} ms"
        f" | {times[-1] * 1000:.1f} ms | {median / TARGET:.2f} |"
    )
    print(f"| outbox query (in process) | {query * 1000:.1f} ms | | | {query / TARGET:.2f} |")
    print(f"| whole exposition (in process) | {exposition * 1000:.1f} ms | | | {exposition / TARGET:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
