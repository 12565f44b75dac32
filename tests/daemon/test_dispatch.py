"""The dispatcher: outcomes of attempts, retry timing, per-route threads, stopping, a real receiver."""

from __future__ import annotations

import collections
import http.server
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from cvat_watch.daemon.dispatch import Dispatcher, Route
from cvat_watch.daemon.events import (
    JOB_STATE_CHANGED,
    TASK_COMPLETED,
    TASK_REOPENED,
    Event,
    TaskInfo,
    event_id,
)
from cvat_watch.daemon.snapshot import Snapshot
from cvat_watch.daemon.store import Delivery, Store
from cvat_watch.errors import DeliveryError

# -- helpers ---------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def event(task_id: str, kind: str = TASK_COMPLETED, generation: int = 1) -> Event:
    return Event(
        type=kind,
        id=event_id("w", task_id, kind, generation, epoch="e"),
        timestamp="2024-05-01T10:00:00.000000Z",
        watch="w",
        project=None,
        task=TaskInfo(id=task_id, name=f"task {task_id}"),
    )


class Recording:
    """Records every event; raises the scripted errors first, one per attempt."""

    def __init__(self, *errors: BaseException) -> None:
        self.received: list[Mapping[str, Any]] = []
        self._errors = collections.deque(errors)
        self._lock = threading.Lock()

    def deliver(self, event: Mapping[str, Any]) -> None:
        with self._lock:
            self.received.append(event)
            if self._errors:
                raise self._errors.popleft()

    def close(self) -> None:
        pass


class Blocking:
    """Blocks in deliver until released (at most 10 s, so a broken test cannot hang)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.received: list[Mapping[str, Any]] = []

    def deliver(self, event: Mapping[str, Any]) -> None:
        self.received.append(event)
        self.entered.set()
        if not self.release.wait(10):
            raise DeliveryError("never released", retry=True)

    def close(self) -> None:
        pass


def route(
    key: str, handler: Any, delays: Sequence[float] = (60.0,), events: Sequence[str] = (TASK_COMPLETED,)
) -> Route:
    return Route(key=key, handler=handler, events=frozenset(events), retry_delays=tuple(delays))


def commit(store: Store, dispatcher: Dispatcher, *events: Event, now: float | None = None) -> None:
    store.commit_reload(
        "w", Snapshot(watch="w"), {}, events, dispatcher.targets, time.time() if now is None else now
    )


def rows(store: Store, key: str) -> list[Delivery]:
    return sorted((r for r in store.deliveries() if r.handler_key == key), key=lambda r: r.id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "state.db")
    yield opened
    opened.close()


# -- routing and synchronous delivery --------------------------------------------------------


def test_targets_are_the_routes_that_want_the_event_type(store: Store) -> None:
    """targets() names the routes whose event types include the event's, in route order."""
    dispatcher = Dispatcher(
        store,
        [
            route("all", Recording(), events=(TASK_COMPLETED, TASK_REOPENED, JOB_STATE_CHANGED)),
            route("done", Recording()),
            route("reopened", Recording(), events=(TASK_REOPENED,)),
        ],
    )
    assert dispatcher.targets(event("1")) == ["all", "done"]
    assert dispatcher.targets(event("1", TASK_REOPENED)) == ["all", "reopened"]


def test_route_keys_must_be_unique(store: Store) -> None:
    """Two routes with one identity are refused: their delivery rows would be indistinguishable."""
    with pytest.raises(ValueError, match="share the identity"):
        Dispatcher(store, [route("a", Recording()), route("a", Recording())])


def test_run_once_sends_the_stored_payload(store: Store) -> None:
    """run_once hands each due delivery's stored payload to its handler and records success."""
    handler = Recording()
    dispatcher = Dispatcher(store, [route("a", handler)])
    e = event("1")
    commit(store, dispatcher, e, now=1.0)
    assert dispatcher.run_once(now=2.0) == 1
    assert handler.received == [e.to_payload()]
    (row,) = rows(store, "a")
    assert (row.status, row.attempts, row.delivered_at) == ("delivered", 1, 2.0)
    assert dispatcher.run_once(now=3.0) == 0


def test_run_once_sends_a_tasks_events_in_order(store: Store) -> None:
    """One run_once delivers every queued event of a task, oldest first."""
    handler = Recording()
    dispatcher = Dispatcher(store, [route("a", handler, events=(TASK_COMPLETED, TASK_REOPENED))])
    commit(store, dispatcher, event("1"), event("1", TASK_REOPENED), event("1", generation=2), now=1.0)
    assert dispatcher.run_once(now=1.0) == 3
    assert [(p["type"], p["id"]) for p in handler.received] == [
        (TASK_COMPLETED, event("1").id),
        (TASK_REOPENED, event("1", TASK_REOPENED).id),
        (TASK_COMPLETED, event("1", generation=2).id),
    ]


def test_retry_after_is_honoured(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """A receiver's retry_after beyond the configured delay sets the next attempt; one log line says so."""
    handler = Recording(DeliveryError("HTTP 429 from http://hook/x", retry=True, retry_after=30.0))
    dispatcher = Dispatcher(store, [route("a", handler, delays=(1.0, 1.0))])
    commit(store, dispatcher, event("1"), now=100.0)
    with caplog.at_level(logging.WARNING, logger="cvat_watch.daemon.dispatch"):
        assert dispatcher.run_once(now=100.0) == 1
    (row,) = rows(store, "a")
    assert (row.status, row.attempts, row.next_attempt_at, row.last_error) == (
        "pending",
        1,
        130.0,
        "HTTP 429 from http://hook/x",
    )
    (record,) = caplog.records
    message = record.getMessage()
    assert all(part in message for part in ("a", event("1").id, "HTTP 429", "30.0 s"))


def test_retry_delay_is_jittered_within_bounds(store: Store) -> None:
    """The next attempt is the configured delay spread by at most ± jitter."""
    dispatcher = Dispatcher(
        store,
        [route("a", Recording(*[DeliveryError("down", retry=True)] * 20), delays=(10.0,))],
        jitter=0.1,
        rng=random.Random(7),
    )
    commit(store, dispatcher, *[event(str(t)) for t in range(20)], now=0.0)
    assert dispatcher.run_once(now=0.0) == 20
    delays = {row.next_attempt_at for row in rows(store, "a")}
    assert all(d is not None and 9.0 <= d <= 11.0 for d in delays)
    assert len(delays) > 1


def test_not_retryable_is_dead_at_once(store: Store) -> None:
    """A DeliveryError with retry=False makes the delivery a dead letter after one attempt."""
    handler = Recording(DeliveryError("HTTP 400", retry=False))
    dispatcher = Dispatcher(store, [route("a", handler, delays=(1, 2, 3))])
    commit(store, dispatcher, event("1"), now=1.0)
    dispatcher.run_once(now=1.0)
    (row,) = rows(store, "a")
    assert (row.status, row.attempts, row.next_attempt_at, row.last_error) == ("dead", 1, None, "HTTP 400")


def test_gone_target(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """A gone answer marks the handler gone with all its pending rows; other routes carry on."""
    gone = Recording(DeliveryError("HTTP 410 from http://hook/x", retry=False, gone=True))
    other = Recording()
    dispatcher = Dispatcher(store, [route("hook", gone), route("log", other)])
    commit(store, dispatcher, event("1"), event("2"), now=1.0)
    with caplog.at_level(logging.WARNING, logger="cvat_watch.daemon.dispatch"):
        assert dispatcher.run_once(now=1.0) == 3
    assert len(gone.received) == 1
    assert [(r.status, r.attempts) for r in rows(store, "hook")] == [("gone", 1), ("gone", 0)]
    assert [r.status for r in rows(store, "log")] == ["delivered", "delivered"]
    assert store.handler_status()["hook"] == "gone: HTTP 410 from http://hook/x"
    assert any("gone" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    commit(store, dispatcher, event("3"), now=2.0)
    assert rows(store, "hook")[-1].task_id == "2"


# -- worker threads --------------------------------------------------------------------------


def test_fractional_delays_end_dead_after_three_attempts(store: Store) -> None:
    """With retry delays [0.05, 0.05], an always failing target is attempted 3 times, then dead."""
    handler = Recording(*[DeliveryError("HTTP 503", retry=True)] * 10)
    dispatcher = Dispatcher(store, [route("a", handler, delays=(0.05, 0.05))])
    commit(store, dispatcher, event("1"))
    dispatcher.start()
    try:
        wait_for(lambda: rows(store, "a")[0].status == "dead", "the delivery to die")
    finally:
        dispatcher.stop()
    (row,) = rows(store, "a")
    assert (row.attempts, row.next_attempt_at) == (3, None)
    assert len(handler.received) == 3


def test_a_handler_bug_does_not_kill_its_worker(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception counts as a retryable failure, logged with its traceback."""
    handler = Recording(RuntimeError("bug in handler"))
    dispatcher = Dispatcher(store, [route("a", handler, delays=(0.01,))])
    commit(store, dispatcher, event("1"))
    dispatcher.start()
    try:
        wait_for(lambda: rows(store, "a")[0].status == "delivered", "the second attempt to succeed")
    finally:
        dispatcher.stop()
    (row,) = rows(store, "a")
    assert (row.attempts, row.last_error) == (2, "RuntimeError('bug in handler')")
    assert any(r.exc_info and "bug in handler" in str(r.exc_info[1]) for r in caplog.records)


def test_a_slow_route_does_not_delay_another(store: Store) -> None:
    """While one handler is stuck in a delivery, another route's deliveries go through."""
    slow, fast = Blocking(), Recording()
    dispatcher = Dispatcher(store, [route("slow", slow), route("fast", fast)])
    commit(store, dispatcher, event("1"), event("2"))
    dispatcher.start()
    try:
        wait_for(lambda: len(fast.received) == 2, "the fast route to deliver both events")
        assert slow.entered.is_set()
        assert not slow.release.is_set()
        assert [r.status for r in rows(store, "slow")] == ["pending", "pending"]
    finally:
        slow.release.set()
        dispatcher.stop()


def test_wake_makes_workers_look_now(store: Store) -> None:
    """A worker sleeping until its next due time (up to a minute) picks up new rows at wake()."""
    handler = Recording()
    dispatcher = Dispatcher(store, [route("a", handler)])
    commit(store, dispatcher, event("1"))
    dispatcher.start()
    try:
        wait_for(lambda: len(handler.received) == 1, "the first delivery")
        commit(store, dispatcher, event("2"))
        dispatcher.wake()
        wait_for(lambda: len(handler.received) == 2, "the woken worker to deliver", timeout=10)
    finally:
        dispatcher.stop()


def test_stop_finishes_the_in_flight_attempt_and_keeps_pending_rows(store: Store, tmp_path: Path) -> None:
    """stop() returns once the current delivery finishes; rows not yet attempted stay pending in the file."""
    handler = Blocking()
    dispatcher = Dispatcher(store, [route("a", handler)])
    commit(store, dispatcher, event("1"), event("2"))
    dispatcher.start()
    wait_for(handler.entered.is_set, "the first delivery to start")
    stopper = threading.Thread(target=dispatcher.stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive(), "stop() returned while a delivery was in flight"
    handler.release.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert len(handler.received) == 1
    assert [(r.task_id, r.status, r.attempts) for r in rows(store, "a")] == [
        ("1", "delivered", 1),
        ("2", "pending", 0),
    ]
    with Store.open(tmp_path / "state.db") as reopened:
        assert [r.task_id for r in reopened.due_deliveries("a", now=time.time())] == ["2"]


# -- a real receiver -------------------------------------------------------------------------


class _Receiver(http.server.ThreadingHTTPServer):
    """Answers POSTs with the scripted statuses, then 200; records (event id, status) per request."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, statuses: Sequence[int]) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.statuses = collections.deque(statuses)
        self.requests: list[tuple[str, int, bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            status = self.server.statuses.popleft() if self.server.statuses else 200
            self.server.requests.append((json.loads(body)["id"], status, body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Posting:
    """A minimal webhook: POST the event as JSON with urllib; 5xx and network errors are retryable."""

    def __init__(self, url: str) -> None:
        self.url = url
        # No proxies: the test must talk to 127.0.0.1 directly whatever the environment says.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def deliver(self, event: Mapping[str, Any]) -> None:
        request = urllib.request.Request(
            self.url, data=json.dumps(event).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with self._opener.open(request, timeout=5):
                pass
        except urllib.error.HTTPError as error:
            code = error.code
            raise DeliveryError(f"HTTP {code}", retry=code >= 500, gone=code == 410) from None
        except OSError as error:
            raise DeliveryError(f"network: {error}", retry=True) from None

    def close(self) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver([500, 500])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_receiver_failing_twice_then_recovering_gets_the_event_once(
    store: Store, receiver: _Receiver
) -> None:
    """A receiver answering 500, 500, 200 sees three attempts with one event id and accepts it once."""
    dispatcher = Dispatcher(store, [route("hook", Posting(receiver.url), delays=(0.02, 0.05, 0.1))])
    e = event("1")
    commit(store, dispatcher, e)
    dispatcher.start()
    try:
        wait_for(lambda: rows(store, "hook")[0].status == "delivered", "the third attempt to succeed")
    finally:
        dispatcher.stop()
    assert dispatcher.run_once() == 0
    assert [(event_key, status) for event_key, status, _ in receiver.requests] == [
        (e.id, 500),
        (e.id, 500),
        (e.id, 200),
    ]
    assert len({body for _, _, body in receiver.requests}) == 1
    (row,) = rows(store, "hook")
    assert (row.attempts, row.last_error) == (3, "HTTP 500")


def test_a_huge_retry_after_is_capped_at_a_day(store: Store) -> None:
    """A receiver asking to wait a year gets its retry a day later, not a year later."""
    handler = Recording(DeliveryError("HTTP 503", retry=True, retry_after=365 * 86400.0))
    dispatcher = Dispatcher(store, [route("a", handler, delays=(1.0, 1.0))], jitter=0.0)
    commit(store, dispatcher, event("1"), now=100.0)
    dispatcher.run_once(now=100.0)
    (row,) = rows(store, "a")
    assert row.next_attempt_at == 100.0 + 86400.0


# -- clock steps: retry times follow the monotonic clock ---------------------------------------------


class Clocks:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.mono = 500.0

    def step(self, seconds: float) -> None:
        """The wall clock is set (NTP step, an operator): the monotonic one does not move."""
        self.wall += seconds

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_a_stepped_wall_clock_neither_defers_nor_hastens_a_retry(store: Store, step: float) -> None:
    """A retry due 10 s after a failure is attempted 10 s later on the monotonic clock whether the
    wall clock was set back an hour meanwhile (not an hour late) or forward (not at once)."""
    clocks = Clocks()
    handler = Recording(DeliveryError("503", retry=True))
    # Both clocks the dispatcher reads are the test's; the threads' sleeps stay real (and short:
    # the test wakes the worker whenever it has moved the clocks).
    dispatcher = Dispatcher(
        store,
        [route("a", handler, delays=(10.0, 10.0))],
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
        jitter=0.0,
    )
    commit(store, dispatcher, event("1"), now=clocks.wall)
    dispatcher.start()
    try:
        wait_for(lambda: [r.attempts for r in rows(store, "a")] == [1], "the failed first attempt")
        (failed,) = rows(store, "a")
        assert failed.next_attempt_at == clocks.wall + 10.0
        clocks.step(step)
        clocks.advance(5.0)
        dispatcher.wake()
        # The worker looked (it moved the stored retry time with the step) and did not attempt.
        wait_for(
            lambda: rows(store, "a")[0].next_attempt_at == failed.next_attempt_at + step,
            "the retry time to follow the step",
        )
        assert len(handler.received) == 1
        clocks.advance(5.0)
        dispatcher.wake()
        wait_for(lambda: rows(store, "a")[0].status == "delivered", "the retry, 10 s after the failure")
        assert len(handler.received) == 2
    finally:
        dispatcher.stop()


# -- reloads: update_routes keeps what did not change --------------------------------------------------


def test_an_unchanged_route_keeps_its_attempt_in_flight_across_updates(store: Store) -> None:
    """Two updates with the same routes while a delivery is in flight: the attempt finishes on the
    old handler and is recorded once; the duplicate handlers of the update are closed, not used."""
    handler = Blocking()
    first = Route("a", handler, frozenset({TASK_COMPLETED}), (60.0,), identity="webhook:1", options="x")
    dispatcher = Dispatcher(store, [first])
    commit(store, dispatcher, event("1"))
    dispatcher.start()
    try:
        wait_for(handler.entered.is_set, "the delivery to start")
        duplicates = [Recording(), Recording()]
        for duplicate in duplicates:
            same = Route(
                "a", duplicate, frozenset({TASK_COMPLETED}), (60.0,), identity="webhook:1", options="x"
            )
            (kept,) = dispatcher.update_routes([same])
            assert kept.handler is handler
        handler.release.set()
        wait_for(lambda: rows(store, "a")[0].status == "delivered", "the in-flight attempt recorded")
        assert [(r.attempts, r.status) for r in rows(store, "a")] == [(1, "delivered")]
        assert len(handler.received) == 1
        assert all(d.received == [] for d in duplicates)
    finally:
        handler.release.set()
        dispatcher.stop()


def test_a_removed_route_finishes_its_attempt_and_its_rows_go_nowhere_else(store: Store) -> None:
    """A route removed while delivering records its attempt and leaves; its other pending row stays
    bound to it, and a new route (another identity) never gets it."""
    old_handler, new_handler = Blocking(), Recording()
    old = Route("hook", old_handler, frozenset({TASK_COMPLETED}), (60.0,), identity="webhook:old")
    dispatcher = Dispatcher(store, [old])
    commit(store, dispatcher, event("1"), event("2"))
    dispatcher.start()
    try:
        wait_for(old_handler.entered.is_set, "the delivery to start")
        new = Route("hook", new_handler, frozenset({TASK_COMPLETED}), (60.0,), identity="webhook:new")
        dispatcher.update_routes([new])
        commit(store, dispatcher, event("3"))
        dispatcher.wake()
        wait_for(lambda: len(new_handler.received) == 1, "the new route's own event")
        old_handler.release.set()
        wait_for(lambda: rows(store, "hook")[0].status == "delivered", "the old route's attempt recorded")
        assert [e["task"]["id"] for e in new_handler.received] == ["3"]
        by_task = {r.task_id: (r.handler_id, r.status) for r in store.deliveries()}
        assert by_task == {
            "1": ("webhook:old", "delivered"),
            "2": ("webhook:old", "pending"),
            "3": ("webhook:new", "delivered"),
        }
        assert len(old_handler.received) == 1
    finally:
        old_handler.release.set()
        dispatcher.stop()


def test_a_changed_route_takes_its_new_handler_for_the_next_attempt(store: Store) -> None:
    """Same identity, other options: the next row goes through the new handler."""
    before, after = Recording(), Recording()
    dispatcher = Dispatcher(
        store, [Route("a", before, frozenset({TASK_COMPLETED}), (60.0,), identity="i", options=1)]
    )
    commit(store, dispatcher, event("1"))
    dispatcher.start()
    try:
        wait_for(lambda: len(before.received) == 1, "the first event")
        dispatcher.update_routes(
            [Route("a", after, frozenset({TASK_COMPLETED}), (60.0,), identity="i", options=2)]
        )
        commit(store, dispatcher, event("2"))
        dispatcher.wake()
        wait_for(lambda: len(after.received) == 1, "the second event through the new handler")
        assert len(before.received) == 1
    finally:
        dispatcher.stop()
