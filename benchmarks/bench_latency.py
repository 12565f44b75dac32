"""End-to-end latency of the real daemon: a job-status file renamed into place → the webhook received.

``python -m benchmarks.bench_latency [--changes 60] [--debounce 0.1] [--bulk 1000] [--quick]``

``cvat-watch run`` runs in a subprocess with a configuration in a temporary folder: one watch over a
generated project export (cached in /tmp/cvat-watch-bench) and its job-status file, one signed webhook
handler posting to a receiver this process serves on 127.0.0.1. Readiness is the daemon's ``READY=1`` on
a ``NOTIFY_SOCKET`` datagram socket bound here. Then:

* **one task at a time**, ``--changes`` times (after one warm-up change that opens the HTTP connection): a new
  job-status file that completes one more task is written beside the watched one and renamed over it; the
  clock starts just before ``os.replace`` and stops when the receiver has read the ``task.completed`` request
  for that task. Reported: p50, p95, p99 and max minus the debounce.
* **bulk**: one rename that completes ``--bulk`` tasks at once; the time until the receiver has all of them.

The daemon is stopped by its pid (SIGTERM, then SIGKILL after a grace period) whatever happens. The result
is a Markdown table on stdout with the targets of the performance issue; progress goes to stderr. Nothing
asserts a speed.
"""

from __future__ import annotations

import argparse
import http.server
import json
import math
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
from cvat_watch.testing.generate import (
    DEFAULT_FIRST_JOB_ID,
    DEFAULT_FIRST_TASK_ID,
    GENERATOR_VERSION,
    generate_export,
    job_ids_for,
)
from cvat_watch.testing.process import NotifySocket

__all__ = [
    "CACHE_DIR",
    "DaemonUnderTest",
    "JobStatusWriter",
    "Receiver",
    "Result",
    "ensure_export",
    "format_table",
    "main",
    "percentile",
    "run",
]

CACHE_DIR = Path("/tmp/cvat-watch-bench")
REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET_ENV = "CVAT_WATCH_BENCH_SECRET"
# A throw-away signing key: requests are signed, as they would be in production.
SECRET = "whsec_YmVuY2htYXJrLW9ubHktbm90LWEtc2VjcmV0"
#: The issue's targets, over the debounce (ms), and for the bulk case (s).
P50_TARGET_MS = 50.0
P99_TARGET_MS = 250.0
BULK_TARGET_S = 5.0
STOP_GRACE = 15.0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with ``fraction`` of all samples at or below it."""
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


# --- files


def ensure_export(
    *, tasks: int, jobs_per_task: int, shapes_per_image: int, cache_dir: Path = CACHE_DIR, seed: int = 0
) -> Path:
    """A project export with one image per job, generated into ``cache_dir`` on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"latency-t{tasks}-j{jobs_per_task}-s{shapes_per_image}-seed{seed}-v{GENERATOR_VERSION}"
    path = cache_dir / f"{stem}.xml"
    if not path.exists():
        info = generate_export(
            path,
            kind="project",
            images=tasks * jobs_per_task,
            tasks=tasks,
            jobs_per_task=jobs_per_task,
            shapes_per_image=shapes_per_image,
            seed=seed,
        )
        _progress(f"generated {info!r}")
    return path


class JobStatusWriter:
    """Job-status documents for the export's tasks: every task open (one job in progress) until completed.

    The generator allocates job ids in blocks per task from the same first ids, so these records agree
    with the export's segments.
    """

    def __init__(self, *, tasks: int, jobs_per_task: int, shape: str) -> None:
        task_ids = [DEFAULT_FIRST_TASK_ID + i for i in range(tasks)]
        self.task_ids = [str(task_id) for task_id in task_ids]
        self._jobs = job_ids_for(task_ids, jobs_per_task, first_job_id=DEFAULT_FIRST_JOB_ID)
        self._shape = shape
        self._completed: set[int] = set()

    def complete(self, task_ids: Sequence[str]) -> bytes:
        """The file's bytes with ``task_ids`` completed as well (on top of every earlier call)."""
        self._completed.update(int(task_id) for task_id in task_ids)
        return self.render()

    def render(self) -> bytes:
        rows: list[dict[str, Any]] = []
        for task_id, job_ids in self._jobs.items():
            done = task_id in self._completed
            for index, job_id in enumerate(job_ids):
                # Jobs after the first are finished already; the first one keeps an open task open.
                finished = done or index > 0
                rows.append(
                    {
                        "task_id": task_id,
                        "job_id": job_id,
                        "state": "completed" if finished else "in progress",
                        "stage": "acceptance" if finished else "annotation",
                        "assignee": "anna",
                    }
                )
        document: Any
        if self._shape == "flat":
            document = [{**row, "task_id": str(row["task_id"])} for row in rows]
        else:
            results = [
                {
                    "id": row["job_id"],
                    "task_id": row["task_id"],
                    "state": row["state"],
                    "stage": row["stage"],
                    "type": "annotation",
                    "assignee": {"username": row["assignee"]},
                    "updated_date": "2026-11-25T10:00:00.000000Z",
                }
                for row in rows
            ]
            document = {"count": len(results), "next": None, "previous": None, "results": results}
        return json.dumps(document, separators=(",", ":")).encode()


# --- what the daemon talks to


@attrs.frozen
class Arrival:
    """One request the receiver read: when (``time.perf_counter``), the event type and the task id."""

    at: float
    type: str
    task_id: str


class Receiver:
    """A keep-alive HTTP/1.1 receiver on 127.0.0.1 that timestamps each POST on arrival and answers 200."""

    def __init__(self) -> None:
        self._arrivals: list[Arrival] = []
        self._first: dict[tuple[str, str], float] = {}
        self._changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                at = time.perf_counter()
                try:
                    event = json.loads(body)
                    arrival = Arrival(at, str(event.get("type")), str((event.get("task") or {}).get("id")))
                except (ValueError, AttributeError):
                    arrival = Arrival(at, "unreadable", "")
                receiver._record(arrival)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="bench-receiver"
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def _record(self, arrival: Arrival) -> None:
        with self._changed:
            self._arrivals.append(arrival)
            self._first.setdefault((arrival.type, arrival.task_id), arrival.at)
            self._changed.notify_all()

    @property
    def arrivals(self) -> list[Arrival]:
        with self._changed:
            return list(self._arrivals)

    def wait_for_tasks(self, task_ids: Sequence[str], *, timeout: float) -> dict[str, float] | None:
        """Arrival time of the first ``task.completed`` of each task, or None when not all came in time."""
        missing = set(task_ids)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                # Only the ones still missing are looked up again: a bulk run wakes us once per request.
                missing = {task_id for task_id in missing if ("task.completed", task_id) not in self._first}
                if not missing:
                    return {task_id: self._first[("task.completed", task_id)] for task_id in task_ids}
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def wait_for_notify(notify: NotifySocket, line: str, *, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait for a datagram holding ``line``; RuntimeError if ``alive()`` turns false or time runs out."""
    deadline = time.monotonic() + timeout
    while not any(line in message.splitlines() for message in notify.messages):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {line} within {timeout:g} s")
        if not alive():
            raise RuntimeError(f"the daemon exited before sending {line}")
        time.sleep(0.02)


class DaemonUnderTest:
    """``python -m cvat_watch run`` in a subprocess, its output in a log file, stopped by its pid."""

    def __init__(self, config: Path, *, notify_socket: Path, log_path: Path) -> None:
        environment = {
            **os.environ,
            "NOTIFY_SOCKET": str(notify_socket),
            SECRET_ENV: SECRET,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cvat_watch", "run", "--config", str(config), "--allow-root"],
            cwd=REPO_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a grace period; the exit status (negative: killed by that signal)."""
        try:
            if self.process.poll() is None:
                os.kill(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    _progress(f"daemon {self.process.pid} alive {STOP_GRACE:g} s after SIGTERM; killing it")
                    os.kill(self.process.pid, signal.SIGKILL)
                    self.process.wait(timeout=STOP_GRACE)
            return self.process.returncode
        finally:
            self._log.close()


def _write_config(folder: Path, *, url: str, debounce: float, jobs_file: str) -> Path:
    config = folder / "cvat-watch.toml"
    config.write_text(
        f"""state_dir = "state"

[[watch]]
name = "bench"
annotations = "exports/annotations.xml"
job_status = "exports/{jobs_file}"
debounce = {debounce!r}
max_wait = {max(1.0, 10 * debounce)!r}
# The slow safety re-check must not land inside a measurement.
recheck_interval = 3600.0

[[handler]]
type = "webhook"
name = "hook"
url = "{url}"
secret_env = "{SECRET_ENV}"
retry_delays = [0.5, 1.0, 2.0]
"""
    )
    return config


def _replace(path: Path, data: bytes) -> float:
    """Write ``data`` beside ``path`` and rename it over; the clock reading just before the rename."""
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(data)
    started = time.perf_counter()
    os.replace(partial, path)
    return started


# --- the run


@attrs.frozen
class Result:
    """What one run measured (seconds)."""

    debounce: float
    latencies: tuple[float, ...]
    warm_up: float
    bulk: int
    bulk_first: float | None
    bulk_all: float | None
    bulk_received: int
    reload_bytes: int
    export_bytes: int
    tasks: int
    jobs: int
    exit_status: int | None
    duplicates: int


def run(
    *,
    changes: int,
    debounce: float,
    bulk: int,
    jobs_per_task: int,
    shapes_per_image: int,
    shape: str,
    tasks: int = 0,
    cache_dir: Path = CACHE_DIR,
    seed: int = 0,
    timeout: float = 30.0,
) -> Result:
    """Start the daemon, measure both cases, stop the daemon; raises RuntimeError with its log on failure.

    The export has ``tasks`` tasks, or as many as the changes need if that is more; the ones no change
    touches stay open throughout, like the unfinished part of a large project.
    """
    tasks = max(tasks, 1 + changes + bulk)
    export = ensure_export(
        tasks=tasks,
        jobs_per_task=jobs_per_task,
        shapes_per_image=shapes_per_image,
        cache_dir=cache_dir,
        seed=seed,
    )
    writer = JobStatusWriter(tasks=tasks, jobs_per_task=jobs_per_task, shape=shape)
    single, bulk_ids = writer.task_ids[: 1 + changes], writer.task_ids[1 + changes : 1 + changes + bulk]
    rng = random.Random(f"latency:{seed}")
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as temporary:
        folder = Path(temporary)
        exports = folder / "exports"
        exports.mkdir()
        (exports / "annotations.xml").write_bytes(export.read_bytes())
        job_status = exports / "job_status.json"
        initial = writer.render()
        job_status.write_bytes(initial)
        receiver = Receiver()
        receiver.start()
        notify = NotifySocket(folder / "notify.sock")
        daemon: DaemonUnderTest | None = None
        try:
            config = _write_config(folder, url=receiver.url, debounce=debounce, jobs_file=job_status.name)
            daemon = DaemonUnderTest(config, notify_socket=notify.path, log_path=folder / "daemon.log")
            started = time.perf_counter()
            wait_for_notify(notify, "READY=1", timeout=120.0, alive=daemon.alive)
            _progress(f"daemon {daemon.process.pid} ready after {time.perf_counter() - started:.2f} s")

            latencies: list[float] = []
            warm_up = 0.0
            for index, task_id in enumerate(single):
                data = writer.complete([task_id])
                t0 = _replace(job_status, data)
                arrived = receiver.wait_for_tasks([task_id], timeout=timeout + debounce)
                if arrived is None:
                    raise RuntimeError(f"no webhook for task {task_id} within {timeout + debounce:g} s")
                latency = arrived[task_id] - t0
                if index == 0:
                    warm_up = latency
                else:
                    latencies.append(latency)
                if index % 10 == 0 or index == len(single) - 1:
                    _progress(
                        f"  change {index}/{changes}: {latency * 1000:.1f} ms"
                        + (" (warm-up, not counted)" if index == 0 else "")
                    )
                # A short, uneven pause, so the changes never fall into step with a timer in the daemon.
                time.sleep(rng.uniform(0.01, 0.05))

            bulk_first = bulk_all = None
            received = 0
            if bulk_ids:
                data = writer.complete(bulk_ids)
                count_before = len(receiver.arrivals)
                t0 = _replace(job_status, data)
                arrived = receiver.wait_for_tasks(bulk_ids, timeout=max(timeout, 60.0))
                if arrived is None:
                    received = len(receiver.arrivals) - count_before
                    _progress(f"  bulk: only {received} of {len(bulk_ids)} webhooks arrived in time")
                    _progress(f"--- daemon log (tail) ---\n{daemon.log_tail()}")
                else:
                    received = len(arrived)
                    bulk_first = min(arrived.values()) - t0
                    bulk_all = max(arrived.values()) - t0
                    _progress(f"  bulk: {received} webhooks in {bulk_all:.2f} s")
            exit_status = daemon.stop()
            if exit_status != 0:
                _progress(f"daemon exit status {exit_status}\n--- daemon log (tail) ---\n{daemon.log_tail()}")
            arrivals = receiver.arrivals
            keys = [(arrival.type, arrival.task_id) for arrival in arrivals]
            return Result(
                debounce=debounce,
                latencies=tuple(latencies),
                warm_up=warm_up,
                bulk=len(bulk_ids),
                bulk_first=bulk_first,
                bulk_all=bulk_all,
                bulk_received=received,
                reload_bytes=len(data),
                export_bytes=export.stat().st_size,
                tasks=tasks,
                jobs=tasks * jobs_per_task,
                exit_status=exit_status,
                duplicates=len(keys) - len(set(keys)),
            )
        except BaseException as error:
            if daemon is not None:
                daemon.stop()
                if isinstance(error, RuntimeError):
                    raise RuntimeError(f"{error}\n--- daemon log (tail) ---\n{daemon.log_tail()}") from error
            raise
        finally:
            if daemon is not None:
                daemon.stop()
            notify.close()
            receiver.stop()


# --- the table


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def format_table(result: Result) -> str:
    """The Markdown table: what was measured, the target, whether it is met."""
    over = [latency - result.debounce for latency in result.latencies]
    ms = 1000.0
    p50, p95, p99 = (percentile(over, q) for q in (0.5, 0.95, 0.99))
    lines = [
        "| measurement | value | target | met |",
        "| --- | ---: | --- | --- |",
        f"| webhook latency − debounce, p50 ({len(over)} changes) | {p50 * ms:.1f} ms"
        f" | ≤ {P50_TARGET_MS:g} ms | {_met(p50 * ms <= P50_TARGET_MS)} |",
        f"| webhook latency − debounce, p95 | {p95 * ms:.1f} ms | — | — |",
        f"| webhook latency − debounce, p99 | {p99 * ms:.1f} ms"
        f" | ≤ {P99_TARGET_MS:g} ms | {_met(p99 * ms <= P99_TARGET_MS)} |",
        f"| webhook latency − debounce, max | {max(over) * ms:.1f} ms | — | — |",
        f"| webhook latency − debounce, mean ± sd | {statistics.mean(over) * ms:.1f}"
        f" ± {statistics.pstdev(over) * ms:.1f} ms | — | — |",
        f"| warm-up change (new connection; not counted) − debounce |"
        f" {(result.warm_up - result.debounce) * ms:.1f} ms | — | — |",
    ]
    if result.bulk:
        if result.bulk_all is None or result.bulk_first is None:
            lines.append(
                f"| bulk: {result.bulk:,} completions in one rename, all webhooks received"
                f" | only {result.bulk_received:,} arrived | ≤ {BULK_TARGET_S:g} s | **no** |"
            )
        else:
            rate = result.bulk / max(result.bulk_all - result.bulk_first, 1e-9)
            met = _met(result.bulk_all <= BULK_TARGET_S)
            lines += [
                f"| bulk: {result.bulk:,} completions in one rename, all webhooks received"
                f" | {result.bulk_all:.2f} s | ≤ {BULK_TARGET_S:g} s | {met} |",
                f"| bulk: first webhook received | {result.bulk_first * ms:.0f} ms | — | — |",
                f"| bulk: delivery rate after the first | {rate:,.0f} webhooks/s | — | — |",
            ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_latency", description=__doc__.strip().split("\n")[0]
    )
    parser.add_argument("--changes", type=int, default=60, help="single-task changes timed (after a warm-up)")
    parser.add_argument("--debounce", type=float, default=0.1, help="the watch's debounce, seconds")
    parser.add_argument("--bulk", type=int, default=1000, help="tasks completed by one rewrite (0: skip)")
    parser.add_argument("--tasks", type=int, default=0, help="export size (min 1 + changes + bulk)")
    parser.add_argument("--jobs-per-task", type=int, default=5)
    parser.add_argument("--shapes-per-image", type=int, default=2)
    parser.add_argument("--jobs-shape", choices=("flat", "rest"), default="flat", help="job-status format")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one webhook")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--quick", action="store_true", help="10 changes, bulk 100 (CI smoke, under 20 s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.changes, args.bulk = 10, 100
    if args.changes < 1 or args.bulk < 0 or args.debounce < 0 or args.jobs_per_task < 1:
        parser.error("--changes and --jobs-per-task must be at least 1; --bulk and --debounce not negative")
    result = run(
        changes=args.changes,
        debounce=args.debounce,
        bulk=args.bulk,
        jobs_per_task=args.jobs_per_task,
        shapes_per_image=args.shapes_per_image,
        shape=args.jobs_shape,
        tasks=args.tasks,
        cache_dir=args.cache_dir,
        seed=args.seed,
        timeout=args.timeout,
    )
    print(
        f"## End-to-end latency: {result.tasks:,} tasks, {result.jobs:,} jobs,"
        f" debounce {args.debounce:g} s\n\n"
        f"Export {result.export_bytes / 1e6:.1f} MB, job-status file ({args.jobs_shape})"
        f" {result.reload_bytes / 1e6:.2f} MB; webhook with a signing secret to 127.0.0.1."
        f" Python {platform.python_version()}, {os.cpu_count()} CPUs."
        f" Daemon exit status after SIGTERM: {result.exit_status}."
        + (f" Duplicate deliveries: {result.duplicates}." if result.duplicates else "")
        + "\n"
    )
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
