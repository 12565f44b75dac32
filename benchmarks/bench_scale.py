"""The daemon at 100,000 tasks and 500,000 jobs: start, memory, a one-job change, SIGHUP.

``python -m benchmarks.bench_scale [--tasks 100000] [--jobs-per-task 5] [--changes 5] [--quick]``

A project export (one image per job, no shapes) and next-cvat's flat job-status list are generated
once into a cache directory. Then:

1. **the real daemon** (``python -m cvat_watch run`` in a subprocess, one watch, a log handler,
   its own ``NOTIFY_SOCKET``): the time from the start of the process to ``READY=1`` with no state
   yet (first start) and with the baseline of that first start in the database (restart), its
   resident memory then (``VmRSS``) and at its peak (``VmHWM``), and the time from ``SIGHUP`` to the
   next ``READY=1``;
2. **one job changes** (in this process, a real ``WatchRunner`` and ``Store`` on a copy of that
   state): ``--changes`` times the job-status file is rewritten (atomically) with one job's state
   changed, and ``runner.reload()`` is timed up to the commit; the bytes the process handed to
   ``write()`` during it (``wchar`` of ``/proc/self/io``: SQLite's WAL frames) and the baseline rows
   SQLite changed (``total_changes``) are counted.

Prints a Markdown table against the targets of the performance issue; progress goes to stderr. Nothing
asserts a speed: the figures are for reading, and machines differ.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import attrs
from cvat_watch.config import WatchConfig
from cvat_watch.daemon.events import Event
from cvat_watch.daemon.reload import WatchRunner
from cvat_watch.daemon.store import Store
from cvat_watch.testing.generate import GENERATOR_VERSION, generate_export, generate_job_status
from cvat_watch.testing.process import DaemonProcess, NotifySocket, watch_table, write_daemon_config

__all__ = ["CACHE_DIR", "Figures", "ensure_files", "main"]

CACHE_DIR = Path("/tmp/cvat-watch-bench")
WATCH = "scale"
#: The issue's targets (performance round 2, target 3).
START_TARGET_S = 10.0
RSS_TARGET_MB = 400.0
CHANGE_TARGET_MS = 100.0
CHANGE_WRITE_TARGET_MB = 1.0
SIGHUP_TARGET_S = 5.0
_STATE = re.compile(rb'"state": "([^"\\]*)"')


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ensure_files(*, tasks: int, jobs_per_task: int, cache_dir: Path = CACHE_DIR) -> tuple[Path, Path]:
    """The export and its flat job-status list, generated on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = cache_dir / f"scale-t{tasks}-j{jobs_per_task}-seed0-v{GENERATOR_VERSION}"
    xml, jobs = stem.with_suffix(".xml"), stem.with_suffix(".flat.json")
    if not (xml.exists() and jobs.exists()):
        _progress(f"generating {xml.name} and {jobs.name} (once)")
        info = generate_export(
            xml,
            kind="project",
            images=tasks * jobs_per_task,
            tasks=tasks,
            jobs_per_task=jobs_per_task,
            shapes_per_image=0,
            seed=0,
        )
        generate_job_status(jobs, export=info, seed=0, shape="flat")
    return xml, jobs


@attrs.define
class Figures:
    first_start_s: float = 0.0
    restart_s: float = 0.0
    rss_mb: float = 0.0
    peak_rss_mb: float = 0.0
    sighup_s: float = 0.0
    change_s: list[float] = attrs.field(factory=list)
    change_written: list[int] = attrs.field(factory=list)
    change_rows: list[int] = attrs.field(factory=list)


def _status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} for process {pid}")


def _wchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def _ready_after(notify: NotifySocket, count: int, started: float, *, timeout: float) -> float:
    notify.wait_for("READY=1", count=count, timeout=timeout)
    return time.perf_counter() - started


def _daemon_rounds(folder: Path, config: Path, figures: Figures, *, timeout: float) -> None:
    env = {"NOTIFY_SOCKET": str(folder / "notify.sock")}
    for round_name in ("first start", "restart"):
        with NotifySocket(folder / "notify.sock") as notify:
            started = time.perf_counter()
            with DaemonProcess(config, env=env, args=["--log-level", "warning"]) as daemon:
                seconds = _ready_after(notify, 1, started, timeout=timeout)
                pid = daemon.process.pid
                _progress(f"  {round_name}: READY=1 after {seconds:.2f} s")
                if round_name == "first start":
                    figures.first_start_s = seconds
                else:
                    figures.restart_s = seconds
                    figures.rss_mb = _status_mb(pid, "VmRSS")
                    started = time.perf_counter()
                    daemon.signal(signal.SIGHUP)
                    figures.sighup_s = _ready_after(notify, 2, started, timeout=timeout)
                    _progress(f"  SIGHUP: READY=1 again after {figures.sighup_s:.2f} s")
                    figures.peak_rss_mb = _status_mb(pid, "VmHWM")
                if daemon.stop(timeout=60) != 0:
                    raise RuntimeError(f"the daemon failed:\n{daemon.log[-2000:]}")
        (folder / "notify.sock").unlink()


def _no_targets(_event: Event) -> list[str]:
    return ["log"]


def _change_rounds(folder: Path, jobs: Path, figures: Figures, *, changes: int) -> None:
    """One job's state flipped per round; the runner's reload timed to its commit."""
    shutil.copytree(folder / "state", folder / "state-copy")
    config = WatchConfig(name=WATCH, annotations=folder / "annotations.xml", job_status=jobs)
    with Store.open(folder / "state-copy" / "cvat-watch.db") as store:
        runner = WatchRunner(config=config, store=store, targets=_no_targets)
        started = time.perf_counter()
        if runner.reload(force=True).status != "committed":
            raise RuntimeError("the runner's first load failed")
        _progress(f"  in-process restart: {time.perf_counter() - started:.2f} s")
        data = jobs.read_bytes()
        matches = list(_STATE.finditer(data))
        for round_number in range(changes):
            match = matches[(round_number * 7919) % len(matches)]
            new = b"new" if match.group(1) == b"completed" else b"completed"
            data = data[: match.start(1)] + new + data[match.end(1) :]
            matches = list(_STATE.finditer(data)) if len(new) != len(match.group(1)) else matches
            temporary = jobs.with_suffix(".tmp")
            temporary.write_bytes(data)
            os.replace(temporary, jobs)
            changed_before = store._connection.total_changes
            written_before = _wchar()
            started = time.perf_counter()
            outcome = runner.reload()
            seconds = time.perf_counter() - started
            written = _wchar() - written_before
            if outcome.status != "committed":
                raise RuntimeError(f"a one-job change was not committed: {outcome!r}")
            figures.change_s.append(seconds)
            figures.change_written.append(written)
            figures.change_rows.append(store._connection.total_changes - changed_before)
            _progress(
                f"  change {round_number + 1}: {seconds * 1000:.0f} ms, {written / 1e3:.0f} kB written,"
                f" {figures.change_rows[-1]} rows, {len(outcome.events)} events"
            )


def run(*, tasks: int, jobs_per_task: int, changes: int, cache_dir: Path, timeout: float) -> str:
    xml, jobs_file = ensure_files(tasks=tasks, jobs_per_task=jobs_per_task, cache_dir=cache_dir)
    figures = Figures()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as name:
        folder = Path(name)
        annotations, jobs = folder / "annotations.xml", folder / "job_status.json"
        if xml.stat().st_dev == folder.stat().st_dev:
            os.link(xml, annotations)  # never written to: the cache's copy serves
        else:
            shutil.copy(xml, annotations)
        shutil.copy(jobs_file, jobs)  # rewritten by the rounds
        config = write_daemon_config(
            folder / "cvat-watch.toml",
            watches=[
                watch_table(WATCH, annotations, jobs, debounce=0.1, max_wait=1.0, recheck_interval=3600)
            ],
            handlers=['[[handler]]\ntype = "log"\nname = "log"'],
            state_dir=folder / "state",
        )
        _progress("the real daemon")
        _daemon_rounds(folder, config, figures, timeout=timeout)
        _progress("one-job changes")
        _change_rounds(folder, jobs, figures, changes=changes)
        sizes = (xml.stat().st_size / 1e6, jobs.stat().st_size / 1e6)
    return _table(figures, tasks=tasks, jobs=tasks * jobs_per_task, sizes=sizes)


def _verdict(value: float, target: float) -> str:
    return "met" if value <= target else "not met"


def _table(figures: Figures, *, tasks: int, jobs: int, sizes: tuple[float, float]) -> str:
    change_ms = statistics.median(figures.change_s) * 1000
    written_mb = max(figures.change_written) / 1e6
    rows = [
        ("start, first (no state yet)", f"{figures.first_start_s:.2f} s", "—", ""),
        (
            "start, with the baseline in the database",
            f"{figures.restart_s:.2f} s",
            f"≤ {START_TARGET_S:g} s",
            _verdict(figures.restart_s, START_TARGET_S),
        ),
        (
            "resident memory after the start (VmRSS)",
            f"{figures.rss_mb:.0f} MB",
            f"≤ {RSS_TARGET_MB:g} MB",
            _verdict(figures.rss_mb, RSS_TARGET_MB),
        ),
        (
            "peak resident memory, through SIGHUP (VmHWM)",
            f"{figures.peak_rss_mb:.0f} MB",
            f"≤ {RSS_TARGET_MB:g} MB",
            _verdict(figures.peak_rss_mb, RSS_TARGET_MB),
        ),
        (
            f"one-job change → committed (median of {len(figures.change_s)})",
            f"{change_ms:.0f} ms",
            f"≤ {CHANGE_TARGET_MS:g} ms",
            _verdict(change_ms, CHANGE_TARGET_MS),
        ),
        (
            "bytes written by that commit (largest of the rounds)",
            f"{written_mb * 1000:.0f} kB",
            f"≤ {CHANGE_WRITE_TARGET_MB:g} MB",
            _verdict(written_mb, CHANGE_WRITE_TARGET_MB),
        ),
        ("rows changed by that commit (SQLite total_changes)", f"{max(figures.change_rows)}", "—", ""),
        (
            "SIGHUP → READY=1",
            f"{figures.sighup_s:.2f} s",
            f"≤ {SIGHUP_TARGET_S:g} s",
            _verdict(figures.sighup_s, SIGHUP_TARGET_S),
        ),
    ]
    lines = [
        f"## Scale: {tasks:,} tasks, {jobs:,} jobs (export {sizes[0]:.0f} MB, flat job status {sizes[1]:.0f} MB)",
        "",
        "| what | measured | target | |",
        "| --- | ---: | ---: | --- |",
        *(f"| {what} | {value} | {target} | {verdict} |" for what, value, target, verdict in rows),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--jobs-per-task", type=int, default=5)
    parser.add_argument("--changes", type=int, default=5, help="one-job changes timed")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for READY=1")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR)
    parser.add_argument("--quick", action="store_true", help="1,000 tasks, 2 changes (CI smoke)")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.changes = 1000, 2
    print(
        run(
            tasks=args.tasks,
            jobs_per_task=args.jobs_per_task,
            changes=args.changes,
            cache_dir=args.cache_dir,
            timeout=args.timeout,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
