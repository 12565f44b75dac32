"""The daemon's Prometheus metrics, through ``prometheus-client``.

Counters and histograms are fed by small hooks: the dispatcher reports each delivery outcome,
the service each reload. What the outbox holds is not counted along the way but read from the
state database at scrape time by :class:`OutboxCollector`, so that after a restart (or a
``cvat-watch redeliver`` from another process) the pending counts are right at once.

Each :class:`Metrics` has its own registry: two daemons in one test process never share a
counter, and nothing registers into the library-global default registry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector

from cvat_watch.daemon.store import OutboxSummary

__all__ = ["CONTENT_TYPE", "DeliveryOutcome", "Metrics", "OutboxCollector", "WatchCounts"]

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: What the dispatcher reports per attempt: delivered; failed (retried later); dead (given up);
#: gone (the target said it is gone for good).
DeliveryOutcome = str

# From a receiver answering at once to one that was down for a day and retried.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 21600, 86400)


@attrs.frozen
class WatchCounts:
    """One watch's tasks as its last good load saw them."""

    tasks: int
    completed: int


@attrs.frozen
class ScrapeState:
    """What a scrape reads from the state: the outbox per handler, and the watches' task counts."""

    outbox: Mapping[str, OutboxSummary]
    handlers: Sequence[str]
    watches: Mapping[str, WatchCounts]


class OutboxCollector:
    """The gauges read from the state at scrape time: the outbox per handler, the tasks per watch."""

    def __init__(self, read: Callable[[], ScrapeState | None]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        # Registering must not run a query: describe with empty families of the same names.
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        state = self._read()
        yield from self._families(state)

    @staticmethod
    def _families(state: ScrapeState | None = None) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "cvat_watch_outbox_pending", "Deliveries waiting to be sent (incl. retrying)", labels=["handler"]
        )
        oldest = GaugeMetricFamily(
            "cvat_watch_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending delivery, since its event was committed (0 when none)",
            labels=["handler"],
        )
        retrying = GaugeMetricFamily(
            "cvat_watch_outbox_retrying",
            "Pending deliveries that failed at least once",
            labels=["handler"],
        )
        dead = GaugeMetricFamily(
            "cvat_watch_outbox_dead",
            "Deliveries given up on (dead letters, and rows of a target that is gone)",
            labels=["handler"],
        )
        tasks = GaugeMetricFamily("cvat_watch_tasks", "Tasks in the watch's last good load", labels=["watch"])
        completed = GaugeMetricFamily(
            "cvat_watch_tasks_completed", "Completed tasks in the watch's last good load", labels=["watch"]
        )
        if state is not None:
            # Configured handlers show 0 before their first event; keys only in the state (a
            # handler since removed from the config) still show what they left behind.
            for key in sorted(set(state.handlers) | set(state.outbox)):
                summary = state.outbox.get(key, OutboxSummary())
                pending.add_metric([key], summary.pending)
                oldest.add_metric([key], summary.oldest_pending_age or 0.0)
                retrying.add_metric([key], summary.retrying)
                dead.add_metric([key], summary.dead + summary.gone)
            for name, counts in sorted(state.watches.items()):
                tasks.add_metric([name], counts.tasks)
                completed.add_metric([name], counts.completed)
        yield from (pending, oldest, retrying, dead, tasks, completed)


@attrs.define(eq=False)
class Metrics:
    """The registry and its instruments; the hooks the dispatcher and the service call."""

    registry: CollectorRegistry = attrs.field(factory=CollectorRegistry)
    clock: Callable[[], float] = time.time
    events: Counter = attrs.field(init=False)
    deliveries: Counter = attrs.field(init=False)
    latency: Histogram = attrs.field(init=False)
    reloads: Counter = attrs.field(init=False)
    reload_last_success: Gauge = attrs.field(init=False)
    config_successful: Gauge = attrs.field(init=False)
    config_last_success: Gauge = attrs.field(init=False)
    cvat_poll_last_success: Gauge = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        registry = self.registry
        self.events = Counter(
            "cvat_watch_events", "Events committed to the outbox", ["watch", "type"], registry=registry
        )
        self.deliveries = Counter(
            "cvat_watch_deliveries",
            "Delivery attempts by outcome (delivered, failed, dead, gone)",
            ["handler", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "cvat_watch_delivery_latency_seconds",
            "From the event's commit to the receiver's acknowledgement",
            ["handler"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.reloads = Counter(
            "cvat_watch_reloads",
            "Reloads of a watch's files by outcome (committed, unchanged, failed, error)",
            ["watch", "outcome"],
            registry=registry,
        )
        self.reload_last_success = Gauge(
            "cvat_watch_reload_last_success_timestamp_seconds",
            "When the watch's files were last loaded successfully",
            ["watch"],
            registry=registry,
        )
        self.config_successful = Gauge(
            "cvat_watch_config_last_reload_successful",
            "1 when the last configuration (re)load succeeded, 0 when it failed",
            registry=registry,
        )
        self.config_last_success = Gauge(
            "cvat_watch_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully",
            registry=registry,
        )
        self.cvat_poll_last_success = Gauge(
            "cvat_watch_cvat_poll_last_success_timestamp_seconds",
            "When a CVAT source last polled its server successfully",
            ["watch"],
            registry=registry,
        )
        ProcessCollector(namespace="cvat_watch", registry=registry)

    # -- hooks ------------------------------------------------------------------------------

    def delivery(self, handler: str, outcome: DeliveryOutcome, latency: float | None = None) -> None:
        """The dispatcher's hook: one attempt's outcome, and for a delivery its latency."""
        self.deliveries.labels(handler, outcome).inc()
        if latency is not None:
            self.latency.labels(handler).observe(max(0.0, latency))

    def reloaded(self, watch: str, status: str, event_types: Sequence[str] = ()) -> None:
        """The service's hook after each reload of a watch (``status`` of its outcome, or "error")."""
        self.reloads.labels(watch, status).inc()
        if status in ("committed", "unchanged"):
            self.reload_last_success.labels(watch).set(self.clock())
        for event_type in event_types:
            self.events.labels(watch, event_type).inc()

    def config_loaded(self, successful: bool) -> None:
        self.config_successful.set(1 if successful else 0)
        if successful:
            self.config_last_success.set(self.clock())

    def cvat_polled(self, watch: str, at: float | None = None) -> None:
        """A CVAT source's last successful poll of its server (``at``, or now)."""
        self.cvat_poll_last_success.labels(watch).set(self.clock() if at is None else at)

    def add_collector(self, collector: OutboxCollector) -> None:
        self.registry.register(collector)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
