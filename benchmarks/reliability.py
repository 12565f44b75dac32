"""The daemon's reliability promises, measured end to end.

Every scenario runs the real daemon (``python -m cvat_watch run``) against real files and a real
webhook receiver on 127.0.0.1, and counts what the receiver got against what it should have got,
computed here from the sequence of job-status files written (:func:`expected_events`, not the
daemon's own diff). The numbers are those of the issue that asked for them:

1. :func:`receiver_down`: connection refused, then a receiver on the same port: every event once,
   in per-task order, with the same ``webhook-id`` on every attempt.
3. :func:`gone_and_bad_request`: a 410 stops a handler for good; a 400 is a dead letter after one
   attempt.
4. :func:`sigkill_loop`: the daemon SIGKILLed at random points of the pipeline, restarted, again
   and again.
6. :func:`churn`: the export rewritten hundreds of times in quick succession, atomically and in
   place. Which intermediate states the daemon sees depends on timing, so here the expected
   events are the ones it committed, checked for a consistent story per task instead.
7. :func:`many_exports` and :func:`big_export`: one daemon watching many exports; one export with
   thousands of tasks where many complete in one rewrite while another watch's change must
   still get through.

8. integrity (issue 11): :func:`two_instances` (a second ``run`` and a ``once`` beside a running
   daemon), :func:`two_configs` (two configurations on one state folder), :func:`reload_in_flight`
   (SIGHUPs while a POST is held open), :func:`state_lost` (the database deleted under the daemon,
   then a new state), :func:`clock_step` (the wall clock stepped an hour during a retry). Their
   table adds *cross-deliveries* (events received by another configuration's handler), *reused
   ids* (an id received again for another event) and *invented* (ids no written state implies).

11. :func:`partial_listing`: REST job listings with pages missing between whole ones: refused,
    nothing invented.
12. :func:`background_child`: a command that exits 0 but leaves a background process holding its
    stdout: delivered once, not retried and dead-lettered.
13. :func:`trickling_receiver`: a receiver that answers a byte at a time: the attempt ends at the
    handler's timeout and is retried; another handler is not held up.

(2, slow and failing receivers, and 5, a full disk or a read-only state folder, are tests only.)

``tests/daemon/test_reliability.py`` runs each with small sizes and asserts on the measurements;
``python -m benchmarks.reliability`` runs them with larger ones and prints the Markdown table
of the README's "Reliability" section (``--help`` for the sizes).

Columns: *events expected* is the number of distinct events the written files imply; *delivered*
how many of them the receiver got (2xx); *lost* expected but never received; *duplicated* extra
2xx receipts of an id already received (a re-send after a crash: same id, which receivers drop).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
from cvat_watch.daemon.events import TASK_COMPLETED, TASK_REOPENED, event_id
from cvat_watch.testing.ids import documented_event_id
from cvat_watch.testing.process import (
    DaemonRig,
    GeneratedExport,
    StateDatabase,
    Workspace,
    rss_kib,
    run_cli,
    wait_until,
    write_daemon_config,
    write_file,
)
from cvat_watch.testing.receiver import Recorded, Reply, free_port

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "IntegrityTally",
    "Receipts",
    "Tally",
    "background_child",
    "big_export",
    "churn",
    "clock_step",
    "expected_events",
    "gone_and_bad_request",
    "main",
    "many_exports",
    "partial_listing",
    "receiver_down",
    "reload_in_flight",
    "retry_delays",
    "sigkill_loop",
    "state_lost",
    "stop_during_reload",
    "trickling_receiver",
    "two_configs",
    "two_instances",
]

STATE_DB = Path("state") / "cvat-watch.db"


def retry_delays(delay: float, count: int) -> str:
    """A ``retry_delays`` TOML value: ``count`` times ``delay`` seconds."""
    return "[" + ", ".join([str(delay)] * count) + "]"


# -- what should have happened, and what did -------------------------------------------------------


def expected_events(
    watch: str, states: Sequence[frozenset[str]], *, epoch: str
) -> list[tuple[str, str, str, int]]:
    """The events a sequence of observed completed-task sets implies: (id, type, task, generation).

    ``states[0]`` is the silent baseline of the first start. A task entering the completed set is
    ``task.completed`` with the next generation of that task; leaving it is ``task.reopened`` with
    the current one (the rule the README states for ids). ``epoch`` is the state database's
    (:meth:`StateDatabase.epoch`), part of every id.
    """
    generation: Counter[str] = Counter()
    events = []
    for before, after in itertools.pairwise(states):
        for task in sorted(before ^ after, key=int):
            if task in after:
                generation[task] += 1
                kind = TASK_COMPLETED
            else:
                kind = TASK_REOPENED
            events.append(
                (
                    documented_event_id(watch, task, kind, generation[task], epoch=epoch),
                    kind,
                    task,
                    generation[task],
                )
            )
    return events


@attrs.frozen
class Receipts:
    """What a receiver got, by ``webhook-id``: 2xx receipts, first-receipt order, duplicates."""

    requests: tuple[Recorded, ...]

    @property
    def accepted(self) -> list[Recorded]:
        return [request for request in self.requests if 200 <= request.status < 300]

    @property
    def ids(self) -> set[str]:
        return {request.headers["webhook-id"] for request in self.accepted}

    @property
    def duplicated(self) -> int:
        """2xx receipts of an id that had already been received with a 2xx."""
        return len(self.accepted) - len(self.ids)

    def first_receipts(self) -> list[dict[str, Any]]:
        """The payload of each id's first 2xx receipt, in arrival order."""
        seen: set[str] = set()
        payloads = []
        for request in self.accepted:
            if request.headers["webhook-id"] not in seen:
                seen.add(request.headers["webhook-id"])
                payloads.append(json.loads(request.body))
        return payloads

    def per_task(self, watch: str | None = None) -> dict[str, list[str]]:
        """Event ids per task in first-receipt order (of ``watch`` only, when given)."""
        result: dict[str, list[str]] = {}
        for payload in self.first_receipts():
            if watch is None or payload["watch"] == watch:
                result.setdefault(payload["task"]["id"], []).append(payload["id"])
        return result


@attrs.frozen
class Tally:
    """One row of the reliability table."""

    scenario: str
    runs: int
    expected: int
    delivered: int
    lost: int
    duplicated: int
    notes: str

    @classmethod
    def of(cls, scenario: str, expected: Iterable[str], receipts: Receipts, notes: str) -> Tally:
        wanted = set(expected)
        got = receipts.ids & wanted
        return cls(scenario, 1, len(wanted), len(got), len(wanted - got), receipts.duplicated, notes)

    @staticmethod
    def combine(tallies: Sequence[Tally], notes: str) -> Tally:
        return Tally(
            tallies[0].scenario,
            sum(t.runs for t in tallies),
            sum(t.expected for t in tallies),
            sum(t.delivered for t in tallies),
            sum(t.lost for t in tallies),
            sum(t.duplicated for t in tallies),
            notes,
        )

    def row(self) -> str:
        return (
            f"| {self.scenario} | {self.runs} | {self.expected} | {self.delivered} | {self.lost} |"
            f" {self.duplicated} | {self.notes} |"
        )


def _at_least(count: int, measure: Callable[[], int]) -> Callable[[], bool]:
    """A condition for ``wait_until``: ``measure()`` has reached ``count``."""
    return lambda: measure() >= count


def _quiescent(db: StateDatabase, receipts: Callable[[], Receipts], minimum: int = 0) -> bool:
    """Nothing pending in the outbox, and the receiver has every event the store holds."""
    ids = db.event_ids()
    return len(ids) >= minimum and db.unsettled() == 0 and ids <= receipts().ids


# -- 1. receiver down, then back -------------------------------------------------------------------

#: Completed sets written one after another while the receiver is down: tasks 11 and 12 complete,
#: reopen and complete again, so that per-task order is visible.
_DOWN_STATES = (
    frozenset({"11"}),
    frozenset({"11", "12"}),
    frozenset({"12"}),
    frozenset({"11", "12", "13"}),
    frozenset({"11", "13"}),
)


@attrs.frozen
class RecoveryRun:
    """Scenario 1: what the store holds, what the receiver got, how often the first row was tried."""

    expected: tuple[tuple[str, str, str, int], ...]
    store_events: tuple[tuple[str, str, str, str], ...]
    receipts: Receipts
    deliveries: tuple[dict[str, Any], ...]
    attempts_while_down: int
    down_seconds: float

    def tally(self) -> Tally:
        return Tally.of(
            "receiver down (connection refused) then back",
            [e[0] for e in self.expected],
            self.receipts,
            f"{self.attempts_while_down} refused attempts on the first event,"
            f" down {self.down_seconds:.1f} s; first answer after recovery 503",
        )


def receiver_down(root: Path, *, refused: int = 5) -> RecoveryRun:
    """Events committed while nothing listens on the webhook's port, then (after ``refused``
    refused attempts on the oldest row) a receiver on that port whose first answer is a 503."""
    export = GeneratedExport(root / "export", tasks=4)
    port = free_port()
    config = write_daemon_config(
        root / "cvat-watch.toml",
        watches=[export.watch("w")],
        handlers=[Workspace.webhook(f"http://127.0.0.1:{port}/hook", retry_delays=retry_delays(0.2, 40))],
    )
    db = StateDatabase(root / STATE_DB)
    states: list[frozenset[str]] = [frozenset()]
    with DaemonRig(root) as rig:
        daemon = rig.start(config)
        started = time.monotonic()
        for state in _DOWN_STATES:
            export.write_jobs(state)
            states.append(state)
            wanted = len(expected_events("w", states, epoch=db.epoch()))
            wait_until(_at_least(wanted, lambda: len(db.events())), what=f"{wanted} events committed")
        # Down for a while: several refused attempts (0.2 s apart) on the oldest row.
        first = wait_until(
            lambda: [r for r in db.deliveries() if r["attempts"] >= refused],
            what=f"{refused} refused attempts",
        )[0]
        attempts_while_down = max(row["attempts"] for row in db.deliveries() if row["id"] == first["id"])
        receiver = rig.receiver(port=port)
        down_seconds = time.monotonic() - started
        receiver.script(Reply(503))
        wanted = len(expected_events("w", states, epoch=db.epoch()))
        wait_until(
            lambda: _quiescent(db, lambda: Receipts(tuple(receiver.requests)), wanted),
            timeout=30,
            what="every event delivered after recovery",
        )
        assert daemon.stop() == 0, daemon.log
        return RecoveryRun(
            expected=tuple(expected_events("w", states, epoch=db.epoch())),
            store_events=tuple(db.events()),
            receipts=Receipts(tuple(receiver.requests)),
            deliveries=tuple(db.deliveries()),
            attempts_while_down=attempts_while_down,
            down_seconds=down_seconds,
        )


# -- 3. 410 Gone and 400 Bad Request ---------------------------------------------------------------


@attrs.frozen
class GoneRun:
    """Scenario 3: the two receivers' requests, the delivery rows and the `deliveries` listing."""

    expected: tuple[tuple[str, str, str, int], ...]
    gone: Receipts
    bad: Receipts
    deliveries: tuple[dict[str, Any], ...]
    listing: str
    listing_failed: str

    def tally(self) -> Tally:
        # What should get through: every event but the first to the 400 handler (its first is a
        # dead letter by design), nothing to the 410 handler.
        deliverable = [e[0] for e in self.expected[1:]]
        gone_requests = len(self.gone.requests)
        bad_first = sum(r.headers["webhook-id"] == self.expected[0][0] for r in self.bad.requests)
        return Tally.of(
            "410 Gone / 400 Bad Request",
            deliverable,
            self.bad,
            f"410 handler: {gone_requests} request, then nothing queued (`deliveries`: gone);"
            f" 400: dead letter after {bad_first} attempt",
        )


def gone_and_bad_request(root: Path) -> GoneRun:
    """One handler answers 410, another 400 then 200; later events follow, the last after a restart."""
    export = GeneratedExport(root / "export", tasks=3)
    with DaemonRig(root) as rig:
        gone = rig.receiver(default=Reply(410))
        bad = rig.receiver()
        bad.script(Reply(400))
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("w")],
            handlers=[
                Workspace.webhook(gone.url(), name="gone", retry_delays=retry_delays(0.2, 10)),
                Workspace.webhook(bad.url(), name="bad", retry_delays=retry_delays(0.2, 10)),
            ],
        )
        db = StateDatabase(root / STATE_DB)
        daemon = rig.start(config)
        states = [frozenset[str]()]
        for step, state in enumerate((frozenset({"11"}), frozenset({"11", "12"}), frozenset({"12"}))):
            if step == 2:
                # "Gone" is kept in the state database: a restart does not bring the handler back.
                assert daemon.stop() == 0, daemon.log
                daemon = rig.start(config)
            export.write_jobs(state)
            states.append(state)
            wanted = len(expected_events("w", states, epoch=db.epoch()))
            # Each step waits until the event is settled for both handlers (delivered, dead or
            # gone, or never queued for the gone one), so the order of outcomes is fixed.
            wait_until(
                _at_least(wanted, lambda: len(db.events()) if db.unsettled() == 0 else -1),
                what=f"event {wanted} settled",
            )
        expected = expected_events("w", states, epoch=db.epoch())
        wait_until(
            lambda: {e[0] for e in expected[1:]} <= Receipts(tuple(bad.requests)).ids,
            what="the later events at the 400 handler",
        )
        listing = run_cli("deliveries", "--config", str(config))
        listing_failed = run_cli("deliveries", "--failed", "--config", str(config))
        assert daemon.stop() == 0, daemon.log
        return GoneRun(
            expected=tuple(expected),
            gone=Receipts(tuple(gone.requests)),
            bad=Receipts(tuple(bad.requests)),
            deliveries=tuple(db.deliveries()),
            listing=listing.stdout + listing.stderr,
            listing_failed=listing_failed.stdout + listing_failed.stderr,
        )


# -- 4. SIGKILL at random points --------------------------------------------------------------------

KILL_POINTS = ("starting", "just-written", "random-delay", "mid-delivery", "idle")


@attrs.frozen
class KillRun:
    """Scenario 4: the states written, the events they imply, the store's and the receiver's view."""

    kills: int
    kill_points: dict[str, int]
    states: tuple[frozenset[str], ...]
    expected: tuple[tuple[str, str, str, int], ...]
    store_ids: frozenset[str]
    receipts: Receipts
    integrity: str
    exit_code: int
    seconds: float

    def tally(self) -> Tally:
        points = ", ".join(f"{point} {count}" for point, count in sorted(self.kill_points.items()))
        tally = Tally.of(
            "SIGKILL at random points",
            [e[0] for e in self.expected],
            self.receipts,
            f"{self.kills} kills ({points})",
        )
        return attrs.evolve(tally, runs=self.kills)


def sigkill_loop(root: Path, *, kills: int = 10, tasks: int = 6, seed: int = 0) -> KillRun:
    """Write job states, SIGKILL the daemon somewhere in its pipeline, restart, ``kills`` times.

    Each written state is left for the daemon to see before the next one is written (at the
    latest by the next start), so the events the run must produce follow from the sequence of
    states alone. A state is also written while the daemon is down when the previous one has
    been committed.
    """
    began = time.monotonic()
    rng = random.Random(seed)
    export = GeneratedExport(
        root / "export",
        tasks=tasks,
        jobs_per_task=2,
        completed=[t for t in map(str, range(11, 11 + tasks)) if rng.random() < 0.5],
    )
    db = StateDatabase(root / STATE_DB)
    states: list[frozenset[str]] = [export.completed]
    points: Counter[str] = Counter()

    def write_next() -> None:
        flipped = frozenset(rng.sample(export.task_ids, rng.randint(1, 3)))
        export.write_jobs(states[-1] ^ flipped)
        states.append(export.completed)

    def observed() -> bool:
        return db.baseline_completed("w") == states[-1]

    with DaemonRig(root) as rig:
        # A little time in flight widens the window for a kill between "sent" and "recorded".
        receiver = rig.receiver(default=Reply(delay=0.01))

        def received() -> Receipts:
            return Receipts(tuple(receiver.requests))

        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("w", debounce=0.05, max_wait=0.5, recheck_interval=1.0)],
            handlers=[Workspace.webhook(receiver.url(), retry_delays=retry_delays(0.2, 50))],
        )
        for _ in range(kills):
            point = rng.choice(KILL_POINTS)
            points[point] += 1
            if point == "starting":
                daemon = rig.start(config, ready=False)
                time.sleep(rng.uniform(0.0, 0.8))
            else:
                daemon = rig.start(config)
                for _ in range(rng.randint(0, 2)):
                    write_next()
                    wait_until(observed, what="the daemon to commit the state written")
                sent = len(receiver.requests)
                write_next()
                if point == "random-delay":
                    time.sleep(rng.uniform(0.0, 0.3))
                elif point == "mid-delivery":
                    wait_until(_at_least(sent + 1, lambda: len(receiver.requests)), what="a delivery")
                elif point == "idle":
                    wait_until(lambda: observed() and _quiescent(db, received), what="quiescence")
            daemon.kill()
            if rng.random() < 0.5 and observed():
                write_next()
        daemon = rig.start(config)
        wanted = len(expected_events("w", states, epoch=db.epoch()))
        wait_until(
            lambda: observed() and _quiescent(db, received, wanted),
            timeout=60,
            what="quiescence after the last start",
        )
        exit_code = daemon.stop()
        return KillRun(
            kills=kills,
            kill_points=dict(points),
            states=tuple(states),
            expected=tuple(expected_events("w", states, epoch=db.epoch())),
            store_ids=frozenset(db.event_ids()),
            receipts=Receipts(tuple(receiver.requests)),
            integrity=db.integrity(),
            exit_code=exit_code,
            seconds=time.monotonic() - began,
        )


# -- 6. churn -----------------------------------------------------------------------------------------


@attrs.frozen
class ChurnRun:
    """Scenario 6: the states, what arrived per task, memory before and after."""

    rewrites: int
    initial: frozenset[str]
    final: frozenset[str]
    untouched: frozenset[str]
    baseline: frozenset[str] | None
    receipts: Receipts
    store_events: tuple[tuple[str, str, str, str], ...]
    leftover_events: list[Any]
    rss_before_kib: int
    rss_after_kib: int
    exit_code: int
    log: str
    seconds: float

    def sequences(self) -> dict[str, list[str]]:
        """Event types per task, in the order the receiver first got them."""
        types = {payload["id"]: payload["type"] for payload in self.receipts.first_receipts()}
        return {task: [types[i] for i in ids] for task, ids in self.receipts.per_task("w").items()}

    def inconsistent_tasks(self) -> list[str]:
        """Tasks whose events do not alternate from the initial state to the final one."""
        bad = []
        sequences = self.sequences()
        for task in sorted(self.initial | self.final | set(sequences) | self.untouched, key=int):
            sequence = sequences.get(task, [])
            completed = task in self.initial
            for kind in sequence:
                if kind != (TASK_REOPENED if completed else TASK_COMPLETED):
                    bad.append(task)
                    break
                completed = not completed
            else:
                if completed != (task in self.final) or (task in self.untouched and sequence):
                    bad.append(task)
        return bad

    def tally(self) -> Tally:
        # Which intermediate states the daemon saw depends on timing; what it must deliver is
        # every event it committed, and a consistent story per task (checked separately).
        ids = [event[0] for event in self.store_events]
        tally = Tally.of(
            "churn",
            "clock_step",
            ids,
            self.receipts,
            f"{self.rewrites} rewrites (XML and job status, atomic and in place);"
            f" {len(self.inconsistent_tasks())} inconsistent tasks;"
            f" RSS {self.rss_before_kib / 1024:.0f} → {self.rss_after_kib / 1024:.0f} MiB",
        )
        return tally


def churn(root: Path, *, rewrites: int = 300, tasks: int = 12, seed: int = 0) -> ChurnRun:
    """Rewrite the export's XML and job status ``rewrites`` times in quick succession, then check."""
    began = time.monotonic()
    rng = random.Random(seed)
    export = GeneratedExport(
        root / "export",
        tasks=tasks,
        jobs_per_task=2,
        shapes_per_image=2,
        completed=[str(t) for t in range(11, 11 + tasks, 2)],
    )
    initial = export.completed
    variants = [export.annotations.read_bytes()] + [export.xml_variant(s) for s in (1, 2)]
    churned = export.task_ids[: tasks * 2 // 3]
    untouched = frozenset(export.task_ids) - set(churned)
    db = StateDatabase(root / STATE_DB)
    with DaemonRig(root) as rig:
        receiver = rig.receiver()
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("w", debounce=0.05, max_wait=0.5, recheck_interval=1.0)],
            handlers=[Workspace.webhook(receiver.url(), retry_delays=retry_delays(0.2, 20))],
        )
        daemon = rig.start(config)
        rss_before = rss_kib(daemon.process.pid)
        current = initial
        for _ in range(rewrites):
            atomic = rng.random() < 0.5
            chunk = rng.choice((64, 512, 4096))
            if rng.random() < 0.3:
                write_file(export.annotations, rng.choice(variants), atomic=atomic, chunk=chunk)
            else:
                current = current ^ frozenset(rng.sample(churned, rng.randint(1, 3)))
                export.write_jobs(current, atomic=atomic, chunk=chunk)
            # Mostly back to back; now and then a pause longer than the debounce, so that the
            # daemon commits some of the intermediate states.
            time.sleep(rng.choice((0.0, 0.0, 0.0, 0.001, 0.01, 0.08)))
        final = export.completed
        # The last word, whole and atomic: the state the daemon must end in.
        write_file(export.annotations, variants[0], atomic=True)
        export.write_jobs(final)
        wait_until(
            lambda: (
                db.baseline_completed("w") == final
                and _quiescent(db, lambda: Receipts(tuple(receiver.requests)))
            ),
            timeout=30,
            what="the final state committed and delivered",
        )
        rss_after = rss_kib(daemon.process.pid)
        exit_code = daemon.stop()
        leftover = run_cli("once", "--dry-run", "--config", str(config))
        return ChurnRun(
            rewrites=rewrites,
            initial=initial,
            final=final,
            untouched=untouched,
            baseline=db.baseline_completed("w"),
            receipts=Receipts(tuple(receiver.requests)),
            store_events=tuple(db.events()),
            leftover_events=json.loads(leftover.stdout) if leftover.returncode == 0 else [leftover.stderr],
            rss_before_kib=rss_before,
            rss_after_kib=rss_after,
            exit_code=exit_code,
            log=daemon.log,
            seconds=time.monotonic() - began,
        )


# -- 7. scale ----------------------------------------------------------------------------------------


@attrs.frozen
class ManyRun:
    """Scenario 7a: one daemon, many watches, a change in each."""

    exports: int
    expected: tuple[str, ...]
    receipts: Receipts
    store_ids: frozenset[str]
    seconds_to_deliver: float
    rss_kib: int

    def tally(self) -> Tally:
        return Tally.of(
            f"{self.exports} exports, one daemon",
            self.expected,
            self.receipts,
            f"every watch changed at once; all delivered in {self.seconds_to_deliver:.1f} s;"
            f" RSS {self.rss_kib / 1024:.0f} MiB",
        )


def many_exports(root: Path, *, exports: int = 20, tasks: int = 4) -> ManyRun:
    """``exports`` watches in one daemon; two tasks complete in each, all at once."""
    watched = [GeneratedExport(root / f"export-{i:02d}", tasks=tasks, seed=i) for i in range(exports)]
    db = StateDatabase(root / STATE_DB)
    with DaemonRig(root) as rig:
        receiver = rig.receiver()
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch(f"w{i:02d}") for i, export in enumerate(watched)],
            handlers=[Workspace.webhook(receiver.url(), retry_delays=retry_delays(0.2, 20))],
        )
        daemon = rig.start(config)
        expected: list[str] = []
        began = time.monotonic()
        epoch = db.epoch()
        for i, export in enumerate(watched):
            state = frozenset(export.task_ids[:2])
            expected += [e[0] for e in expected_events(f"w{i:02d}", [frozenset(), state], epoch=epoch)]
            export.write_jobs(state)
        wait_until(
            lambda: set(expected) <= Receipts(tuple(receiver.requests)).ids,
            timeout=60,
            what="an event from every watch",
        )
        seconds = time.monotonic() - began
        wait_until(lambda: _quiescent(db, lambda: Receipts(tuple(receiver.requests))), what="quiescence")
        rss = rss_kib(daemon.process.pid)
        assert daemon.stop() == 0, daemon.log
        return ManyRun(
            exports,
            tuple(expected),
            Receipts(tuple(receiver.requests)),
            frozenset(db.event_ids()),
            seconds,
            rss,
        )


@attrs.frozen
class BigRun:
    """Scenario 7b: a burst of completions in a large export, and another watch's change meanwhile."""

    tasks: int
    jobs: int
    completing: int
    expected: tuple[str, ...]
    receipts: Receipts
    store_ids: frozenset[str]
    other_event: str
    other_latency: float
    burst_before_other: int
    burst_after_other: int
    burst_seconds: float
    reload_seconds: float
    reply_delay: float

    def tally(self) -> Tally:
        return Tally.of(
            f"{self.tasks:,} tasks / {self.jobs:,} jobs, {self.completing:,} complete at once",
            [*self.expected, self.other_event],
            self.receipts,
            f"first of the burst received {self.reload_seconds:.1f} s after the rewrite, all in"
            f" {self.burst_seconds:.1f} s (receiver: {self.reply_delay * 1000:.0f} ms a request);"
            f" another watch's event arrived {self.other_latency:.2f} s"
            f" after its write, with {self.burst_after_other} of the burst still to go",
        )


def big_export(
    root: Path, *, tasks: int = 1000, completing: int = 100, jobs_per_task: int = 5, reply_delay: float = 0.01
) -> BigRun:
    """``completing`` of ``tasks`` tasks complete in one rewrite; a small watch changes meanwhile.

    The receiver takes ``reply_delay`` seconds per request, as a real one does, so the burst takes
    a while to go out and the small watch's change lands in the middle of it.
    """
    big = GeneratedExport(root / "big", tasks=tasks, jobs_per_task=jobs_per_task, shapes_per_image=0)
    small = GeneratedExport(root / "small", tasks=2)
    db = StateDatabase(root / STATE_DB)
    with DaemonRig(root) as rig:
        receiver = rig.receiver(default=Reply(delay=reply_delay))
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[big.watch("big", max_wait=5.0, recheck_interval=30.0), small.watch("small")],
            handlers=[Workspace.webhook(receiver.url(), retry_delays=retry_delays(0.5, 20))],
        )
        daemon = rig.start(config, timeout=120)
        burst = frozenset(big.task_ids[:completing])
        expected = [e[0] for e in expected_events("big", [frozenset(), burst], epoch=db.epoch())]
        written = time.monotonic()
        big.write_jobs(burst)
        wait_until(lambda: receiver.requests, timeout=120, what="the first event of the burst")
        first = receiver.requests[0].at
        reload_seconds = first - written
        small.write_jobs({small.task_ids[0]})
        other_written = time.monotonic()
        (other,) = (
            e[0]
            for e in expected_events("small", [frozenset(), frozenset({small.task_ids[0]})], epoch=db.epoch())
        )
        arrived = wait_until(
            lambda: [r for r in receiver.requests if r.headers["webhook-id"] == other],
            timeout=120,
            what="the other watch's event",
        )[0]
        wait_until(
            lambda: set(expected) <= Receipts(tuple(receiver.requests)).ids,
            timeout=600,
            what="every event of the burst",
        )
        burst_seconds = max(r.at for r in receiver.requests) - first
        wait_until(lambda: _quiescent(db, lambda: Receipts(tuple(receiver.requests))), what="quiescence")
        burst_ids = set(expected)
        earlier = {r.headers["webhook-id"] for r in receiver.requests if r.at < arrived.at}
        before_other = len(earlier & burst_ids)
        assert daemon.stop() == 0, daemon.log
        return BigRun(
            tasks=tasks,
            jobs=tasks * jobs_per_task,
            completing=completing,
            expected=tuple(expected),
            receipts=Receipts(tuple(receiver.requests)),
            store_ids=frozenset(db.event_ids()),
            other_event=other,
            other_latency=arrived.at - other_written,
            burst_before_other=before_other,
            burst_after_other=len(expected) - before_other,
            burst_seconds=burst_seconds,
            reload_seconds=reload_seconds,
            reply_delay=reply_delay,
        )


# -- 8. integrity: one process per state, reloads in flight, lost states, clock steps ---------------


@attrs.frozen
class IntegrityTally:
    """One row of the integrity table: what went where, and what must never happen."""

    scenario: str
    runs: int
    expected: int
    delivered: int
    duplicated: int
    #: Receipts at a receiver of an event routed to another handler.
    cross: int
    #: Ids received again for a different event (after a state reset).
    reused: int
    #: Ids received that no written state implies.
    invented: int
    notes: str

    @staticmethod
    def combine(tallies: Sequence[IntegrityTally], notes: str) -> IntegrityTally:
        return IntegrityTally(
            tallies[0].scenario,
            sum(t.runs for t in tallies),
            *(sum(getattr(t, name) for t in tallies) for name in _INTEGRITY_COUNTS),
            notes=notes,
        )

    def row(self) -> str:
        counts = " | ".join(str(getattr(self, name)) for name in _INTEGRITY_COUNTS)
        return f"| {self.scenario} | {self.runs} | {counts} | {self.notes} |"


_INTEGRITY_COUNTS = ("expected", "delivered", "duplicated", "cross", "reused", "invented")


def _integrity_tally(
    scenario: str,
    expected: Iterable[str],
    receipts: Receipts,
    *,
    cross: int = 0,
    reused: int = 0,
    notes: str,
) -> IntegrityTally:
    wanted = set(expected)
    return IntegrityTally(
        scenario,
        1,
        len(wanted),
        len(receipts.ids & wanted),
        receipts.duplicated,
        cross,
        reused,
        len(receipts.ids - wanted),
        notes,
    )


@attrs.frozen
class TwoInstancesRun:
    """Scenario 8a: a second ``run`` and a ``once`` beside a running daemon."""

    refused: tuple[int, ...]
    named_holder: bool
    expected: tuple[str, ...]
    receipts: Receipts

    def tally(self) -> IntegrityTally:
        return _integrity_tally(
            "two instances on one state (second run, once)",
            self.expected,
            self.receipts,
            notes=f"second run and once exit {'/'.join(map(str, self.refused))}"
            f"{', naming the holder' if self.named_holder else ''}",
        )


def two_instances(root: Path, *, completions: int = 4) -> TwoInstancesRun:
    """``run`` holds the state; another ``run`` and a ``once`` start beside it (and are refused)
    while tasks complete one by one."""
    export = GeneratedExport(root / "export", tasks=completions)
    db = StateDatabase(root / STATE_DB)
    with DaemonRig(root) as rig:
        receiver = rig.receiver()
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("w")],
            handlers=[Workspace.webhook(receiver.url())],
        )
        daemon = rig.start(config)
        states: list[frozenset[str]] = [frozenset()]
        refused = []
        named = True
        for index, task in enumerate(export.task_ids):
            states.append(states[-1] | {task})
            export.write_jobs(states[-1])
            command = ("run", "--allow-root") if index % 2 == 0 else ("once",)
            result = run_cli(command[0], "--config", str(config), *command[1:], timeout=60)
            refused.append(result.returncode)
            named = named and f"pid {daemon.process.pid}" in result.stderr
        expected = [e[0] for e in expected_events("w", states, epoch=db.epoch())]
        wait_until(
            lambda: _quiescent(db, lambda: Receipts(tuple(receiver.requests)), len(expected)),
            timeout=30,
            what="every event delivered",
        )
        assert daemon.stop() == 0, daemon.log
    return TwoInstancesRun(
        tuple(sorted(set(refused))), named, tuple(expected), Receipts(tuple(receiver.requests))
    )


@attrs.frozen
class TwoConfigsRun:
    """Scenario 8b: two configurations, one state folder, handlers of the same name."""

    expected_a: frozenset[str]
    expected_b: frozenset[str]
    receipts_a: Receipts
    receipts_b: Receipts
    pending_of_a: int
    orphaned_listed: int
    #: Whether B's daemon warned that the state was last used by A's configuration.
    b_warned: bool

    @property
    def a_ids_at_b(self) -> set[str]:
        return {request.headers["webhook-id"] for request in self.receipts_b.requests} & self.expected_a

    @property
    def cross_deliveries(self) -> int:
        a_at_b = [r for r in self.receipts_b.requests if r.headers["webhook-id"] in self.expected_a]
        b_at_a = [r for r in self.receipts_a.requests if r.headers["webhook-id"] in self.expected_b]
        return len(a_at_b) + len(b_at_a)

    @property
    def a_received(self) -> set[str]:
        return self.receipts_a.ids

    @property
    def b_received(self) -> set[str]:
        return self.receipts_b.ids

    @property
    def duplicated(self) -> int:
        return self.receipts_a.duplicated + self.receipts_b.duplicated

    def tally(self) -> IntegrityTally:
        both = Receipts(self.receipts_a.requests + self.receipts_b.requests)
        return _integrity_tally(
            "two configs sharing one state folder",
            self.expected_a | self.expected_b,
            both,
            cross=self.cross_deliveries,
            notes=f"{self.pending_of_a} of A's rows pending while B ran: listed as orphaned by B"
            f" ({self.orphaned_listed}), sent by A later",
        )


def two_configs(root: Path) -> TwoConfigsRun:
    """Team A's daemon stops with rows pending (its receiver answers 503); team B's daemon, another
    configuration on the same ``state_dir`` with a handler also named "hook", runs; then A again."""
    first = GeneratedExport(root / "a", tasks=3)
    second = GeneratedExport(root / "b", tasks=3, seed=1)
    shared = root / "shared"
    db = StateDatabase(shared / "cvat-watch.db")
    with DaemonRig(root) as rig:
        receiver_a = rig.receiver(default=Reply(503))
        receiver_b = rig.receiver()
        config_a = write_daemon_config(
            root / "a.toml",
            watches=[first.watch("a")],
            handlers=[Workspace.webhook(receiver_a.url(), retry_delays=retry_delays(0.3, 50))],
            state_dir=shared,
        )
        config_b = write_daemon_config(
            root / "b.toml",
            watches=[second.watch("b")],
            handlers=[Workspace.webhook(receiver_b.url(), retry_delays=retry_delays(0.3, 50))],
            state_dir=shared,
        )
        daemon = rig.start(config_a)
        states_a = [frozenset(), frozenset(first.task_ids[:1]), frozenset(first.task_ids[:2])]
        for state in states_a[1:]:
            first.write_jobs(state)
        wait_until(lambda: len(db.events()) == 2, what="A's two events")
        wait_until(lambda: len(receiver_a.requests) >= 2, what="A's failed attempts")
        assert daemon.stop() == 0, daemon.log
        pending_of_a = db.unsettled()
        daemon = rig.start(config_b)
        states_b = [frozenset(), frozenset(second.task_ids[:1])]
        second.write_jobs(states_b[1])
        receiver_b.wait_for(1, timeout=15)
        # B's worker had every chance to take A's rows: several looks at the store.
        wait_until(lambda: db.unsettled() == pending_of_a, what="B's own row settled")
        listing = run_cli("deliveries", "--config", str(config_b))
        assert daemon.stop() == 0, daemon.log
        b_warned = f"was last used by the configuration {config_a}" in daemon.log
        receiver_a.set_default(Reply(200))
        daemon = rig.start(config_a)
        wait_until(lambda: db.unsettled() == 0, timeout=30, what="A's rows delivered by A")
        assert daemon.stop() == 0, daemon.log
        epoch = db.epoch()
        return TwoConfigsRun(
            expected_a=frozenset(e[0] for e in expected_events("a", states_a, epoch=epoch)),
            expected_b=frozenset(e[0] for e in expected_events("b", states_b, epoch=epoch)),
            receipts_a=Receipts(tuple(receiver_a.requests)),
            receipts_b=Receipts(tuple(receiver_b.requests)),
            pending_of_a=pending_of_a,
            orphaned_listed=sum("orphaned" in line for line in listing.stdout.splitlines()),
            b_warned=b_warned,
        )


@attrs.frozen
class ReloadRun:
    """Scenario 8c: SIGHUPs while a webhook attempt is held open by a slow receiver."""

    reloads: int
    committed_while_in_flight: bool
    first_id: str
    expected: frozenset[str]
    receipts: Receipts
    first_row_attempts: int
    reload_seconds: float

    @property
    def posts_of_first(self) -> int:
        return [request.headers["webhook-id"] for request in self.receipts.requests].count(self.first_id)

    @property
    def duplicated(self) -> int:
        return self.receipts.duplicated

    @property
    def delivered(self) -> frozenset[str]:
        return frozenset(self.receipts.ids & self.expected)

    def tally(self) -> IntegrityTally:
        return _integrity_tally(
            "reload (2× SIGHUP) with a delivery in flight",
            self.expected,
            self.receipts,
            notes=f"POSTs of the in-flight event {self.posts_of_first}; a file change during the"
            f" attempt committed {'before' if self.committed_while_in_flight else 'after'} it ended;"
            f" SIGHUP to READY {self.reload_seconds:.2f} s",
        )


def reload_in_flight(root: Path, *, reply_delay: float = 11.0) -> ReloadRun:
    """The receiver holds the first POST ``reply_delay`` seconds (past the 10 s a stop waits for a
    worker); two SIGHUPs arrive meanwhile, then a file change."""
    export = GeneratedExport(root / "export", tasks=3)
    db = StateDatabase(root / STATE_DB)
    with DaemonRig(root) as rig:
        receiver = rig.receiver()
        receiver.script(Reply(delay=reply_delay))
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("w")],
            handlers=[Workspace.webhook(receiver.url(), extra=f"read_timeout = {reply_delay + 10}")],
        )
        daemon = rig.start(config)
        states = [frozenset(), frozenset(export.task_ids[:1])]
        export.write_jobs(states[-1])
        receiver.wait_for(1)
        began = time.monotonic()
        for count in (2, 3):
            daemon.signal(signal.SIGHUP)
            rig.notify.wait_for("READY=1", count=count, timeout=60)
        reload_seconds = (time.monotonic() - began) / 2
        states.append(frozenset(export.task_ids[:2]))
        export.write_jobs(states[-1])
        wait_until(lambda: len(db.events()) == 2, timeout=60, what="the second event committed")
        first_row = db.deliveries()[0]
        in_flight = first_row["status"] == "pending" and first_row["attempts"] == 0
        expected = [e[0] for e in expected_events("w", states, epoch=db.epoch())]
        wait_until(
            lambda: _quiescent(db, lambda: Receipts(tuple(receiver.requests)), len(expected)),
            timeout=60,
            what="both events delivered",
        )
        attempts = db.deliveries()[0]["attempts"]
        assert daemon.stop() == 0, daemon.log
        return ReloadRun(
            reloads=rig.notify.count("RELOADING=1"),
            committed_while_in_flight=in_flight,
            first_id=expected[0],
            expected=frozenset(expected),
            receipts=Receipts(tuple(receiver.requests)),
            first_row_attempts=attempts,
            reload_seconds=reload_seconds,
        )


@attrs.frozen
class StateLostRun:
    """Scenario 8d: a retry across a restart, the state deleted under the daemon, a new state."""

    first_id: str
    retry_ids_across_restart: frozenset[str]
    after_reset_id: str
    exit_code: int
    expected: frozenset[str]
    receipts_before: Receipts
    receipts_after: Receipts

    @property
    def reused_ids(self) -> int:
        return len(self.receipts_before.ids & self.receipts_after.ids)

    def tally(self) -> IntegrityTally:
        return _integrity_tally(
            "state file lost (deleted under the running daemon)",
            self.expected,
            Receipts(self.receipts_before.requests + self.receipts_after.requests),
            reused=self.reused_ids,
            notes=f"the daemon exited with code {self.exit_code} naming the file; after a restart"
            " on a new state the same task's next completion got a new id",
        )


def state_lost(root: Path) -> StateLostRun:
    """Task 1 completes while the receiver answers 503; the daemon restarts and the retry succeeds
    (same id). Then the state database is deleted under the daemon, which must stop; the task is
    reopened, a daemon starts on a new state and the task completes again: generation 1 again,
    yet a new id."""
    export = GeneratedExport(root / "export", tasks=2)
    db = StateDatabase(root / STATE_DB)
    task = export.task_ids[0]
    with DaemonRig(root) as rig:
        before = rig.receiver(default=Reply(503))
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("w")],
            handlers=[Workspace.webhook(before.url(), retry_delays=retry_delays(0.3, 50))],
        )
        daemon = rig.start(config)
        export.write_jobs({task})
        before.wait_for(1)
        assert daemon.stop() == 0, daemon.log
        (first_id,) = (e[0] for e in expected_events("w", [frozenset(), frozenset({task})], epoch=db.epoch()))
        before.set_default(Reply(200))
        daemon = rig.start(config)
        wait_until(lambda: db.unsettled() == 0 and len(db.events()) == 1, what="the retry delivered")
        state = root / STATE_DB
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)
        exit_code = daemon.process.wait(timeout=30)
        daemon.stop()
        export.write_jobs(set())
        after = rig.receiver()
        write_daemon_config(
            root / "cvat-watch.toml", watches=[export.watch("w")], handlers=[Workspace.webhook(after.url())]
        )
        daemon = rig.start(config)
        export.write_jobs({task})
        (request,) = after.wait_for(1)
        wait_until(lambda: db.unsettled() == 0, what="the new event settled")
        assert daemon.stop() == 0, daemon.log
        (after_id,) = (e[0] for e in expected_events("w", [frozenset(), frozenset({task})], epoch=db.epoch()))
        return StateLostRun(
            first_id=first_id,
            retry_ids_across_restart=frozenset(r.headers["webhook-id"] for r in before.requests),
            after_reset_id=request.headers["webhook-id"],
            exit_code=exit_code,
            expected=frozenset({first_id, after_id}),
            receipts_before=Receipts(tuple(before.requests)),
            receipts_after=Receipts(tuple(after.requests)),
        )


@attrs.frozen
class ClockStepRun:
    """Scenario 8e: retries while the wall clock is stepped back and forward an hour."""

    delay: float
    after_back_step: float
    after_forward_step: float
    expected: frozenset[str]
    receipts: Receipts

    def tally(self) -> IntegrityTally:
        return _integrity_tally(
            "clock stepped back / forward 1 h during a retry",
            self.expected,
            self.receipts,
            notes=f"retry delay {self.delay:g} s; retried {self.after_back_step:.2f} s after the failure"
            f" with the clock set back 1 h, {self.after_forward_step:.2f} s with it set forward 1 h"
            " (in-process dispatcher with an injected wall clock, real receiver)",
        )


def clock_step(root: Path, *, delay: float = 0.5, step: float = 3600.0) -> ClockStepRun:
    """The real dispatcher and webhook handler against a real receiver, with its wall clock (the
    one stored in the database) injected: each event's first attempt gets a 503, the clock is
    stepped by ``step`` seconds back (first event) or forward (second), and the retry is timed."""
    from cvat_watch.daemon.dispatch import Dispatcher, Route
    from cvat_watch.daemon.events import Event, TaskInfo
    from cvat_watch.daemon.snapshot import Snapshot
    from cvat_watch.daemon.store import Store
    from cvat_watch.handlers.webhook import WebhookHandler
    from cvat_watch.testing.receiver import Receiver

    offset = [0.0]

    def wall() -> float:
        return time.time() + offset[0]

    store = Store.open(root / "state" / "cvat-watch.db")
    receiver = Receiver().start()
    handler = WebhookHandler(url=receiver.url())
    route = Route("hook", handler, frozenset({TASK_COMPLETED}), (delay,) * 5)
    dispatcher = Dispatcher(store, [route], clock=wall, jitter=0.0)
    timings = []
    ids = []
    try:
        dispatcher.start()
        for number, sign in ((1, -1), (2, 1)):
            receiver.script(Reply(503))
            event = Event(
                type=TASK_COMPLETED,
                id=event_id("w", str(number), TASK_COMPLETED, 1, epoch=store.epoch),
                timestamp="2026-01-01T00:00:00.000000Z",
                watch="w",
                project=None,
                task=TaskInfo(id=str(number)),
            )
            ids.append(event.id)
            before = len(receiver.requests)
            store.commit_reload("w", Snapshot(watch="w"), {}, [event], dispatcher.targets, wall())
            dispatcher.wake()
            (failed, *_rest) = receiver.wait_for(before + 1)[before:]
            # Stepped only once the failure is recorded: its retry time is in the old clock's terms.
            wait_until(
                lambda wanted=event.id: any(
                    row.attempts for row in store.deliveries() if row.event_id == wanted
                ),
                what="the failure recorded",
            )
            offset[0] += sign * step
            retried = receiver.wait_for(before + 2, timeout=30)[before + 1]
            timings.append(retried.at - failed.at)
        dispatcher.stop()
    finally:
        handler.close()
        receiver.stop()
        store.close()
    return ClockStepRun(delay, timings[0], timings[1], frozenset(ids), Receipts(tuple(receiver.requests)))


@attrs.frozen
class StopRun:
    """Scenario 8f: SIGTERM while a SIGHUP's reload parses a big export again."""

    megabytes: float
    load_seconds: float
    stop_seconds: float
    exit_code: int
    ready_after_reload: bool

    def tally(self) -> IntegrityTally:
        return IntegrityTally(
            f"SIGTERM during a reload of a {self.megabytes:.0f} MB export",
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            f"stopped {self.stop_seconds:.2f} s after SIGTERM, exit {self.exit_code}"
            f" (a full load takes {self.load_seconds:.1f} s; TimeoutStopSec=30);"
            f" the reload {'finished' if self.ready_after_reload else 'was abandoned'}",
        )


def _stop_notes(tallies: Sequence[IntegrityTally]) -> str:
    """The stop and load times of several stop_during_reload runs as ranges."""
    stops = [float(re.search(r"stopped ([\d.]+) s", t.notes)[1]) for t in tallies]  # type: ignore[index]
    loads = [float(re.search(r"takes ([\d.]+) s", t.notes)[1]) for t in tallies]  # type: ignore[index]
    return (
        f"stopped {min(stops):.2f}–{max(stops):.2f} s after SIGTERM, exit 0 (a full load takes"
        f" {min(loads):.1f}–{max(loads):.1f} s; TimeoutStopSec=30)"
    )


def stop_during_reload(root: Path, *, shapes_per_image: int = 50) -> StopRun:
    """A watch of a ~50 MB export whose settings change, SIGHUP (the watch is loaded anew), and
    SIGTERM as soon as the daemon says RELOADING=1: how long the stop takes."""
    export = GeneratedExport(root / "big", tasks=2000, jobs_per_task=2, shapes_per_image=shapes_per_image)
    config = root / "cvat-watch.toml"
    with DaemonRig(root) as rig:
        write_daemon_config(config, watches=[export.watch("big", recheck_interval=600.0)], handlers=[])
        began = time.monotonic()
        daemon = rig.start(config, timeout=300)
        load_seconds = time.monotonic() - began
        write_daemon_config(config, watches=[export.watch("big", recheck_interval=601.0)], handlers=[])
        daemon.signal(signal.SIGHUP)
        rig.notify.wait_for("RELOADING=1", timeout=60)
        stopped = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.process.wait(timeout=120)
        stop_seconds = time.monotonic() - stopped
        daemon.stop()
    return StopRun(
        export.annotations.stat().st_size / 1e6,
        load_seconds,
        stop_seconds,
        code,
        rig.notify.count("READY=1") > 1,
    )


# -- 11. partial listings, 12. a command with a background child, 13. a trickling receiver -------------

_CVAT = "http://localhost:8080"


def rest_listing(
    export: GeneratedExport, completed: Iterable[str], *, page_size: int
) -> list[dict[str, Any]]:
    """The pages CVAT's ``GET /api/jobs?page_size=…`` returns for ``export`` with ``completed`` done."""
    done = frozenset(completed)
    jobs = [
        {
            "id": int(job),
            "task_id": int(task),
            "state": "completed" if task in done or index > 0 else "in progress",
            "stage": "acceptance" if task in done or index > 0 else "annotation",
            "type": "annotation",
            "assignee": None,
        }
        for task in export.task_ids
        for index, job in enumerate(export.jobs[task])
    ]
    count = len(jobs)
    starts = range(0, count, page_size)
    pages = []
    for number, start in enumerate(starts, 1):
        pages.append(
            {
                "count": count,
                "next": f"{_CVAT}/api/jobs?page={number + 1}&page_size={page_size}"
                if start + page_size < count
                else None,
                "previous": None
                if number == 1
                else f"{_CVAT}/api/jobs?{'' if number == 2 else f'page={number - 1}&'}page_size={page_size}",
                "results": jobs[start : start + page_size],
            }
        )
    return pages


#: The partial listings written between whole ones, in turn: one page of several, the last page
#: missing, a page missing in the middle.
PARTIAL_KINDS = ("first page only", "last page missing", "middle page missing")


def partial_variant(pages: list[dict[str, Any]], kind: str) -> object:
    """``pages`` with some left out the way a fetcher that gave up early (or skipped one) would."""
    if kind == "first page only":
        return pages[0]
    if kind == "last page missing":
        return pages[:-1]
    return [pages[0], *pages[2:]]


@attrs.frozen
class PartialRun:
    """Scenario 11: whole listings with partial ones between them; what the receiver got."""

    expected: tuple[tuple[str, str, str, int], ...]
    receipts: Receipts
    partials: int
    refused: int
    store_ids: frozenset[str]

    @property
    def invented(self) -> int:
        return len(self.receipts.ids - {e[0] for e in self.expected})

    def tally(self) -> IntegrityTally:
        return _integrity_tally(
            "partial job listing",
            [e[0] for e in self.expected],
            self.receipts,
            notes=f"per run {self.partials} partial listings ({', '.join(PARTIAL_KINDS)}), each one that would"
            f" complete and reopen tasks, all refused as failed loads ({self.refused} warnings)",
        )


def partial_listing(root: Path, *, rounds: int = 6, tasks: int = 6, seed: int = 0) -> PartialRun:
    """Whole REST listings, and after each a partial one (pages missing) that makes every task it
    shows complete and every task it leaves out reopen; the next whole listing follows only once
    the daemon has refused the partial one (its warning is in the log)."""
    rng = random.Random(seed)
    export = GeneratedExport(root / "export", tasks=tasks, jobs_per_task=2)
    page_size = max(1, (2 * tasks) // 3)  # three pages at least
    db = StateDatabase(root / STATE_DB)
    states: list[frozenset[str]] = [frozenset()]
    export.job_status.write_text(json.dumps(rest_listing(export, (), page_size=page_size)))
    with DaemonRig(root) as rig:
        receiver = rig.receiver()
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("w")],
            handlers=[Workspace.webhook(receiver.url())],
        )
        daemon = rig.start(config)
        for round_ in range(rounds):
            state = frozenset(rng.sample(export.task_ids, rng.randint(0, tasks)))
            write_file(
                export.job_status, json.dumps(rest_listing(export, state, page_size=page_size)).encode()
            )
            states.append(state)
            wait_until(lambda: db.baseline_completed("w") == states[-1], what="the whole listing committed")
            # Everything "completed" on the pages that are there: a task on them would complete,
            # a task whose jobs are all on missing pages would reopen.
            everything = rest_listing(export, export.task_ids, page_size=page_size)
            kind = PARTIAL_KINDS[round_ % len(PARTIAL_KINDS)]
            write_file(export.job_status, json.dumps(partial_variant(everything, kind)).encode())
            wait_until(
                lambda n=round_ + 1: daemon.log.count("partial listing") >= n,
                what=f"the daemon to refuse partial listing {round_ + 1}",
            )
        state = frozenset(rng.sample(export.task_ids, rng.randint(0, tasks)))
        write_file(export.job_status, json.dumps(rest_listing(export, state, page_size=page_size)).encode())
        states.append(state)
        expected = expected_events("w", states, epoch=db.epoch())
        wait_until(
            lambda: (
                db.baseline_completed("w") == states[-1]
                and _quiescent(db, lambda: Receipts(tuple(receiver.requests)), len(expected))
            ),
            what="the last whole listing delivered",
        )
        assert daemon.stop() == 0, daemon.log
        return PartialRun(
            expected=tuple(expected),
            receipts=Receipts(tuple(receiver.requests)),
            partials=rounds,
            refused=daemon.log.count("partial listing"),
            store_ids=frozenset(db.event_ids()),
        )


_HOOK_SCRIPT = """\
#!/bin/sh
# A notification script that starts something in the background and exits 0 at once; the
# background process keeps the script's stdout open for {hold} s.
cat > /dev/null
echo "$CVAT_WATCH_EVENT_ID" >> '{received}'
sleep {hold} &
echo $! >> '{pids}'
echo "notified $CVAT_WATCH_EVENT_ID"
"""


@attrs.frozen
class BackgroundRun:
    """Scenario 12: the event ids the command recorded, and the delivery rows."""

    expected: tuple[tuple[str, str, str, int], ...]
    received: tuple[str, ...]
    deliveries: tuple[dict[str, Any], ...]
    timeout: float

    @property
    def receipts(self) -> Counter[str]:
        return Counter(self.received)

    @property
    def invented(self) -> int:
        return len(set(self.received) - {e[0] for e in self.expected})

    def tally(self) -> IntegrityTally:
        wanted = {e[0] for e in self.expected}
        attempts = max((row["attempts"] for row in self.deliveries), default=0)
        statuses = sorted({row["status"] for row in self.deliveries})
        return IntegrityTally(
            "command leaving a background child on stdout",
            1,
            len(wanted),
            len(set(self.received) & wanted),
            len(self.received) - len(set(self.received)),
            0,
            0,
            self.invented,
            f"exits 0 at once, its background child holds stdout for {4 * self.timeout:g} s (timeout"
            f" {self.timeout:g} s); at most {attempts} attempt per delivery; rows {'/'.join(statuses)}",
        )


def background_child(root: Path, *, events: int = 4, timeout: float = 3.0) -> BackgroundRun:
    """A command handler whose script exits 0 at once but leaves ``sleep`` holding its stdout
    for longer than the handler's timeout; tasks complete one after another."""
    export = GeneratedExport(root / "export", tasks=events)
    received, pids = root / "received", root / "pids"
    script = root / "notify.sh"
    script.write_text(_HOOK_SCRIPT.format(hold=timeout * 4, received=received, pids=pids))
    handler = (
        f'[[handler]]\ntype = "command"\nname = "script"\ncommand = ["/bin/sh", "{script}"]\n'
        f"timeout = {timeout}\nretry_delays = {retry_delays(0.2, 2)}\n"
    )
    config = write_daemon_config(root / "cvat-watch.toml", watches=[export.watch("w")], handlers=[handler])
    db = StateDatabase(root / STATE_DB)
    states: list[frozenset[str]] = [frozenset()]
    try:
        with DaemonRig(root) as rig:
            daemon = rig.start(config)
            for task in export.task_ids[:events]:
                export.write_jobs(states[-1] | {task})
                states.append(export.completed)
                wait_until(lambda: db.baseline_completed("w") == states[-1], what="the completion committed")
            expected = expected_events("w", states, epoch=db.epoch())
            wait_until(
                lambda: len(db.events()) >= len(expected) and db.unsettled() == 0,
                timeout=30 + 4 * timeout * len(expected),
                what="every delivery settled",
            )
            assert daemon.stop() == 0, daemon.log
    finally:
        # The background children are this run's own processes: end them by pid.
        for pid in (int(line) for line in (pids.read_text().split() if pids.exists() else ())):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    return BackgroundRun(
        expected=tuple(expected),
        received=tuple(received.read_text().split()) if received.exists() else (),
        deliveries=tuple(db.deliveries()),
        timeout=timeout,
    )


@attrs.frozen
class TrickleRun:
    """Scenario 13: the trickling receiver's and the healthy receiver's requests."""

    expected: tuple[tuple[str, str, str, int], ...]
    trickling: Receipts
    healthy: Receipts
    timeout: float
    #: Seconds from the first (trickled) attempt to the retry of the same event.
    cut_after: float

    @property
    def invented(self) -> int:
        wanted = {e[0] for e in self.expected}
        return len((self.trickling.ids | self.healthy.ids) - wanted)

    @property
    def answered(self) -> Receipts:
        """The trickling receiver's requests whose answer reached the client whole."""
        return Receipts(tuple(r for r in self.trickling.requests if r.answered))

    @property
    def cut(self) -> int:
        return sum(not r.answered for r in self.trickling.requests)

    def tally(self) -> IntegrityTally:
        return _integrity_tally(
            "receiver trickling its answer",
            [e[0] for e in self.expected],
            self.answered,
            notes=f"answer sent a byte every 0.1 s (≈{_TRICKLE_BYTES * 0.1:.0f} s in all), read_timeout 0.5 s;"
            f" attempt cut at the {self.timeout:g} s timeout ({self.cut} cut, its body had arrived:"
            f" re-sent with the same webhook-id {self.cut_after:.1f} s after the first);"
            f" healthy handler got {len(self.healthy.ids)}/{len(self.expected)}",
        )


_TRICKLE_BYTES = 600


def trickling_receiver(root: Path, *, timeout: float = 1.0) -> TrickleRun:
    """A receiver that answers its first request one byte every 0.1 s (minutes in all: every byte
    restarts the read timeout), then normally; a second, healthy handler gets the same events."""
    export = GeneratedExport(root / "export", tasks=3)
    db = StateDatabase(root / STATE_DB)
    with DaemonRig(root) as rig:
        trickling = rig.receiver()
        trickling.script(Reply(trickle=0.1, headers={"x-pad": "." * _TRICKLE_BYTES}))
        healthy = rig.receiver()
        config = write_daemon_config(
            root / "cvat-watch.toml",
            watches=[export.watch("w")],
            handlers=[
                Workspace.webhook(
                    trickling.url(),
                    name="trickling",
                    retry_delays=retry_delays(0.2, 3),
                    extra=f"read_timeout = 0.5\ntimeout = {timeout}",
                ),
                Workspace.webhook(healthy.url(), name="healthy"),
            ],
        )
        daemon = rig.start(config)
        states: list[frozenset[str]] = [frozenset()]
        for task in export.task_ids:
            export.write_jobs(states[-1] | {task})
            states.append(export.completed)
        expected = expected_events("w", states, epoch=db.epoch())
        wait_until(
            lambda: (
                db.baseline_completed("w") == states[-1]
                and _quiescent(db, lambda: Receipts(tuple(trickling.requests)), len(expected))
                and {e[0] for e in expected} <= Receipts(tuple(healthy.requests)).ids
            ),
            timeout=30,
            what="every event at both receivers",
        )
        assert daemon.stop() == 0, daemon.log
        requests = trickling.requests
        first = requests[0]
        retry = next(r for r in requests[1:] if r.headers["webhook-id"] == first.headers["webhook-id"])
        return TrickleRun(
            expected=tuple(expected),
            trickling=Receipts(tuple(requests)),
            healthy=Receipts(tuple(healthy.requests)),
            timeout=timeout,
            cut_after=retry.at - first.at,
        )


# -- the table -----------------------------------------------------------------------------------------


def _repeat(times: int, run: Callable[[Path, int], Tally], notes: Callable[[list[Tally]], str]) -> Tally:
    tallies = []
    for index in range(times):
        with tempfile.TemporaryDirectory(prefix="cvw-rel-") as folder:
            tallies.append(run(Path(folder), index))
        print(f"  {tallies[-1].row()}", file=sys.stderr, flush=True)
    return Tally.combine(tallies, notes(tallies))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reliability", description=(__doc__ or "").split("\n")[0]
    )
    add = parser.add_argument
    add("--repeat", type=int, default=3, help="runs of scenarios 1, 3, 6 and 7a (default 3)")
    add("--kills", type=int, default=100, help="SIGKILLs in scenario 4 (default 100)")
    add("--kill-runs", type=int, default=1, help="runs of scenario 4 (default 1)")
    add("--rewrites", type=int, default=500, help="rewrites per churn run (default 500)")
    add("--exports", type=int, default=20, help="watches in scenario 7a (default 20)")
    add("--big-tasks", type=int, default=10_000, help="tasks of the large export (default 10000)")
    add("--big-completing", type=int, default=1_000, help="tasks completing at once (default 1000)")
    add("--only", default="1,3,4,6,7,8,11,12,13", help="comma-separated scenario numbers (default all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    only = {part.strip() for part in args.only.split(",")}
    rows: list[Tally] = []
    began = time.monotonic()

    if "1" in only:
        rows.append(
            _repeat(args.repeat, lambda root, _i: receiver_down(root).tally(), lambda ts: ts[0].notes)
        )
    if "3" in only:
        rows.append(
            _repeat(args.repeat, lambda root, _i: gone_and_bad_request(root).tally(), lambda ts: ts[0].notes)
        )
    if "4" in only:
        kill_runs: list[KillRun] = []

        def one_kill_run(root: Path, index: int) -> Tally:
            kill_runs.append(sigkill_loop(root, kills=args.kills, seed=args.seed + index))
            return kill_runs[-1].tally()

        def kill_notes(_tallies: list[Tally]) -> str:
            points: Counter[str] = Counter()
            for run in kill_runs:
                points.update(run.kill_points)
            extra = sum(len(run.receipts.ids - {e[0] for e in run.expected}) for run in kill_runs)
            store_mismatch = sum(run.store_ids != {e[0] for e in run.expected} for run in kill_runs)
            integrity = {run.integrity for run in kill_runs}
            return (
                f"kills at: {', '.join(f'{p} {n}' for p, n in sorted(points.items()))};"
                f" invented events {extra}; store ≠ expected in {store_mismatch} runs;"
                f" integrity_check {'/'.join(sorted(integrity))};"
                f" {sum(r.seconds for r in kill_runs) / sum(r.kills for r in kill_runs):.2f} s per kill"
            )

        rows.append(_repeat(args.kill_runs, one_kill_run, kill_notes))
    if "6" in only:
        churn_runs: list[ChurnRun] = []

        def one_churn(root: Path, index: int) -> Tally:
            churn_runs.append(churn(root, rewrites=args.rewrites, seed=args.seed + index))
            return churn_runs[-1].tally()

        def churn_notes(_tallies: list[Tally]) -> str:
            inconsistent = sum(len(run.inconsistent_tasks()) for run in churn_runs)
            leftovers = sum(len(run.leftover_events) for run in churn_runs)
            growth = max(run.rss_after_kib - run.rss_before_kib for run in churn_runs) / 1024
            rss = max(run.rss_after_kib for run in churn_runs) / 1024
            return (
                f"{args.rewrites} rewrites per run, mixed atomic/in place; inconsistent tasks"
                f" {inconsistent}; leftover diff {leftovers}; RSS at most {rss:.0f} MiB"
                f" (+{growth:.1f} MiB over a run)"
            )

        rows.append(_repeat(args.repeat, one_churn, churn_notes))
    if "7" in only:
        rows.append(
            _repeat(
                args.repeat,
                lambda root, _i: many_exports(root, exports=args.exports).tally(),
                lambda ts: ts[-1].notes,
            )
        )
        rows.append(
            _repeat(
                1,
                lambda root, _i: big_export(
                    root, tasks=args.big_tasks, completing=args.big_completing
                ).tally(),
                lambda ts: ts[0].notes,
            )
        )

    integrity: list[IntegrityTally] = []
    if "8" in only:
        scenarios: list[tuple[Callable[[Path], Any], Callable[[list[IntegrityTally]], str]]] = [
            (two_instances, lambda ts: ts[0].notes),
            (two_configs, lambda ts: ts[0].notes),
            (reload_in_flight, lambda ts: ts[0].notes),
            (state_lost, lambda ts: ts[0].notes),
            (clock_step, lambda ts: ts[-1].notes),
            (stop_during_reload, _stop_notes),
        ]
        for scenario, notes in scenarios:
            tallies = []
            for _ in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="cvw-rel-") as folder:
                    tallies.append(scenario(Path(folder)).tally())
                print(f"  {tallies[-1].row()}", file=sys.stderr, flush=True)
            integrity.append(IntegrityTally.combine(tallies, notes(tallies)))

    guards: list[tuple[str, Callable[[Path, int], IntegrityTally]]] = [
        ("11", lambda root, i: partial_listing(root, seed=args.seed + i).tally()),
        ("12", lambda root, _i: background_child(root).tally()),
        ("13", lambda root, _i: trickling_receiver(root).tally()),
    ]
    for number, run in guards:
        if number not in only:
            continue
        tallies = []
        for index in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="cvw-rel-") as folder:
                tallies.append(run(Path(folder), index))
            print(f"  {tallies[-1].row()}", file=sys.stderr, flush=True)
        integrity.append(IntegrityTally.combine(tallies, tallies[0].notes))

    if rows:
        print("| scenario | runs | events expected | delivered | lost | duplicated | notes |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for row in rows:
            print(row.row())
    if integrity:
        print()
        print(
            "| scenario | runs | events expected | delivered | duplicated | cross-deliveries | reused ids"
            " | invented | notes |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for tally in integrity:
            print(tally.row())
    print(f"\n(measured in {time.monotonic() - began:.0f} s)", file=sys.stderr)
    sound = all(t.cross == t.reused == t.invented == t.duplicated == 0 for t in integrity)
    return 0 if all(row.lost == 0 for row in rows) and sound else 1


if __name__ == "__main__":
    sys.exit(main())
