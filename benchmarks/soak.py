"""A bounded soak of the daemon: steady state changes for a while, its memory and descriptors sampled.

The real daemon (``python -m cvat_watch run``) watches a generated export and posts to a webhook
receiver on 127.0.0.1; a writer flips one task's jobs between completed and in progress at a
steady rate (every tenth rewrite in place, the rest atomic). Every few seconds the daemon's
resident memory (``VmRSS`` of ``/proc/<pid>/status``) and open descriptors (``/proc/<pid>/fd``)
are sampled. At the end it prints the samples as a Markdown table, the slope of each over the
run and over its second half (after warm-up), and whether every committed event reached the
receiver; then it stops the daemon and the receiver and removes its files.

    python -m benchmarks.soak                 # about 3 minutes
    python -m benchmarks.soak --seconds 30 --rate 5
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cvat_watch.testing.process import (
    DaemonRig,
    GeneratedExport,
    StateDatabase,
    Workspace,
    open_fds,
    rss_kib,
    wait_until,
    write_daemon_config,
)

from benchmarks.reliability import STATE_DB, Receipts, retry_delays

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["main", "slope"]


def slope(points: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of ``(x, y)`` points (0 for fewer than two distinct x)."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to run (default 180)")
    parser.add_argument("--rate", type=float, default=2.0, help="state changes per second (default 2)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--tasks", type=int, default=50, help="tasks in the export (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="cvw-soak-") as folder, DaemonRig(Path(folder)) as rig:
        root = Path(folder)
        export = GeneratedExport(root / "export", tasks=args.tasks, jobs_per_task=2)
        receiver = rig.receiver()
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("soak", debounce=0.1, max_wait=1.0, recheck_interval=5.0)],
            handlers=[Workspace.webhook(receiver.url(), retry_delays=retry_delays(0.5, 20))],
        )
        db = StateDatabase(root / STATE_DB)
        daemon = rig.start(config)
        pid = daemon.process.pid
        began = time.monotonic()
        samples: list[tuple[float, int, int, int, int]] = []
        next_write = next_sample = began
        writes = 0
        while (now := time.monotonic()) < began + args.seconds:
            if daemon.process.poll() is not None:
                print(f"the daemon exited with {daemon.process.returncode}:\n{daemon.log}", file=sys.stderr)
                return 1
            if now >= next_sample:
                samples.append(
                    (
                        now - began,
                        rss_kib(pid),
                        open_fds(pid),
                        len(db.event_ids()),
                        len(Receipts(tuple(receiver.requests)).ids),
                    )
                )
                next_sample += args.sample
            if now >= next_write:
                writes += 1
                flipped = export.completed ^ {rng.choice(export.task_ids)}
                export.write_jobs(flipped, atomic=writes % 10 != 0, chunk=256)
                next_write += 1.0 / args.rate
            time.sleep(max(0.0, min(next_write, next_sample) - time.monotonic()))
        settled = wait_until(
            lambda: db.unsettled() == 0 and db.event_ids() <= Receipts(tuple(receiver.requests)).ids,
            timeout=60,
            what="the outbox to drain",
        )
        samples.append(
            (
                time.monotonic() - began,
                rss_kib(pid),
                open_fds(pid),
                len(db.event_ids()),
                len(Receipts(tuple(receiver.requests)).ids),
            )
        )
        exit_code = daemon.stop()
        receipts = Receipts(tuple(receiver.requests))
        committed = db.event_ids()

    print(
        f"soak: {args.seconds:.0f} s, {writes} rewrites ({args.rate:g}/s), {args.tasks} tasks,"
        f" sample every {args.sample:g} s\n"
    )
    print("| t (s) | RSS (MiB) | open fds | events committed | events received |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for t, rss, fds, events, received in samples:
        print(f"| {t:.0f} | {rss / 1024:.1f} | {fds} | {events} | {received} |")
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    per_minute = 60.0
    print()
    print(
        f"RSS slope: {slope([(s[0], s[1]) for s in samples]) * per_minute:+.1f} KiB/min over the run,"
        f" {slope([(s[0], s[1]) for s in half]) * per_minute:+.1f} KiB/min over the second half"
    )
    print(
        f"open fds slope: {slope([(s[0], s[2]) for s in samples]) * per_minute:+.2f}/min over the run,"
        f" {slope([(s[0], s[2]) for s in half]) * per_minute:+.2f}/min over the second half"
    )
    lost = committed - receipts.ids
    print(
        f"events: {len(committed)} committed, {len(receipts.ids & committed)} delivered, {len(lost)} lost,"
        f" {receipts.duplicated} duplicated; outbox drained: {bool(settled)}; daemon exit code {exit_code}"
    )
    return 0 if not lost and exit_code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
