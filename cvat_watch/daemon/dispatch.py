"""The dispatcher: takes due rows from the outbox, calls handlers, records what happened.

Each route (one handler and the event types it wants) has its own worker thread, so a slow or
failing target never holds up another. A worker sleeps until the store's next due time for its
route (or until :meth:`Dispatcher.wake`), attempts every due delivery once, and records the
outcome: delivered, retry at a computed time, dead letter, or the whole target gone.
Handlers make one attempt per call; all retrying and sleeping happens here.
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


@attrs.frozen
class Route:
    """One target: a handler, the event types it receives, and the delays between its attempts."""

    key: str
    handler: Handler = attrs.field(repr=False)
    events: frozenset[str]
    retry_delays: tuple[float, ...] = attrs.field(converter=_delays)
    #: Seconds to gather events into one delivery (a digest; the handler must be a
    #: ``GroupHandler``), and the most events in one; None delivers each event on its own.
    group_wait: float | None = None
    group_max: int = 50


@attrs.define(eq=False)
class _Worker:
    route: Route
    wakeup: threading.Event = attrs.field(factory=threading.Event)
    thread: threading.Thread | None = None


def _random(rng: random.Random | None) -> random.Random:
    return rng if rng is not None else random.Random()


def _unique_keys(_: object, __: object, routes: tuple[Route, ...]) -> None:
    keys = [route.key for route in routes]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        # Delivery rows are keyed by route: two routes with one key would steal each other's rows.
        raise ValueError(f"two routes share the key(s) {', '.join(duplicates)}")


@attrs.define(eq=False)
class Dispatcher:
    """Delivers the outbox of ``store`` to ``routes``: threaded with :meth:`start`, or :meth:`run_once`.

    ``clock`` gives the wall-clock time stored in the database; ``jitter`` spreads each retry
    delay by up to that fraction either way, so that many rows failing together do not retry
    together.
    """

    _store: Store
    _routes: tuple[Route, ...] = attrs.field(converter=_routes, validator=_unique_keys)
    _clock: Callable[[], float] = attrs.field(default=time.time, kw_only=True)
    _jitter: float = attrs.field(default=0.1, kw_only=True)
    _rng: random.Random = attrs.field(default=None, converter=_random, kw_only=True)
    _workers: dict[str, _Worker] = attrs.field(init=False)
    _stopping: threading.Event = attrs.field(factory=threading.Event, init=False)

    @_workers.default
    def _one_worker_per_route(self) -> dict[str, _Worker]:
        return {route.key: _Worker(route) for route in self._routes}

    def targets(self, event: Event) -> list[str]:
        """The keys of the routes that want ``event`` (what :meth:`Store.commit_reload` needs)."""
        return [route.key for route in self._routes if event.type in route.events]

    # -- threaded mode ----------------------------------------------------------------------

    def start(self) -> None:
        """Start one worker thread per route."""
        self._stopping.clear()
        for worker in self._workers.values():
            if worker.thread is not None and worker.thread.is_alive():
                continue
            worker.thread = threading.Thread(
                target=self._work,
                args=(worker,),
                name=f"cvat-watch dispatch {worker.route.key}",
                # A handler stuck past stop()'s timeout must not keep the process alive; its
                # row is still pending in the database and is sent again after a restart.
                daemon=True,
            )
            worker.thread.start()

    def wake(self) -> None:
        """New rows were committed: every worker looks at the store now."""
        for worker in self._workers.values():
            worker.wakeup.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Let each worker finish its in-flight attempt, then return; pending rows stay pending."""
        self._stopping.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            if worker.thread is None:
                continue
            worker.thread.join(max(0.0, deadline - time.monotonic()))
            if worker.thread.is_alive():
                log.warning(
                    "handler %s is still delivering after %.0f s; leaving it behind"
                    " (the delivery stays pending and is retried after a restart)",
                    worker.route.key,
                    timeout,
                )
            else:
                worker.thread = None

    def _work(self, worker: _Worker) -> None:
        if worker.route.group_wait is not None:
            self._work_groups(worker)
            return
        key = worker.route.key
        while not self._stopping.is_set():
            # Cleared before looking, so a wake() that arrives while we deliver is not lost.
            worker.wakeup.clear()
            try:
                rows = self._store.due_deliveries(key, self._clock())
                self._deliver(worker.route, rows, now=None, stopping=self._stopping, woken=worker.wakeup)
                due = self._store.next_due_time(key)
            except CvatWatchError as error:
                log.error("dispatch %s: %s; trying again in %.0f s", key, error, STORE_FAILURE_WAIT)
                worker.wakeup.wait(STORE_FAILURE_WAIT)
                continue
            # More due rows (a full batch, or a task's next event) make the wait zero: loop at once.
            wait = MAX_IDLE_WAIT if due is None else min(MAX_IDLE_WAIT, due - self._clock())
            if wait > 0:
                worker.wakeup.wait(wait)

    # -- synchronous mode -------------------------------------------------------------------

    def run_once(self, *, now: float | None = None) -> int:
        """Attempt every due delivery of every route once, in this thread; the number of attempts.

        A delivery that succeeds makes the next event of its task due, and that one is attempted
        too; a delivery that fails is not attempted again in this call.
        """
        attempts = 0
        for route in self._routes:
            if route.group_wait is not None:
                attempts += self._run_groups_once(route, now=now)
                continue
            attempted: set[int] = set()
            while True:
                when = now if now is not None else self._clock()
                rows = [r for r in self._store.due_deliveries(route.key, when) if r.id not in attempted]
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
        self._store.record_delivered(row.id, now if now is not None else self._clock())
        return True

    def _failed(self, route: Route, row: Delivery, error: DeliveryError, *, now: float | None) -> bool:
        when = now if now is not None else self._clock()
        message = str(error)
        attempts = row.attempts + 1
        if error.gone:
            self._store.record_failure(row.id, message, when, when)
            self._store.mark_gone(route.key, message, when)
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

    def _work_groups(self, worker: _Worker) -> None:
        route = worker.route
        assert route.group_wait is not None
        while not self._stopping.is_set():
            worker.wakeup.clear()
            try:
                claimed = self._store.claim_group(
                    route.key, self._clock(), wait=route.group_wait, limit=route.group_max
                )
                if claimed is not None:
                    self._attempt_group(route, *claimed, now=None)
                    continue
                due = self._store.next_group_time(route.key, wait=route.group_wait)
            except CvatWatchError as error:
                log.error("dispatch %s: %s; trying again in %.0f s", route.key, error, STORE_FAILURE_WAIT)
                worker.wakeup.wait(STORE_FAILURE_WAIT)
                continue
            wait = MAX_IDLE_WAIT if due is None else min(MAX_IDLE_WAIT, due - self._clock())
            if wait > 0:
                worker.wakeup.wait(wait)

    def _run_groups_once(self, route: Route, *, now: float | None) -> int:
        """``run_once`` for a grouped route: everything due goes out now, in groups, once each."""
        attempts = 0
        attempted: set[str] = set()
        while True:
            when = now if now is not None else self._clock()
            claimed = self._store.claim_group(route.key, when, wait=0.0, limit=route.group_max, force=True)
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
                self._store.mark_gone(route.key, str(error), when)
                log.warning(
                    "handler %s: the target is gone (%s); group %s dropped", route.key, error, group_id
                )
                return
            attempts = max(row.attempts for row in rows) + 1
            next_attempt = self.next_attempt_at(route, attempts, error, when) if error.retry else None
            self._store.record_group(ids, when, error=str(error), next_attempt_at=next_attempt)
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
        self._store.record_group(ids, now if now is not None else self._clock())
