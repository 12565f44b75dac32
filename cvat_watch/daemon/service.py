"""The daemon's lifecycle: watchers → runners → outbox → dispatcher, signals and systemd.

:class:`Daemon` runs one :class:`~cvat_watch.daemon.reload.WatchRunner` and one file watcher per
watch and the dispatcher, reloads the configuration on SIGHUP, stops gracefully on SIGTERM and
speaks sd_notify. :func:`run_once` is the same pipeline once, for cron.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
from pathlib import Path
from typing import Any

import attrs

from cvat_watch.config import Config, load_config
from cvat_watch.daemon import sdnotify
from cvat_watch.daemon.dispatch import Dispatcher, Route
from cvat_watch.daemon.events import JOB_STATE_CHANGED
from cvat_watch.daemon.reload import ReloadOutcome, WatchRunner
from cvat_watch.daemon.routes import build_routes, close_routes
from cvat_watch.daemon.store import Store
from cvat_watch.daemon.watcher import FileWatcher
from cvat_watch.errors import CvatWatchError
from cvat_watch.eventtypes import PROJECT_EVENTS

__all__ = [
    "STATE_FILE_NAME",
    "Daemon",
    "open_store",
    "run_once",
]

log = logging.getLogger(__name__)

STATE_FILE_NAME = "cvat-watch.db"
#: How long the main loop sleeps at most between two looks at its timers.
_MAIN_LOOP_TICK = 1.0


def open_store(config: Config) -> Store:
    return Store.open(config.state_dir / STATE_FILE_NAME)


@attrs.define
class Daemon:
    """The long-running process: watchers → runners → outbox → dispatcher, under systemd."""

    config_path: Path
    environ: dict[str, str] = attrs.field(factory=lambda: dict(os.environ))
    _config: Config | None = None
    _store: Store | None = None
    _dispatcher: Dispatcher | None = None
    _routes: list[Route] = attrs.field(factory=list)
    _runners: dict[str, WatchRunner] = attrs.field(factory=dict)
    _watchers: dict[str, FileWatcher] = attrs.field(factory=dict)
    # SimpleQueue.put is reentrant, so signal handlers may use it while the main loop waits.
    _inbox: queue.SimpleQueue[tuple[str, str]] = attrs.field(factory=queue.SimpleQueue)
    _last_recheck: dict[str, float] = attrs.field(factory=dict)

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; SIGHUP reloads the configuration. Returns the exit code."""
        self._config = load_config(self.config_path, environ=self.environ)
        self._store = open_store(self._config)
        previous = self._install_signals()
        try:
            self._start(self._config)
            self._notify_ready()
            self._loop()
        finally:
            sdnotify.notify("STOPPING=1", environ=self.environ)
            log.info("stopping: finishing deliveries in flight")
            self._shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        log.info("stopped")
        return 0

    # -- lifecycle ---------------------------------------------------------------------------

    def _start(self, config: Config) -> None:
        assert self._store is not None
        self._routes = build_routes(config)
        dispatcher = Dispatcher(self._store, self._routes)
        wants_job_events = any(JOB_STATE_CHANGED in route.events for route in self._routes)
        wants_project_events = any(not route.events.isdisjoint(PROJECT_EVENTS) for route in self._routes)
        runners = {}
        for watch in config.watches:
            kept = self._runners.get(watch.name)
            if (
                kept is not None
                and kept.config == watch
                and kept.job_events == wants_job_events
                and kept.project_events == wants_project_events
            ):
                # A SIGHUP that left this watch as it was: keep the runner's memory (the export's
                # summary by content hash, the parsers', the baseline), so that the forced reload
                # below re-reads and re-hashes the files but parses again only what changed; at
                # 100,000 tasks parsing the export again would take longer than the reload budget.
                runners[watch.name] = attrs.evolve(kept, targets=dispatcher.targets)
            else:
                runners[watch.name] = WatchRunner(
                    config=watch,
                    store=self._store,
                    targets=dispatcher.targets,
                    job_events=wants_job_events,
                    project_events=wants_project_events,
                )
        for runner in runners.values():
            outcome = runner.reload(force=True)
            self._last_recheck[runner.name] = time.monotonic()
            if outcome.status == "failed":
                log.warning("watch %s: not loaded yet; waiting for valid files", runner.name)
        self._runners = runners
        self._dispatcher = dispatcher
        dispatcher.start()
        for runner in runners.values():
            self._watchers[runner.name] = self._watch(runner)

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

    def _stop_components(self) -> None:
        for watcher in self._watchers.values():
            watcher.stop()
        self._watchers = {}
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None
        close_routes(self._routes)
        self._routes = []

    def _shutdown(self) -> None:
        self._stop_components()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _install_signals(self) -> dict[int, Any]:
        def handle(signum: int, _frame: Any) -> None:
            self._inbox.put(("reload" if signum == signal.SIGHUP else "stop", ""))

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[signum] = signal.signal(signum, handle)
        return previous

    # -- main loop ---------------------------------------------------------------------------

    def _loop(self) -> None:
        watchdog_every = sdnotify.watchdog_interval(environ=self.environ)
        next_ping = time.monotonic()
        while True:
            now = time.monotonic()
            if watchdog_every is not None and now >= next_ping:
                sdnotify.notify("WATCHDOG=1", environ=self.environ)
                next_ping = now + watchdog_every
            timeout = _MAIN_LOOP_TICK
            if watchdog_every is not None:
                timeout = max(0.0, min(timeout, next_ping - now))
            try:
                kind, name = self._inbox.get(timeout=timeout)
            except queue.Empty:
                self._periodic()
                continue
            if kind == "stop":
                return
            if kind == "reload":
                self._reload_config()
            elif kind == "changed" and name in self._runners:
                self._reload_watch(name)

    def _reload_watch(self, name: str) -> None:
        runner = self._runners[name]
        try:
            outcome = runner.reload()
        except CvatWatchError as error:
            # The state database failed (disk full, read-only): the baseline did not move, so
            # the same change is diffed again on the next event or re-check.
            log.error("watch %s: %s; will retry", name, error)
            return
        self._last_recheck[name] = time.monotonic()
        if outcome.status == "committed":
            if outcome.events and self._dispatcher is not None:
                self._dispatcher.wake()
            self._notify_status()

    def _periodic(self) -> None:
        now = time.monotonic()
        for name, runner in self._runners.items():
            # The slow re-check catches what the watcher missed (network file systems, a
            # failed load waiting for the exporter to finish); unchanged hashes cost a read.
            if now - self._last_recheck.get(name, 0.0) >= runner.config.recheck_interval:
                self._reload_watch(name)
                self._last_recheck[name] = now
            watcher = self._watchers.get(name)
            if watcher is not None and not watcher.alive:
                log.warning("watch %s: the file watcher stopped; starting a new one", name)
                watcher.stop()
                self._watchers[name] = self._watch(runner)
                self._reload_watch(name)

    def _reload_config(self) -> None:
        sdnotify.notify(sdnotify.reloading_message(), environ=self.environ)
        try:
            config = load_config(self.config_path, environ=self.environ)
            build_routes_check = build_routes(config)  # fails early on a handler that cannot start
            close_routes(build_routes_check)
        except CvatWatchError as error:
            log.error("reload: %s; keeping the running configuration", error)
            self._notify_ready()
            return
        log.info("reload: applying %s", self.config_path)
        self._stop_components()
        if self._config is not None and config.state_dir != self._config.state_dir:
            log.warning("reload: state_dir changed; it takes effect at the next restart")
            config = attrs.evolve(config, state_dir=self._config.state_dir)
        self._config = config
        self._start(config)
        self._notify_ready()

    def _notify_ready(self) -> None:
        sdnotify.notify("READY=1", environ=self.environ)
        self._notify_status()

    def _notify_status(self) -> None:
        sdnotify.notify(f"STATUS={self.status_line()}", environ=self.environ)

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
    """One pass for cron or a systemd timer: load, diff against the state, deliver, return."""
    store = _dry_run_store(config) if dry_run else open_store(config)
    routes = build_routes(config)
    try:
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
        return outcomes
    finally:
        close_routes(routes)
        store.close()
