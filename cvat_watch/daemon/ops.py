"""What operators see of a running daemon: metrics, health, readiness and the status page.

:class:`Operations` is fed by the service (reloads, configuration loads, state errors) and the
dispatcher (delivery outcomes), and answers the listener's ``GET /metrics``, ``/healthz``,
``/readyz`` and ``/``. Every answer reads the same things: the runners' last good snapshots in
memory and the outbox through a read-only connection of its own, so that a scrape never waits
for the daemon's store lock and never writes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from cvat_watch.daemon.health import Liveness
from cvat_watch.daemon.http import HttpListener, Request, Response
from cvat_watch.daemon.metrics import CONTENT_TYPE, Metrics, OutboxCollector, ScrapeState, WatchCounts
from cvat_watch.daemon.reload import WatchRunner
from cvat_watch.daemon.snapshot import Snapshot
from cvat_watch.daemon.statuspage import MAX_TASKS_SHOWN, HandlerView, StatusView, TaskView, WatchView, render
from cvat_watch.daemon.store import OutboxSummary, Store
from cvat_watch.errors import CvatWatchError
from cvat_watch.model import JobStatus

__all__ = ["Answer", "Operations", "ReloadRecord"]

log = logging.getLogger(__name__)

#: (HTTP status, content type, body).
Answer = tuple[int, str, bytes]

_TEXT = "text/plain; charset=utf-8"


@attrs.frozen
class ReloadRecord:
    """The last reload of one watch."""

    at: float
    outcome: str
    last_success_at: float | None
    error: str | None


@attrs.define(eq=False)
class Operations:
    """The operator's view of one daemon; its methods are safe to call from any thread."""

    state_path: Path
    runners: Callable[[], Mapping[str, WatchRunner]]
    handlers: Callable[[], Sequence[str]]
    #: The running CVAT sources by watch name (their ``last_success`` wall-clock time), if any.
    sources: Callable[[], Mapping[str, Any]] = dict
    liveness: Liveness = attrs.field(factory=Liveness)
    metrics: Metrics = attrs.field(factory=Metrics)
    clock: Callable[[], float] = time.time
    started_at: float = attrs.field(init=False)
    ready: bool = attrs.field(default=False, init=False)
    _records: dict[str, ReloadRecord] = attrs.field(factory=dict, init=False)
    _config: tuple[bool, str | None, float | None] = attrs.field(default=(True, None, None), init=False)
    _state_error: str | None = attrs.field(default=None, init=False)
    _reader: Store | None = attrs.field(default=None, init=False)
    _reader_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    # Per watch: the snapshot last counted and its counts (a 100k-task sum costs milliseconds).
    _counted: dict[str, tuple[Snapshot, WatchCounts]] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        self.started_at = self.clock()
        self.metrics.add_collector(OutboxCollector(self.scrape_state))

    # -- hooks --------------------------------------------------------------------------------

    def reloaded(
        self, watch: str, status: str, *, event_types: Sequence[str] = (), error: str | None = None
    ) -> None:
        """After each reload of ``watch``: its outcome's status ("error" when the state failed)."""
        now = self.clock()
        self.metrics.reloaded(watch, status, event_types)
        previous = self._records.get(watch)
        success = (
            now if status in ("committed", "unchanged") else (previous.last_success_at if previous else None)
        )
        self._records[watch] = ReloadRecord(now, status, success, error)
        if status == "error":
            self._state_error = error
        elif status == "committed":
            self._state_error = None

    def delivery(self, handler: str, outcome: str, latency: float | None = None) -> None:
        self.metrics.delivery(handler, outcome, latency)

    def config_loaded(self, *, error: str | None = None) -> None:
        self.metrics.config_loaded(error is None)
        _ok, _error, loaded_at = self._config
        self._config = (error is None, error, self.clock() if error is None else loaded_at)

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # -- what a scrape and the page read ------------------------------------------------------

    def _outbox(self, *, delivered: bool = False) -> Mapping[str, OutboxSummary]:
        with self._reader_lock:
            if self._reader is None:
                self._reader = Store.open_read_only(self.state_path)
            return self._reader.outbox_summary(self.clock(), delivered=delivered)

    def _counts(self, name: str, snapshot: Snapshot) -> WatchCounts:
        known = self._counted.get(name)
        if known is not None and known[0] is snapshot:
            return known[1]
        counts = WatchCounts(len(snapshot.tasks), sum(task.completed for task in snapshot.tasks))
        self._counted[name] = (snapshot, counts)
        return counts

    def scrape_state(self) -> ScrapeState | None:
        try:
            outbox = self._outbox()
        except CvatWatchError as error:
            # A scrape must still answer: the other metrics say what is wrong, the log says why.
            log.warning("metrics: %s", error)
            return None
        watches = {
            name: self._counts(name, runner.snapshot)
            for name, runner in self.runners().items()
            if runner.snapshot is not None
        }
        return ScrapeState(outbox=outbox, handlers=list(self.handlers()), watches=watches)

    def status_view(self) -> StatusView:
        try:
            outbox = self._outbox(delivered=True)
            state = str(self.state_path)
        except CvatWatchError as problem:
            outbox = {}
            state = f"{self.state_path} (unreadable: {problem})"
        watches = []
        for name, runner in self.runners().items():
            watches.append(self._watch_view(name, runner))
        keys = sorted(set(self.handlers()) | set(outbox))
        handlers = tuple(HandlerView(key, outbox.get(key, OutboxSummary())) for key in keys)
        ok, error, loaded_at = self._config
        return StatusView(
            generated_at=self.clock(),
            started_at=self.started_at,
            state=state,
            watches=tuple(watches),
            handlers=handlers,
            config_ok=ok,
            config_error=error,
            config_loaded_at=loaded_at,
        )

    def _watch_view(self, name: str, runner: WatchRunner) -> WatchView:
        snapshot = runner.snapshot
        record = self._records.get(name)
        in_progress: list[TaskView] = []
        more = 0
        counts = WatchCounts(0, 0)
        if snapshot is not None:
            counts = self._counts(name, snapshot)
            rule = runner.config.completion
            for task in snapshot.tasks:
                if task.completed or not task.jobs:
                    continue
                if len(in_progress) >= MAX_TASKS_SHOWN:
                    more += 1
                    continue
                # The model's rule, on the snapshot's job records.
                done = sum(
                    JobStatus(job_id=job.id, task_id=task.id, state=job.state, stage=job.stage).is_done(rule)
                    for job in task.jobs
                )
                in_progress.append(
                    TaskView(
                        id=task.id,
                        name=task.name,
                        jobs=tuple((job.id, job.state, job.stage) for job in task.jobs),
                        jobs_done=done,
                    )
                )
        return WatchView(
            name=name,
            rule=runner.config.completion,
            tasks=counts.tasks,
            completed=counts.completed,
            in_progress=tuple(in_progress),
            more_in_progress=more,
            last_reload_at=record.at if record else None,
            last_outcome=record.outcome if record else None,
            last_success_at=record.last_success_at if record else None,
            last_error=runner.last_error or (record.error if record else None),
            loaded=snapshot is not None,
        )

    # -- HTTP answers -------------------------------------------------------------------------

    def answer_metrics(self) -> Answer:
        for name, source in self.sources().items():
            last = getattr(source, "last_success", None)
            if last is not None:
                self.metrics.cvat_polled(name, at=last)
        return 200, CONTENT_TYPE, self.metrics.exposition()

    def answer_healthz(self) -> Answer:
        alive, reason = self.liveness.check()
        return (200 if alive else 503), _TEXT, f"{reason}\n".encode()

    def answer_readyz(self) -> Answer:
        if not self.ready:
            return 503, _TEXT, b"not ready: the first load is not done\n"
        problem = self._state_problem()
        if problem is not None:
            return 503, _TEXT, f"not ready: {problem}\n".encode()
        return 200, _TEXT, b"ready\n"

    def _state_problem(self) -> str | None:
        folder = self.state_path.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"the state folder {folder} is not writable"
        if not os.access(self.state_path, os.R_OK | os.W_OK):
            return f"the state database {self.state_path} is not writable"
        if self._state_error is not None:
            return f"the last write failed: {self._state_error}"
        return None

    def answer_status_page(self) -> Answer:
        return 200, "text/html; charset=utf-8", render(self.status_view()).encode()

    def register(self, listener: HttpListener) -> None:
        """Serve ``GET /metrics``, ``/healthz``, ``/readyz`` and ``/`` (the status page) on ``listener``."""

        def route(answer: Callable[[], Answer]) -> Callable[[Request], Response]:
            def handle(_request: Request) -> Response:
                status, content_type, body = answer()
                return Response(status, body, content_type=content_type)

            return handle

        listener.get("/metrics", route(self.answer_metrics))
        listener.get("/healthz", route(self.answer_healthz))
        listener.get("/readyz", route(self.answer_readyz))
        listener.get("/", route(self.answer_status_page))
