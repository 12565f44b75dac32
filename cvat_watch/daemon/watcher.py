"""Watch a few files for changes and report them in debounced groups.

:class:`FileWatcher` knows nothing about what the files contain: it says *which* of its
files may have changed, and the caller decides whether the content really did.

How it watches
    The parent directory of every file is watched, not the file: exporters replace a
    file by writing a temporary file and renaming it over the old one, and a watch on
    the old file would follow the old inode into oblivion. Events are kept when they
    name one of our files: created, modified, closed after writing, deleted, and moved
    (to our name: the atomic-rename case; from our name: the file went away). Parent
    directories are resolved with :func:`os.path.realpath` when they are scheduled, so
    a symlinked directory works and event paths compare equal to ours.

Debounce
    Events are grouped; ``on_change(frozenset(paths))`` is called ``debounce`` seconds
    after the last event of a group, but never later than ``max_wait`` seconds after its
    first, so an exporter that rewrites continuously still produces reloads. The paths
    are the ones given to the constructor (as :class:`~pathlib.Path`), whichever way the
    change was seen. ``on_change`` runs on the watcher's own thread, one call at a time;
    an exception from it is logged and the watcher carries on. Changes still waiting
    when :meth:`FileWatcher.stop` is called are dropped: whoever starts again compares
    contents anyway.

Directories that come and go
    Every ``poll_interval`` seconds (1 s by default, also without polling) the watcher
    checks where each parent directory resolves to and which directory it is (device
    and inode). A directory that does not exist yet, cannot be watched, was removed,
    was replaced (``mv new dir``) or is reached through a symlink that now points
    elsewhere gets its watch scheduled again as soon as possible, and ``on_change`` is
    called for its files: all of them when a watched directory changed or vanished,
    those that exist when a missing directory appeared. A watch whose emitter thread
    has died (inotify drops the watch of a removed directory) is replaced the same way.
    The directories present at :meth:`FileWatcher.start` produce no initial call: the
    caller loads the files itself after starting the watcher.

``alive``
    False before :meth:`FileWatcher.start`, after :meth:`FileWatcher.stop`, and when the
    observer thread or the debounce thread has died. The daemon re-creates a watcher
    that is not alive; per-directory trouble is repaired inside, as above.

Polling
    ``poll=True`` uses watchdog's ``PollingObserver`` (for NFS or SMB mounts, where
    inotify sees changes made by other machines not at all). If inotify cannot be set up
    (no instances left when the observer is made, or ``EMFILE``/``ENFILE``/``ENOSPC`` when
    a directory is scheduled: the per-user limits on inotify instances and watches), the
    watcher falls back to polling for good, with one warning.

Limitation: a watched file that is itself a symlink is reported when the link changes,
not when the file it points to changes in another directory.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import attrs
from watchdog.events import (
    DirDeletedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
    FileSystemMovedEvent,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserver

__all__ = ["FileWatcher"]

logger = logging.getLogger(__name__)

# Opened and closed-without-writing are left out on purpose: the daemon reads these
# files after every change, and those reads must not look like changes.
_EVENT_FILTER: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
]

#: What inotify_init and inotify_add_watch fail with when a limit is reached: too many instances
#: (EMFILE; ENFILE system-wide) or watches (ENOSPC). Retrying will not help; polling will.
_INOTIFY_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOSPC})

_Identity = tuple[int, int]  # (st_dev, st_ino) of a directory
_Location = tuple[str, "_Identity | None"]  # (resolved directory, identity or None when absent)


def _to_paths(paths: Sequence[str | os.PathLike[str]]) -> tuple[Path, ...]:
    if isinstance(paths, str | os.PathLike):
        # A lone path is iterable (a str by character); that is never what was meant.
        raise TypeError("FileWatcher takes a sequence of paths, not a single path")
    converted = tuple(Path(p) for p in paths)
    if not converted:
        raise ValueError("FileWatcher needs at least one path to watch")
    for path in converted:
        if not path.name:
            raise ValueError(f"{path}: not a file path")
    return converted


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be greater than 0, not {value!r}")


def _not_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must not be negative, not {value!r}")


def _directory_identity(path: str) -> _Identity | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


@attrs.define(eq=False)
class _Scheduled:
    identity: _Identity
    watch: ObservedWatch


class _Handler(FileSystemEventHandler):
    """Hands every event to the watcher; never lets an exception reach watchdog's thread."""

    def __init__(self, on_event: Callable[[FileSystemEvent], None]) -> None:
        self._on_event = on_event

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            logger.exception("error while handling file event %r", event)


@attrs.define(eq=False)
class FileWatcher:
    """Calls ``on_change`` with the subset of ``paths`` that changed, debounced.

    Start it with :meth:`start`, end it with :meth:`stop`; it is not restartable. See the
    module documentation for what counts as a change and how missing directories are
    handled.
    """

    paths: tuple[Path, ...] = attrs.field(converter=_to_paths)
    on_change: Callable[[frozenset[Path]], None] = attrs.field(repr=False)
    debounce: float = attrs.field(default=0.5, kw_only=True, converter=float, validator=_not_negative)
    max_wait: float = attrs.field(default=5.0, kw_only=True, converter=float, validator=_positive)
    poll: bool = attrs.field(default=False, kw_only=True)
    poll_interval: float = attrs.field(default=1.0, kw_only=True, converter=float, validator=_positive)
    name: str = attrs.field(default="", kw_only=True)

    # Absolute parent directory as given → file name → the given paths with that name.
    _files: dict[str, dict[str, tuple[Path, ...]]] = attrs.field(init=False, repr=False, factory=dict)
    _observer: BaseObserver | None = attrs.field(init=False, repr=False, default=None)
    _thread: threading.Thread | None = attrs.field(init=False, repr=False, default=None)
    _handler: _Handler | None = attrs.field(init=False, repr=False, default=None)
    _started: bool = attrs.field(init=False, repr=False, default=False)
    _stopping: threading.Event = attrs.field(init=False, repr=False, factory=threading.Event)
    # Serialises scheduling against stop(): a watch scheduled while the observer stops
    # would start an emitter thread nobody joins.
    _schedule_lock: threading.Lock = attrs.field(init=False, repr=False, factory=threading.Lock)
    _scheduled: dict[str, _Scheduled] = attrs.field(init=False, repr=False, factory=dict)
    _locations: dict[str, _Location] = attrs.field(init=False, repr=False, factory=dict)
    _schedule_errors: dict[str, str] = attrs.field(init=False, repr=False, factory=dict)
    # Read by the observer thread without a lock; only ever replaced whole.
    _lookup: dict[tuple[str, str], tuple[Path, ...]] = attrs.field(init=False, repr=False, factory=dict)
    _watched_dirs: frozenset[str] = attrs.field(init=False, repr=False, factory=frozenset)
    # Debounce state, guarded by _wakeup.
    _wakeup: threading.Condition = attrs.field(init=False, repr=False, factory=threading.Condition)
    _pending: set[Path] = attrs.field(init=False, repr=False, factory=set)
    _first_event: float = attrs.field(init=False, repr=False, default=0.0)
    _last_event: float = attrs.field(init=False, repr=False, default=0.0)
    _check_soon: bool = attrs.field(init=False, repr=False, default=False)
    # Why inotify could not watch a directory (set just before falling back to polling).
    _exhausted: str = attrs.field(init=False, repr=False, default="")

    def __attrs_post_init__(self) -> None:
        for path in self.paths:
            directory, file_name = os.path.split(os.path.abspath(path))
            names = self._files.setdefault(directory, {})
            if path not in names.get(file_name, ()):
                names[file_name] = (*names.get(file_name, ()), path)

    @property
    def alive(self) -> bool:
        """True while started, not stopped, and both the observer and debounce threads run."""
        observer, thread = self._observer, self._thread
        return (
            self._started
            and not self._stopping.is_set()
            and observer is not None
            and observer.is_alive()
            and thread is not None
            and thread.is_alive()
        )

    def start(self) -> None:
        """Schedule the watches and start the threads; watching is in place on return."""
        if self._started:
            raise RuntimeError("a FileWatcher can be started only once")
        self._started = True
        self._handler = _Handler(self._on_event)
        # Constructing the inotify observer already starts a reader thread, so from
        # here on every failure must go through _stop_observer().
        self._observer = self._new_observer()
        try:
            self._observer.start()
            self._reconcile(initial=True)
            self._thread = threading.Thread(target=self._run, name=self._thread_name(), daemon=True)
            self._thread.start()
        except BaseException:
            self._stopping.set()
            self._stop_observer(5.0)
            raise

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and join the threads (each join waits at most ``timeout`` seconds)."""
        with self._wakeup:
            self._stopping.set()
            self._pending.clear()
            self._wakeup.notify_all()
        thread = self._thread
        # Joining first lets a running on_change finish before its watches go away.
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "%s: on_change still running after %.1f s; not waiting", self._label(), timeout
                )
        self._stop_observer(timeout)

    def _stop_observer(self, timeout: float) -> None:
        # Waiting for the lock is bounded: a directory check may hang on a dead network
        # mount, and stop() must still return. Without the lock a watch scheduled in that
        # moment could outlive the observer; its thread is a daemon thread at worst.
        locked = self._schedule_lock.acquire(timeout=timeout)
        if not locked:
            logger.warning(
                "%s: directory check still busy after %.1f s; stopping anyway", self._label(), timeout
            )
        try:
            observer, self._observer = self._observer, None
            self._scheduled.clear()
            if observer is None:
                return
            # The observer's stop() also unschedules every watch, joining the emitter threads.
            observer.stop()
        finally:
            if locked:
                self._schedule_lock.release()
        if observer.is_alive() and observer is not threading.current_thread():
            observer.join(timeout)

    def _new_observer(self) -> BaseObserver:
        if self.poll:
            return PollingObserver(timeout=self.poll_interval)
        try:
            return Observer()
        except OSError as exc:
            logger.warning(
                "%s: inotify is not available (%s); polling every %.1f s instead",
                self._label(),
                exc,
                self.poll_interval,
            )
            return PollingObserver(timeout=self.poll_interval)

    def _label(self) -> str:
        return f"watcher {self.name!r}" if self.name else "watcher"

    def _thread_name(self) -> str:
        return f"cvat-watch-watcher-{self.name}" if self.name else "cvat-watch-watcher"

    # --- events (observer thread) -------------------------------------------------

    def _on_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if isinstance(event, DirDeletedEvent) and os.fsdecode(event.src_path) in self._watched_dirs:
                self._request_check()
            return
        candidates = [event.src_path]
        if isinstance(event, FileSystemMovedEvent) and event.dest_path:
            candidates.append(event.dest_path)
        changed: set[Path] = set()
        for candidate in candidates:
            changed.update(self._ours(os.fsdecode(candidate)))
        if changed:
            self._mark(changed)

    def _ours(self, event_path: str) -> tuple[Path, ...]:
        directory, file_name = os.path.split(event_path)
        lookup = self._lookup
        found = lookup.get((directory, file_name))
        if found is None and directory not in self._watched_dirs:
            # Paths arrive under the directory we scheduled, which is already resolved;
            # resolving here only covers an observer that reports them otherwise.
            found = lookup.get((os.path.realpath(directory), file_name))
        return found or ()

    def _mark(self, paths: Iterable[Path]) -> None:
        with self._wakeup:
            if self._stopping.is_set():
                return
            now = time.monotonic()
            if not self._pending:
                self._first_event = now
            self._pending.update(paths)
            self._last_event = now
            self._wakeup.notify_all()

    def _request_check(self) -> None:
        with self._wakeup:
            self._check_soon = True
            self._wakeup.notify_all()

    # --- the watcher's own thread -------------------------------------------------

    def _run(self) -> None:
        next_check = time.monotonic() + self.poll_interval
        while True:
            batch: frozenset[Path] | None = None
            with self._wakeup:
                while True:
                    if self._stopping.is_set():
                        return
                    now = time.monotonic()
                    due = (
                        min(self._last_event + self.debounce, self._first_event + self.max_wait)
                        if self._pending
                        else None
                    )
                    if due is not None and now >= due:
                        batch = frozenset(self._pending)
                        self._pending.clear()
                        break
                    if self._check_soon or now >= next_check:
                        self._check_soon = False
                        break
                    wake_at = next_check if due is None else min(due, next_check)
                    self._wakeup.wait(wake_at - now)
            if batch is not None:
                self._deliver(batch)
                continue
            try:
                self._reconcile(initial=False)
            except Exception:
                logger.exception("%s: error while checking watched directories", self._label())
            next_check = time.monotonic() + self.poll_interval

    def _deliver(self, batch: frozenset[Path]) -> None:
        logger.debug("%s: changed: %s", self._label(), ", ".join(sorted(map(str, batch))))
        try:
            self.on_change(batch)
        except Exception:
            logger.exception("%s: on_change failed for %s", self._label(), ", ".join(sorted(map(str, batch))))

    # --- keeping the watches in line with the directories -------------------------

    def _reconcile(self, *, initial: bool) -> None:
        """Schedule, replace or drop directory watches; queue the files that need a look."""
        changed: set[Path] = set()
        # Resolved before taking the lock: on a dead network mount this is what hangs.
        locations: dict[str, _Location] = {}
        for directory in self._files:
            resolved = os.path.realpath(directory)
            locations[directory] = (resolved, _directory_identity(resolved))
        with self._schedule_lock:
            observer = self._observer
            if observer is None or self._stopping.is_set():
                return
            wanted = {resolved: identity for resolved, identity in locations.values() if identity is not None}
            live_watches = {emitter.watch for emitter in list(observer.emitters) if emitter.is_alive()}
            replaced: set[str] = set()
            for resolved, scheduled in list(self._scheduled.items()):
                if wanted.get(resolved) == scheduled.identity and scheduled.watch in live_watches:
                    continue
                if resolved in wanted and wanted[resolved] == scheduled.identity:
                    logger.info("%s: watch on %s stopped; watching it again", self._label(), resolved)
                    replaced.add(resolved)
                self._unschedule(observer, resolved)
            unwatched = self._schedule_all(observer, wanted)
            if unwatched is None:
                # Out of inotify instances or watches: poll every directory from now on,
                # the ones scheduled on the inotify observer a moment ago included.
                observer = self._fall_back_to_polling(observer)
                unwatched = self._schedule_all(observer, wanted) or []
            for resolved in unwatched:
                for directory, (where, _identity) in locations.items():
                    if where == resolved:
                        locations[directory] = (resolved, None)

            for directory, location in locations.items():
                before = self._locations.get(directory)
                if initial:
                    if location[1] is None:
                        logger.info("%s: waiting for directory %s to appear", self._label(), directory)
                    continue
                names = self._files[directory]
                if before is not None and before[1] is None:
                    if location[1] is not None:
                        changed.update(
                            path
                            for file_name, paths in names.items()
                            if os.path.lexists(os.path.join(directory, file_name))
                            for path in paths
                        )
                elif location != before or location[0] in replaced:
                    if location[1] is None:
                        logger.info(
                            "%s: directory %s is gone; waiting for it to reappear", self._label(), directory
                        )
                    changed.update(path for paths in names.values() for path in paths)

            self._locations = locations
            lookup: dict[tuple[str, str], tuple[Path, ...]] = {}
            for directory, (resolved, _identity) in locations.items():
                for file_name, paths in self._files[directory].items():
                    lookup[(resolved, file_name)] = (*lookup.get((resolved, file_name), ()), *paths)
            self._lookup = lookup
            self._watched_dirs = frozenset(self._scheduled)
        if changed:
            self._mark(changed)

    def _schedule_all(self, observer: BaseObserver, wanted: dict[str, _Identity]) -> list[str] | None:
        """Schedule the wanted directories not watched yet; those that could not be, or None when
        inotify ran out of instances or watches."""
        unwatched = []
        for resolved, identity in wanted.items():
            if resolved in self._scheduled:
                continue
            watched = self._schedule(observer, resolved, identity)
            if watched is None:
                return None
            if not watched:
                unwatched.append(resolved)
        return unwatched

    def _schedule(self, observer: BaseObserver, resolved: str, identity: _Identity) -> bool | None:
        """Whether ``resolved`` is watched now; None when inotify ran out of instances or watches."""
        assert self._handler is not None
        try:
            watch = observer.schedule(self._handler, resolved, recursive=False, event_filter=_EVENT_FILTER)
        except OSError as exc:
            if exc.errno in _INOTIFY_EXHAUSTED and not isinstance(observer, PollingObserver):
                self._exhausted = f"{exc.strerror or exc}"
                return None
            # Each distinct failure is worth one warning, not one per retry.
            message = f"{type(exc).__name__}: {exc.strerror or exc}"
            if self._schedule_errors.get(resolved) != message:
                self._schedule_errors[resolved] = message
                logger.warning(
                    "%s: cannot watch %s (%s); retrying every %.1f s",
                    self._label(),
                    resolved,
                    message,
                    self.poll_interval,
                )
            return False
        if self._schedule_errors.pop(resolved, None) is not None:
            logger.info("%s: watching %s now", self._label(), resolved)
        self._scheduled[resolved] = _Scheduled(identity, watch)
        return True

    def _fall_back_to_polling(self, observer: BaseObserver) -> BaseObserver:
        """Replace the inotify observer by a polling one (called with the schedule lock held).

        Retrying inotify would fail the same way until someone raises a system-wide limit;
        polling sees every change, a poll interval later.
        """
        logger.warning(
            "%s: inotify limit reached (%s; see fs.inotify.max_user_instances and"
            " max_user_watches); polling every %.1f s instead",
            self._label(),
            self._exhausted,
            self.poll_interval,
        )
        polling = PollingObserver(timeout=self.poll_interval)
        polling.start()
        self._observer = polling
        self._scheduled.clear()
        # Its emitters hold inotify descriptors: give them back. The observer thread only
        # dispatches events, it never takes the schedule lock, so joining here cannot deadlock.
        observer.stop()
        if observer is not threading.current_thread():
            observer.join(5.0)
        return polling

    def _unschedule(self, observer: BaseObserver, resolved: str) -> None:
        scheduled = self._scheduled.pop(resolved)
        try:
            observer.unschedule(scheduled.watch)
        except Exception:
            # The emitter may already be gone with its directory; nothing is left to undo.
            logger.debug("%s: unscheduling %s failed", self._label(), resolved, exc_info=True)
