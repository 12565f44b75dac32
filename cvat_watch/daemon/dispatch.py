"""The dispatcher: takes due rows from the outbox, calls handlers, records what happened.

Each route (one handler and the event types it wants) has its own worker thread, so a slow or
failing target never holds up another. A worker sleeps until the store's next due time for its
route (or until :meth:`Dispatcher.wake`), attempts every due delivery once, and records the
outcome: delivered, retry at a computed time, dead letter, or the whole target gone.
Handlers make one attempt per call; all retrying and sleeping happens here.

Rows are bound to a route's *identity* (see :mod:`cvat_watch.daemon.routes`): a worker only
ever takes rows of its own identity. :meth:`Dispatcher.update_routes` applies a new
configuration without stopping anything it does not have to: a route whose identity and
options are unchanged keeps its worker, handler and any attempt in flight; a changed one gets
its new handler for the next attempt; a removed one finishes its attempt in flight and leaves.

Retry times are stored as wall-clock times (they survive a restart and ``deliveries`` shows
them), but waits are measured on the monotonic clock: when the wall clock is stepped, each
worker notices the step at its next look (for every retry time it set, it remembers the
difference of the two clocks then) and moves the retry times by the same step, so a clock set
back an hour neither holds retries back an hour nor, set forward, fires them early. A worker
also wakes for each retry it set by the monotonic clock, so a step is noticed when it matters.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import attrs

from cvat_watch.daemon.events import Event
from cvat_watch.daemon.store import Delivery, Store
from cvat_watch.errors import CvatWatchError, DeliveryError
from cvat_watch.handlers.base import GroupHandler, Handler

__all__ = ["Dispatcher", "Route"]

log = logging.getLogger(__name__)

#: The longest a worker sleeps without looking at the store: rows queued by another process
#: (``cvat-watch redeliver``) are picked up within this time even without a wake().
MAX_IDLE_WAIT = 60.0
#: How long a worker backs off when the store itself fails (disk full, locked), to not spin.
STORE_FAILURE_WAIT = 5.0

#: The longest Retry-After honoured when the configured delays are all shorter.
MAX_RETRY_AFTER = 86400.0


def _delays(delays: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(delay) for delay in delays)


def _routes(routes: Iterable[Route]) -> tuple[Route, ...]:
    return tuple(routes)


#: How far the wall clock may move against the monotonic clock between two looks before it
#: counts as a step (NTP slews by far less; a suspended machine is a step, rightly).
CLOCK_STEP_TOLERANCE = 1.0


@attrs.frozen
class Route:
    """One target: a handler, the event types it receives, and the delays between its attempts.

    ``key`` is the handler's name, for people; ``identity`` is what outbox rows are bound to
    (by default the key, for routes made by hand). ``options`` is whatever describes the
    handler's settings: a route with the same identity and equal options is unchanged by a
    reload.
    """

    key: str
    handler: Handler = attrs.field(repr=False, eq=False)
    events: frozenset[str]
    retry_delays: tuple[float, ...] = attrs.field(converter=_delays)
    #: Seconds to gather events into one delivery (a digest; the handler must be a
    #: ``GroupHandler``), and the most events in one; None delivers each event on its own.
    group_wait: float | None = None
    group_max: int = 50
    identity: str = attrs.field(default=attrs.Factory(lambda self: self.key, takes_self=True), kw_only=True)
    options: object = attrs.field(default=None, kw_only=True, repr=False)

    def same_as(self, other: Route) -> bool:
        """Whether a reload from ``other`` to this route changes nothing worth a new handler."""
        if self.handler is other.handler:
            return True
        return self.options is not None and self == other


@attrs.define(eq=False)
class _Worker:
    route: Route
    wakeup: threading.Event = attrs.field(factory=threading.Event)
    thread: threading.Thread | None = None
    #: The route was removed by a reload: finish the attempt in flight, then leave.
    retired: bool = False
    #: Routes replaced by a reload, whose handlers are closed once no attempt uses them.
    replaced: list[Route] = attrs.field(factory=list)


def _random(rng: random.Random | None) -> random.Random:
    return rng if rng is not None else random.Random()


def _unique_keys(_: object, __: object, routes: tuple[Route, ...]) -> None:
    _check_unique(routes)


def _check_unique(routes: Sequence[Route]) -> None:
    keys = [route.identity for route in routes]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        # Delivery rows are bound to an identity: two routes with one would steal each other's rows.
        raise ValueError(f"two routes share the identity {', '.join(duplicates)}")


@attrs.define(eq=False)
class Dispatcher:
    """Delivers the outbox of ``store`` to ``routes``: threaded with :meth:`start`, or :meth:`run_once`.

    ``clock`` gives the wall-clock time stored in the database and ``monotonic`` the clock
    waits are measured on (both injectable for tests); ``jitter`` spreads each retry delay by up
    to that fraction either way, so that many rows failing together do not retry together.
    """

    _store: Store
    _routes: tuple[Route, ...] = attrs.field(converter=_routes, validator=_unique_keys)
    _clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True)
    _monotonic: Callable[[], float] = attrs.field(default=time.monotonic, kw_only=True)
    _jitter: float = attrs.field(default=0.1, kw_only=True)
    _rng: random.Random = attrs.field(default=None, converter=_random, kw_only=True)
    #: Told each attempt's outcome (handler key, "delivered"/"failed"/"dead"/"gone", and for a
    #: delivery the seconds since its event was committed): the metrics' hook.
    _on_outcome: Callable[[str, str, float | None], None] | None = attrs.field(default=None, kw_only=True)
    _workers: dict[str, _Worker] = attrs.field(init=False)
    _stopping: threading.Event = attrs.field(factory=threading.Event, init=False)
    _started: bool = attrs.field(default=False, init=False)
    # Threads of removed routes, on their way out: stop() waits for them too.
    _leaving: list[threading.Thread] = attrs.field(factory=list, init=False, repr=False)
    # Guards _routes, _workers and each worker's route, retired and replaced.
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    # Per row whose retry time this process set: clock() - monotonic() when it set it. When the
    # difference changes, the wall clock was stepped and the stored time is moved with it.
    # Also: whose row it is, and when its retry is due on the monotonic clock.
    _scheduled: dict[int, tuple[str, float, float]] = attrs.field(factory=dict, init=False, repr=False)
    _schedule_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    @_workers.default
    def _one_worker_per_route(self) -> dict[str, _Worker]:
        return {route.identity: _Worker(route) for route in self._routes}

    @property
    def routes(self) -> tuple[Route, ...]:
        with self._lock:
            return self._routes

    def targets(self, event: Event) -> list[str]:
        """The identities of the routes that want ``event`` (what :meth:`Store.commit_reload` needs)."""
        with self._lock:
            return [route.identity for route in self._routes if event.type in route.events]

    def register(self) -> None:
        """Record the routes' names in the store (and let them adopt rows of an older schema)."""
        self._store.register_handlers({route.identity: route.key for route in self.routes}, self._clock())

    # -- threaded mode ----------------------------------------------------------------------

    def start(self) -> None:
        """Start one worker thread per route."""
        self._stopping.clear()
        self.register()
        with self._lock:
            self._started = True
            for worker in self._workers.values():
                self._start_worker(worker)

    def _start_worker(self, worker: _Worker) -> None:
        if worker.thread is not None and worker.thread.is_alive():
            return
        worker.thread = threading.Thread(
            target=self._work,
            args=(worker,),
            name=f"cvat-watch dispatch {worker.route.key}",
            # A handler stuck past stop()'s timeout must not keep the process alive; its
            # row is still pending in the database and is sent again after a restart.
            daemon=True,
        )
        worker.thread.start()

    def update_routes(self, routes: Iterable[Route]) -> list[Route]:
        """Apply a reload's routes without waiting for any attempt; returns the routes now in use.

        Unchanged routes (same identity and options) keep their worker, handler and attempt in
        flight, and the new duplicate's handler is closed. A changed route's worker takes the
        new handler for its next attempt and closes the old one when its attempt in flight is
        over. A removed route's worker finishes that attempt, closes its handler and leaves;
        its pending rows stay bound to it (orphaned) and are never handed to another route.
        """
        new_routes = list(routes)
        _check_unique(new_routes)
        unused: list[Route] = []
        with self._lock:
            wanted = {route.identity: route for route in new_routes}
            for identity, worker in self._workers.items():
                if identity not in wanted:
                    worker.retired = True
                    worker.wakeup.set()
            in_use = []
            for route in new_routes:
                existing = self._workers.get(route.identity)
                if existing is None:
                    worker = self._workers[route.identity] = _Worker(route)
                    if self._started:
                        self._start_worker(worker)
                else:
                    worker = existing
                    worker.retired = False
                    if route.same_as(worker.route):
                        if route.handler is not worker.route.handler:
                            unused.append(route)
                        route = worker.route
                    else:
                        worker.replaced.append(worker.route)
                        worker.route = route
                        worker.wakeup.set()
                in_use.append(route)
            self._routes = tuple(in_use)
            # Workers that never ran (not started yet) have nothing in flight: drop them now.
            for identity in [i for i, w in self._workers.items() if w.retired and w.thread is None]:
                unused.append(self._workers.pop(identity).route)
        _close(unused)
        try:
            self.register()
        except CvatWatchError as error:
            # Only the names shown by `deliveries` wait for the next start; delivery goes on.
            log.error("reload: cannot record the handlers: %s", error)
        return in_use

    def wake(self) -> None:
        """New rows were committed: every worker looks at the store now."""
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            worker.wakeup.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Let each worker finish its in-flight attempt, then return; pending rows stay pending."""
        self._stopping.set()
        self.wake()
        deadline = time.monotonic() + timeout
        with self._lock:
            self._started = False
            workers = list(self._workers.values())
            leaving, self._leaving = self._leaving, []
        for gone in leaving:
            gone.join(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            thread = worker.thread
            if thread is None:
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning(
                    "handler %s is still delivering after %.0f s; leaving it behind"
                    " (the delivery stays pending and is retried after a restart)",
                    worker.route.key,
                    timeout,
                )
            else:
                worker.thread = None

    def _work(self, worker: _Worker) -> None:
        while True:
            with self._lock:
                route, replaced, worker.replaced = worker.route, worker.replaced, []
                leaving = self._stopping.is_set() or worker.retired
                if worker.retired and self._workers.get(route.identity) is worker:
                    del self._workers[route.identity]
                    if worker.thread is not None:
                        self._leaving.append(worker.thread)
            _close(replaced)
            if leaving:
                if worker.retired:
                    _close([route])
                return
            # Cleared before looking, so a wake() that arrives while we deliver is not lost.
            worker.wakeup.clear()
            wait = self.look(worker)
            if wait > 0:
                worker.wakeup.wait(wait)

    def look(self, worker: _Worker) -> float:
        """One look at the store for ``worker``: attempt what is due; how long to wait before the next."""
        route = worker.route
        if route.group_wait is not None:
            return self._look_groups(route)
        try:
            self._follow_clock_step()
            rows = self._store.due_deliveries(route.identity, self._clock())
            self._deliver(route, rows, now=None, stopping=self._stopping, woken=worker.wakeup)
            due = self._store.next_due_time(route.identity)
        except CvatWatchError as error:
            log.error("dispatch %s: %s; trying again in %.0f s", route.key, error, STORE_FAILURE_WAIT)
            return STORE_FAILURE_WAIT
        # More due rows (a full batch, or a task's next event) make the wait zero: loop at once.
        waits = [MAX_IDLE_WAIT]
        if due is not None:
            waits.append(due - self._clock())
        # Wake for the next retry this worker set by the monotonic clock too: after the wall
        # clock was set back, the stored time lies far ahead, and the look at that moment
        # follows the step and finds the row due.
        retry = self._next_retry(route.identity)
        if retry is not None:
            waits.append(retry)
        return min(waits)

    def _next_retry(self, identity: str) -> float | None:
        """Seconds (monotonic) until the earliest future retry this process set for ``identity``."""
        now = self._monotonic()
        with self._schedule_lock:
            ahead = [
                due - now for key, _offset, due in self._scheduled.values() if key == identity and due > now
            ]
        return min(ahead, default=None)

    def _follow_clock_step(self) -> None:
        """Move the retry times this process set by the step the wall clock took since it set them."""
        offset = self._clock() - self._monotonic()
        with self._schedule_lock:
            moves = {
                row: offset - was
                for row, (_identity, was, _due) in self._scheduled.items()
                if abs(offset - was) > CLOCK_STEP_TOLERANCE
            }
            if not moves:
                return
            self._store.shift_retries(moves)
            for row in moves:
                identity, _was, due = self._scheduled[row]
                self._scheduled[row] = (identity, offset, due)
        step = max(moves.values(), key=abs)
        log.warning("the wall clock was stepped by %+.0f s; %d retry time(s) moved with it", step, len(moves))

    # -- synchronous mode -------------------------------------------------------------------

    def run_once(self, *, now: float | None = None) -> int:
        """Attempt every due delivery of every route once, in this thread; the number of attempts.

        A delivery that succeeds makes the next event of its task due, and that one is attempted
        too; a delivery that fails is not attempted again in this call.
        """
        attempts = 0
        self.register()
        for route in self.routes:
            if route.group_wait is not None:
                attempts += self._run_groups_once(route, now=now)
                continue
            attempted: set[int] = set()
            while True:
                when = now if now is not None else self._clock()
                rows = [r for r in self._store.due_deliveries(route.identity, when) if r.id not in attempted]
                if not rows:
                    break
                attempted.update(row.id for row in rows)
                attempts += self._deliver(route, rows, now=now)
        return attempts

    # -- attempts ---------------------------------------------------------------------------

    def _deliver(
        self,
        route: Route,
        rows: Sequence[Delivery],
        *,
        now: float | None,
        stopping: threading.Event | None = None,
        woken: threading.Event | None = None,
    ) -> int:
        """Attempt ``rows`` in order until done, stopping, or the target is gone; the attempts made.

        When ``woken`` is set (new rows were committed), the rest of the batch is left for the
        next look at the store, where another watch's new row takes its turn before them.
        """
        for count, row in enumerate(rows):
            if stopping is not None and stopping.is_set():
                return count
            if woken is not None and woken.is_set() and count:
                return count
            if not self._attempt(route, row, now=now):
                # The target is gone: the rest of the batch was marked gone with it.
                return count + 1
        return len(rows)

    def _attempt(self, route: Route, row: Delivery, *, now: float | None) -> bool:
        """One attempt and its bookkeeping; False when the target turned out to be gone."""
        try:
            route.handler.deliver(row.payload)
        except DeliveryError as error:
            return self._failed(route, row, error, now=now)
        except Exception as error:
            # A bug in a handler must not kill its worker: count it as a failure that may pass.
            log.error(
                "handler %s raised an unexpected error on event %s",
                route.key,
                row.event_id,
                exc_info=True,
            )
            return self._failed(route, row, DeliveryError(repr(error), retry=True), now=now)
        when = now if now is not None else self._clock()
        self._store.record_delivered(row.id, when)
        self._remember_schedule(row.id, None)
        self._report(route.key, "delivered", when - row.created_at)
        return True

    def _report(self, key: str, outcome: str, latency: float | None = None) -> None:
        if self._on_outcome is not None:
            try:
                self._on_outcome(key, outcome, latency)
            except Exception:  # counting must never cost a delivery
                log.warning("the delivery outcome hook failed", exc_info=True)

    def _remember_schedule(self, row: int, schedule: tuple[str, float, float] | None) -> None:
        with self._schedule_lock:
            if schedule is None:
                self._scheduled.pop(row, None)
            else:
                self._scheduled[row] = schedule

    def _failed(self, route: Route, row: Delivery, error: DeliveryError, *, now: float | None) -> bool:
        when = now if now is not None else self._clock()
        # The two clocks' difference as the retry time is set: see _follow_clock_step.
        monotonic = self._monotonic()
        clocks = when - monotonic
        message = str(error)
        attempts = row.attempts + 1
        if error.gone:
            self._store.record_failure(row.id, message, when, when)
            self._store.mark_gone(route.identity, message, when)
            with self._schedule_lock:  # every pending row of the route is gone with it
                for gone in [key for key, value in self._scheduled.items() if value[0] == route.identity]:
                    del self._scheduled[gone]
            self._report(route.key, "gone")
            log.warning(
                "handler %s: the target is gone (%s); event %s and every pending and future"
                " delivery to it are dropped until a redeliver",
                route.key,
                message,
                row.event_id,
            )
            return False
        next_attempt = self.next_attempt_at(route, attempts, error, when) if error.retry else None
        self._store.record_failure(row.id, message, when, next_attempt)
        self._report(route.key, "dead" if next_attempt is None else "failed")
        self._remember_schedule(
            row.id,
            (route.identity, clocks, monotonic + next_attempt - when)
            if next_attempt is not None and now is None
            else None,
        )
        if next_attempt is None:
            reason = "not retryable" if not error.retry else f"after {attempts} attempts"
            log.warning(
                "handler %s: event %s failed: %s; giving up (%s), kept as dead letter %d",
                route.key,
                row.event_id,
                message,
                reason,
                row.id,
            )
        else:
            log.warning(
                "handler %s: event %s failed (attempt %d): %s; next attempt in %.1f s",
                route.key,
                row.event_id,
                attempts,
                message,
                next_attempt - when,
            )
        return True

    def next_attempt_at(self, route: Route, attempts: int, error: DeliveryError, now: float) -> float | None:
        """When to try again after failed attempt number ``attempts``; None once the delays are used up."""
        if attempts > len(route.retry_delays):
            return None
        delay = route.retry_delays[attempts - 1] * (1 + self._rng.uniform(-self._jitter, self._jitter))
        # A receiver's Retry-After is honoured, but only up to a day (or the longest configured
        # delay, if longer): a huge value must not park a delivery for years.
        asked = min(error.retry_after or 0.0, max(MAX_RETRY_AFTER, *route.retry_delays))
        return now + max(delay, asked)

    # -- grouped routes (digests) -------------------------------------------------------------
    #
    # The store claims a group (committed before the attempt), the handler sends it as one
    # message, and the outcome is recorded for every row of the group in one transaction.

    def _look_groups(self, route: Route) -> float:
        """look() for a grouped route: attempt the next due group; how long to wait before the next."""
        assert route.group_wait is not None
        try:
            claimed = self._store.claim_group(
                route.identity, self._clock(), wait=route.group_wait, limit=route.group_max
            )
            if claimed is not None:
                self._attempt_group(route, *claimed, now=None)
                return 0.0
            due = self._store.next_group_time(route.identity, wait=route.group_wait)
        except CvatWatchError as error:
            log.error("dispatch %s: %s; trying again in %.0f s", route.key, error, STORE_FAILURE_WAIT)
            return STORE_FAILURE_WAIT
        return MAX_IDLE_WAIT if due is None else min(MAX_IDLE_WAIT, due - self._clock())

    def _run_groups_once(self, route: Route, *, now: float | None) -> int:
        """``run_once`` for a grouped route: everything due goes out now, in groups, once each."""
        attempts = 0
        attempted: set[str] = set()
        while True:
            when = now if now is not None else self._clock()
            claimed = self._store.claim_group(
                route.identity, when, wait=0.0, limit=route.group_max, force=True
            )
            if claimed is None or claimed[0] in attempted:
                return attempts
            attempted.add(claimed[0])
            self._attempt_group(route, *claimed, now=now)
            attempts += 1

    def _attempt_group(
        self, route: Route, group_id: str, rows: Sequence[Delivery], *, now: float | None
    ) -> None:
        if not rows:
            return
        handler = route.handler
        ids = [row.id for row in rows]
        try:
            if not isinstance(handler, GroupHandler):
                raise DeliveryError(f"handler {route.key} cannot send grouped events", retry=False)
            handler.deliver_group([row.payload for row in rows], group_id=group_id)
        except Exception as exc:
            if not isinstance(exc, DeliveryError):
                log.error(
                    "handler %s raised an unexpected error on group %s", route.key, group_id, exc_info=True
                )
            error = exc if isinstance(exc, DeliveryError) else DeliveryError(repr(exc), retry=True)
            when = now if now is not None else self._clock()
            if error.gone:
                self._store.record_group(ids, when, error=str(error), next_attempt_at=when)
                self._store.mark_gone(route.identity, str(error), when)
                for _row in rows:
                    self._report(route.key, "gone")
                log.warning(
                    "handler %s: the target is gone (%s); group %s dropped", route.key, error, group_id
                )
                return
            attempts = max(row.attempts for row in rows) + 1
            next_attempt = self.next_attempt_at(route, attempts, error, when) if error.retry else None
            self._store.record_group(ids, when, error=str(error), next_attempt_at=next_attempt)
            for _row in rows:
                self._report(route.key, "dead" if next_attempt is None else "failed")
            log.warning(
                "handler %s: group %s of %d events failed (attempt %d): %s; %s",
                route.key,
                group_id,
                len(rows),
                attempts,
                error,
                "giving up, kept as dead letters"
                if next_attempt is None
                else f"next attempt in {next_attempt - when:.1f} s",
            )
            return
        when = now if now is not None else self._clock()
        self._store.record_group(ids, when)
        for row in rows:
            self._report(route.key, "delivered", when - row.created_at)


def _close(routes: Iterable[Route]) -> None:
    for route in routes:
        try:
            route.handler.close()
        except Exception:  # closing one handler must not stop the worker or the reload
            log.warning("closing handler %s failed", route.key, exc_info=True)
