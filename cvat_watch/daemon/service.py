"""The daemon's lifecycle: watchers → runners → outbox → dispatcher, signals and systemd.

:class:`Daemon` runs one :class:`~cvat_watch.daemon.reload.WatchRunner` and one file watcher per
watch and the dispatcher, reloads the configuration on SIGHUP, stops gracefully on SIGTERM and
speaks sd_notify. :func:`run_once` is the same pipeline once, for cron.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from cvat_watch.config import STATE_FILE_NAME, Config, WatchConfig, load_config
from cvat_watch.daemon import sdnotify
from cvat_watch.daemon.cvat.push import CvatWebhooks
from cvat_watch.daemon.cvat.source import CvatSource
from cvat_watch.daemon.dispatch import Dispatcher
from cvat_watch.daemon.events import JOB_STATE_CHANGED
from cvat_watch.daemon.health import WatchdogPinger
from cvat_watch.daemon.http import HttpListener
from cvat_watch.daemon.mailbox import Mailbox
from cvat_watch.daemon.ops import Operations
from cvat_watch.daemon.reload import ReloadOutcome, WatchRunner
from cvat_watch.daemon.routes import build_routes, close_routes
from cvat_watch.daemon.store import StateLock, Store
from cvat_watch.daemon.watcher import FileWatcher
from cvat_watch.errors import ConfigError, CvatWatchError, StateLostError
from cvat_watch.eventtypes import PROJECT_EVENTS

__all__ = [
    "STATE_FILE_NAME",
    "Daemon",
    "lock_state",
    "open_store",
    "run_once",
]

log = logging.getLogger(__name__)

#: How long the main loop sleeps at most between two looks at its timers.
_MAIN_LOOP_TICK = 1.0
#: How often the WAL is copied into the database file (and at every stop).
CHECKPOINT_INTERVAL = 300.0
#: How often delivered and dead rows older than retention_days are deleted (and at start).
PRUNE_INTERVAL = 3600.0
#: SIGHUPs are gathered until none came for this long (at most _RELOAD_GATHER_MAX): a burst of
#: them, from a script or a configuration tool, is one reload.
_RELOAD_QUIET = 0.3
_RELOAD_GATHER_MAX = 2.0


def open_store(config: Config) -> Store:
    return Store.open(config.state_dir / STATE_FILE_NAME)


def lock_state(config: Config, command: str) -> StateLock:
    """The state folder's lock for ``command`` (``run``, ``once``, ``redeliver``), or StateLockedError."""
    return StateLock.acquire(config.state_dir, command=f"cvat-watch {command} --config {config.path}")


def claim_state(store: Store, config: Config) -> None:
    """Warn when the state was last used by another configuration file."""
    previous = store.claim(str(config.path))
    if previous is not None:
        log.warning(
            "the state in %s was last used by the configuration %s, now by %s: two configurations"
            " sharing one state folder mix their watches' baselines when names repeat; give each"
            " its own state_dir (or leave it out: the default is one folder per configuration file)",
            config.state_dir,
            previous,
            config.path,
        )


@attrs.define
class Daemon:
    """The long-running process: watchers → runners → outbox → dispatcher, under systemd."""

    config_path: Path
    environ: dict[str, str] = attrs.field(factory=lambda: dict(os.environ))
    _config: Config | None = None
    _store: Store | None = None
    _dispatcher: Dispatcher | None = None
    _runners: dict[str, WatchRunner] = attrs.field(factory=dict)
    _watchers: dict[str, FileWatcher] = attrs.field(factory=dict)
    # SimpleQueue.put is reentrant, so signal handlers may use it while the main loop waits.
    _inbox: queue.SimpleQueue[tuple[str, str]] = attrs.field(factory=queue.SimpleQueue)
    _last_recheck: dict[str, float] = attrs.field(factory=dict)
    # Set by SIGTERM/SIGINT at once, so that a reload in progress can give up between phases.
    _stop_requested: threading.Event = attrs.field(factory=threading.Event)
    _last_checkpoint: float = 0.0
    _last_prune: float = 0.0
    # [watch.cvat] sources (one thread each) and the [http] listener they take CVAT's webhooks on.
    _sources: dict[str, CvatSource] = attrs.field(factory=dict)
    _http: HttpListener | None = None
    _cvat_webhooks: CvatWebhooks = attrs.field(factory=CvatWebhooks)
    # Code that serves routes on the listener (/metrics, /healthz, the status page...) registers an
    # installer once; it is applied to the listener now and to every new one (a SIGHUP may move it).
    _http_installers: list[Callable[[HttpListener], None]] = attrs.field(factory=list)
    # What operators see: metrics, health, the status page (see ops.py); the watchdog's pinger.
    _ops: Operations | None = None
    _pinger: WatchdogPinger | None = None
    # Requests of admin commands (`redeliver`) while this process holds the state's lock.
    _mailbox: Mailbox | None = None

    @property
    def ops(self) -> Operations | None:
        return self._ops

    @property
    def http(self) -> HttpListener | None:
        """The daemon's HTTP listener (``[http]``); None without one."""
        return self._http

    def add_http_routes(self, installer: Callable[[HttpListener], None]) -> None:
        """Call ``installer(listener)`` for the current listener and for every later one."""
        self._http_installers.append(installer)
        if self._http is not None:
            installer(self._http)

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; SIGHUP reloads the configuration. Returns the exit code.

        StateLockedError when another process uses the state; StateLostError (after a clean
        stop) when the state database is deleted or replaced while running.
        """
        self._config = load_config(self.config_path, environ=self.environ)
        lock = lock_state(self._config, "run")
        try:
            self._store = open_store(self._config)
            claim_state(self._store, self._config)
            # The first checkpoint is one interval after the start (opening has just recovered
            # whatever WAL an earlier process left).
            self._last_checkpoint = time.monotonic()
            ops = self._ops = Operations(
                state_path=self._store.path,
                runners=lambda: self._runners,
                handlers=lambda: [route.key for route in self._dispatcher.routes] if self._dispatcher else [],
                sources=lambda: self._sources,
            )
            ops.config_loaded()
            self.add_http_routes(ops.register)
            self._mailbox = Mailbox(self._store.path.parent)
            self._pinger = WatchdogPinger.from_environment(ops.liveness, self.environ)
            if self._pinger is not None:
                self._pinger.start()
            previous = self._install_signals()
            try:
                # The listener first, so that /readyz says "not yet" during the first load.
                self._configure_http(self._config)
                self._start(self._config)
                log.info("%s", self.summary_line())
                ops.ready = True
                if not self._stop_requested.is_set():
                    self._notify_ready()
                self._loop()
            except StateLostError as error:
                log.critical("%s", error)
                raise
            finally:
                sdnotify.notify("STOPPING=1", environ=self.environ)
                log.info("stopping: finishing deliveries in flight")
                self._shutdown()
                if self._pinger is not None:
                    self._pinger.stop()
                ops.close()
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
        finally:
            lock.release()
        log.info("stopped")
        return 0

    # -- lifecycle ---------------------------------------------------------------------------

    def _start(self, config: Config) -> None:
        assert self._store is not None
        try:
            self._prune(config)
        except StateLostError:
            raise
        except CvatWatchError as error:
            log.error("state upkeep: %s; will retry", error)
        dispatcher = Dispatcher(
            self._store, build_routes(config), on_outcome=self._ops.delivery if self._ops else None
        )
        self._dispatcher = dispatcher
        for watch in config.watches:
            if self._stop_requested.is_set():
                break
            self._add_runner(watch)
        dispatcher.start()
        for runner in self._runners.values():
            self._watchers[runner.name] = self._watch(runner)
        self._sync_sources(config)

    def _sync_sources(self, config: Config) -> None:
        """One CVAT source per [watch.cvat]: unchanged ones keep running, changed ones restart.

        CVAT's webhooks are routed to the sources whose watch has a secret.
        """
        wanted = {watch.name: watch for watch in config.watches if watch.cvat is not None}
        for name in list(self._sources):
            if self._sources[name].watch != wanted.get(name):
                self._sources.pop(name).stop()
        targets = {}
        for name, watch in wanted.items():
            source = self._sources.get(name)
            if source is None:
                source = self._sources[name] = CvatSource(watch)
                source.start()
            assert watch.cvat is not None
            if watch.cvat.webhook_secret is not None:
                targets[name] = (watch.cvat.webhook_secret, source.trigger)
        self._cvat_webhooks.set_targets(targets)

    def _configure_http(self, config: Config) -> None:
        """Start, keep, move or stop the listener to match ``[http]``; routes survive a reload."""
        wanted = config.http
        current = self._http
        if current is not None and (
            wanted is None or (wanted.host, wanted.port) != (current.host, current.port)
        ):
            current.stop()
            self._http = current = None
        if wanted is None or current is not None:
            return
        listener = HttpListener(host=wanted.host, port=wanted.port)
        self._cvat_webhooks.install(listener)
        for installer in self._http_installers:
            installer(listener)
        try:
            listener.start()
        except OSError as error:
            raise ConfigError(
                f"cannot listen on {wanted.listen}: {error.strerror or error}",
                path=config.path,
                key="http.listen",
            ) from None
        self._http = listener

    def _wants_job_events(self) -> bool:
        assert self._dispatcher is not None
        return any(JOB_STATE_CHANGED in route.events for route in self._dispatcher.routes)

    def _wants_project_events(self) -> bool:
        assert self._dispatcher is not None
        return any(not route.events.isdisjoint(PROJECT_EVENTS) for route in self._dispatcher.routes)

    def _add_runner(self, watch: WatchConfig) -> WatchRunner:
        assert self._store is not None and self._dispatcher is not None
        runner = WatchRunner(
            config=watch,
            store=self._store,
            targets=self._dispatcher.targets,
            job_events=self._wants_job_events(),
            project_events=self._wants_project_events(),
        )
        with self._busy(f"loading watch {runner.name}"):
            outcome = runner.reload(force=True, interrupted=self._stop_requested.is_set)
        self._reported(runner, outcome)
        self._last_recheck[runner.name] = time.monotonic()
        if outcome.status == "failed":
            log.warning("watch %s: not loaded yet; waiting for valid files", runner.name)
        self._runners[runner.name] = runner
        return runner

    def _watch(self, runner: WatchRunner) -> FileWatcher:
        watch = runner.config

        def changed(_paths: frozenset[Path], name: str = runner.name) -> None:
            self._inbox.put(("changed", name))

        watcher = FileWatcher(
            runner.paths,
            changed,
            debounce=watch.debounce,
            max_wait=watch.max_wait,
            poll=watch.poll,
            poll_interval=watch.poll_interval,
            name=watch.name,
        )
        watcher.start()
        return watcher

    def _shutdown(self) -> None:
        # Sources first: no new files while the watchers and the dispatcher wind down.
        self._cvat_webhooks.set_targets({})
        for source in self._sources.values():
            source.stop()
        self._sources = {}
        if self._http is not None:
            self._http.stop()
            self._http = None
        for watcher in self._watchers.values():
            watcher.stop()
        self._watchers = {}
        if self._dispatcher is not None:
            self._dispatcher.stop()
            close_routes(self._dispatcher.routes)
            self._dispatcher = None
        if self._store is not None:
            with contextlib.suppress(CvatWatchError):
                self._store.checkpoint()
            self._store.close()
            self._store = None

    def _install_signals(self) -> dict[int, Any]:
        def handle(signum: int, _frame: Any) -> None:
            if signum == signal.SIGHUP:
                self._inbox.put(("reload", ""))
            else:
                self._stop_requested.set()
                self._inbox.put(("stop", ""))

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[signum] = signal.signal(signum, handle)
        return previous

    # -- main loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop_requested.is_set():
            # WATCHDOG=1 comes from the pinger's thread, as long as this loop beats (health.py).
            if self._ops is not None:
                self._ops.liveness.beat()
            if self._mailbox is not None:
                self._mailbox.serve(self._answer)
            try:
                batch = [self._inbox.get(timeout=_MAIN_LOOP_TICK)]
            except queue.Empty:
                self._periodic()
                continue
            batch.extend(self._drain())
            if any(kind == "reload" for kind, _ in batch):
                batch.extend(self._gather_reloads())
            # A stop goes ahead of everything that queued up before or with it.
            if self._stop_requested.is_set() or any(kind == "stop" for kind, _ in batch):
                return
            if any(kind == "reload" for kind, _ in batch):
                self._reload_config()
            for name in dict.fromkeys(name for kind, name in batch if kind == "changed"):
                if self._stop_requested.is_set():
                    return
                if name in self._runners:
                    self._reload_watch(name)
            self._store_checks()

    def _drain(self) -> list[tuple[str, str]]:
        messages = []
        while True:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                return messages

    def _gather_reloads(self) -> list[tuple[str, str]]:
        """Messages arriving until SIGHUPs have been quiet for a moment: a burst is one reload."""
        messages: list[tuple[str, str]] = []
        deadline = time.monotonic() + _RELOAD_GATHER_MAX
        while not self._stop_requested.is_set():
            try:
                message = self._inbox.get(timeout=max(0.0, min(_RELOAD_QUIET, deadline - time.monotonic())))
            except queue.Empty:
                return messages
            messages.append(message)
            if time.monotonic() >= deadline:
                return messages
        return messages

    def _reload_watch(self, name: str) -> None:
        runner = self._runners[name]
        try:
            with self._busy(f"reloading watch {name}"):
                outcome = runner.reload(interrupted=self._stop_requested.is_set)
        except StateLostError:
            raise
        except CvatWatchError as error:
            # The state database failed (disk full, read-only): the baseline did not move, so
            # the same change is diffed again on the next event or re-check.
            log.error("watch %s: %s; will retry", name, error)
            if self._ops is not None:
                self._ops.reloaded(name, "error", error=str(error))
            return
        self._reported(runner, outcome)
        self._last_recheck[name] = time.monotonic()
        if outcome.status == "committed":
            if outcome.events and self._dispatcher is not None:
                self._dispatcher.wake()
            self._notify_status()

    def _periodic(self) -> None:
        now = time.monotonic()
        for name, runner in list(self._runners.items()):
            if self._stop_requested.is_set():
                return
            # The slow re-check catches what the watcher missed (network file systems, a
            # failed load waiting for the exporter to finish, soon after a failure); unchanged
            # hashes cost a read.
            if now - self._last_recheck.get(name, 0.0) >= runner.recheck_after:
                self._reload_watch(name)
                self._last_recheck[name] = now
            watcher = self._watchers.get(name)
            if watcher is not None and not watcher.alive:
                log.warning("watch %s: the file watcher stopped; starting a new one", name)
                watcher.stop()
                self._watchers[name] = self._watch(runner)
                self._reload_watch(name)
        self._store_checks()

    def _store_checks(self) -> None:
        """Stop loudly if the state file is gone; checkpoint and prune when they are due."""
        assert self._store is not None and self._config is not None
        self._store.verify()
        now = time.monotonic()
        try:
            if now - self._last_checkpoint >= CHECKPOINT_INTERVAL:
                self._last_checkpoint = now
                self._store.checkpoint()
            if now - self._last_prune >= PRUNE_INTERVAL:
                self._prune(self._config)
        except StateLostError:
            raise
        except CvatWatchError as error:
            log.error("state upkeep: %s; will retry", error)

    def _prune(self, config: Config) -> None:
        assert self._store is not None
        self._last_prune = time.monotonic()
        deliveries, events = self._store.prune(time.time() - config.retention_days * 86400.0)
        if deliveries or events:
            log.info(
                "state: deleted %d delivered or dead deliveries and %d events older than %g days",
                deliveries,
                events,
                config.retention_days,
            )

    def _reload_config(self) -> None:
        """Apply the configuration file again: only what changed changes.

        Unchanged handlers keep their workers and any attempt in flight (see
        Dispatcher.update_routes); unchanged watches keep their runner and file watcher; a
        changed or new watch is loaded anew, and a stop request interrupts that.
        """
        assert self._dispatcher is not None
        sdnotify.notify(sdnotify.reloading_message(), environ=self.environ)
        try:
            config = load_config(self.config_path, environ=self.environ)
            routes = build_routes(config)  # fails early on a handler that cannot start
        except CvatWatchError as error:
            log.error("reload: %s; keeping the running configuration", error)
            if self._ops is not None:
                self._ops.config_loaded(error=str(error))
            self._notify_ready()
            return
        log.info("reload: applying %s", self.config_path)
        if self._config is not None and config.state_dir != self._config.state_dir:
            log.warning("reload: state_dir changed; it takes effect at the next restart")
            config = attrs.evolve(config, state_dir=self._config.state_dir)
        self._config = config
        self._dispatcher.update_routes(routes)
        wanted = {watch.name: watch for watch in config.watches}
        for name in list(self._runners):
            if self._runners[name].config != wanted.get(name):
                watcher = self._watchers.pop(name, None)
                if watcher is not None:
                    watcher.stop()
                del self._runners[name]
        job_events = self._wants_job_events()
        project_events = self._wants_project_events()
        for watch in config.watches:
            if self._stop_requested.is_set():
                return
            runner = self._runners.get(watch.name)
            if runner is not None:
                runner.job_events = job_events
                runner.project_events = project_events
                continue
            runner = self._add_runner(watch)
            self._watchers[runner.name] = self._watch(runner)
        if self._stop_requested.is_set():
            return  # the reload was cut short: not ready, stopping
        try:
            self._configure_http(config)
        except CvatWatchError as error:
            log.error("reload: %s; the HTTP listener stays off until the next reload", error)
        self._sync_sources(config)
        if self._ops is not None:
            self._ops.config_loaded()
        log.info("reload: %s", self.summary_line())
        self._notify_ready()

    def _notify_ready(self) -> None:
        sdnotify.notify("READY=1", environ=self.environ)
        self._notify_status()

    def _notify_status(self) -> None:
        sdnotify.notify(f"STATUS={self.status_line()}", environ=self.environ)

    # -- operations (ops.py): health, metrics, admin requests, the log line operators look for ---

    def _busy(self, what: str) -> Any:
        """Long work in the main loop: the watchdog keeps being fed meanwhile (health.py)."""
        if self._ops is None:
            return contextlib.nullcontext()
        return self._ops.liveness.busy(what)

    def _reported(self, runner: WatchRunner, outcome: ReloadOutcome) -> None:
        if self._ops is not None:
            self._ops.reloaded(
                runner.name,
                outcome.status,
                event_types=[event.type for event in outcome.events] if outcome.status == "committed" else (),
                error=outcome.error,
            )

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """Carry out an admin command's request (mailbox.py): ``redeliver`` is the one there is."""
        if request.get("action") != "redeliver" or not isinstance(request.get("id"), int):
            return {"ok": False, "error": f"unknown request {request.get('action')!r}"}
        assert self._store is not None
        try:
            row = self._store.redeliver(request["id"], time.time())
        except StateLostError:
            raise
        except CvatWatchError as error:
            return {"ok": False, "error": str(error)}
        log.info("redeliver: delivery %d (%s → %s) is due now", row.id, row.event_id, row.handler_key)
        if self._dispatcher is not None:
            self._dispatcher.wake()
        return {
            "ok": True,
            "id": row.id,
            "event_type": row.event_type,
            "event_id": row.event_id,
            "handler": row.handler_key,
            "handler_id": row.handler_id,
        }

    def summary_line(self) -> str:
        """What the daemon is doing, in one line: its watches, its handlers and its state."""
        config = self._config
        if config is None:
            return "not configured"
        watches = ", ".join(f"{watch.name} ({watch.annotations})" for watch in config.watches)
        routes = self._dispatcher.routes if self._dispatcher is not None else ()
        handlers = ", ".join(route.key for route in routes) or "none"
        state = self._store.path if self._store is not None else config.state_dir
        return f"watching {len(config.watches)} export(s): {watches}; handlers: {handlers}; state: {state}"

    def status_line(self) -> str:
        parts = []
        for name, runner in self._runners.items():
            state = "waiting for valid files" if runner.last_error else "ok"
            parts.append(f"{name}: {state}")
        return f"watching {len(self._runners)} export(s) — " + ", ".join(parts)


def _dry_run_store(config: Config) -> Store:
    # A dry run changes nothing: without a state database yet, diff against an empty one
    # made in memory instead of creating the real file.
    path = config.state_dir / STATE_FILE_NAME
    return Store.open(path) if path.exists() else Store.open(Path(":memory:"))


def run_once(config: Config, *, dry_run: bool = False) -> list[ReloadOutcome]:
    """One pass for cron or a systemd timer: load, diff against the state, deliver, return.

    Holds the state folder's lock (StateLockedError when the service or another ``once`` has
    it), except for a dry run, which changes nothing.
    """
    lock = None if dry_run else lock_state(config, "once")
    try:
        store = _dry_run_store(config) if dry_run else open_store(config)
        routes = build_routes(config)
        try:
            if not dry_run:
                claim_state(store, config)
            dispatcher = Dispatcher(store, routes)
            wants_job_events = any(JOB_STATE_CHANGED in route.events for route in routes)
            wants_project_events = any(not route.events.isdisjoint(PROJECT_EVENTS) for route in routes)
            outcomes = []
            for watch in config.watches:
                runner = WatchRunner(
                    config=watch,
                    store=store,
                    targets=dispatcher.targets,
                    job_events=wants_job_events,
                    project_events=wants_project_events,
                )
                outcomes.append(runner.reload(force=True, dry_run=dry_run))
            if not dry_run:
                dispatcher.run_once()
                store.prune(time.time() - config.retention_days * 86400.0)
            return outcomes
        finally:
            close_routes(routes)
            store.close()
    finally:
        if lock is not None:
            lock.release()
