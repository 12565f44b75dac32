"""The reload pipeline of one watch: read both files, parse, snapshot, diff, commit.

One :class:`WatchRunner` per ``[[watch]]`` turns "these files changed" into "the events are in
the outbox": read both files, stop when their content hashes are unchanged, parse (the export's
summary is cached by hash, so a job-status change never re-parses the XML), build a snapshot,
diff it against the saved baseline and commit events and baseline in one transaction. A failed
load keeps the last good state.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import operator
import os
import stat
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs

from cvat_watch import cvatxml, jobstatus
from cvat_watch._escape import printable
from cvat_watch._gcpause import gc_paused
from cvat_watch.config import WatchConfig
from cvat_watch.daemon.diff import diff
from cvat_watch.daemon.events import Event
from cvat_watch.daemon.snapshot import Snapshot, SnapshotBuilder, id_sort_key
from cvat_watch.daemon.store import Store
from cvat_watch.errors import AnnotationsError, JobStatusError
from cvat_watch.model import ExportBrief, JobStatus

__all__ = ["ReloadOutcome", "WatchRunner", "utc_timestamp"]

log = logging.getLogger(__name__)


#: The first re-check after a failed load, in seconds (then doubling up to recheck_interval).
_RETRY_AFTER_FAILURE = 1.0

#: How many task ids a warning about an export behind its job list names.
_SHOWN_TASKS = 10


def utc_timestamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@attrs.frozen
class ReloadOutcome:
    """What one reload did: ``unchanged``, ``failed`` (last good state kept), ``committed``, or
    ``interrupted`` (the process is stopping; nothing was committed)."""

    status: str
    events: tuple[Event, ...] = ()
    first_start: bool = False
    completed: int = 0
    error: str | None = None


def _file_digest(data: bytes) -> str:
    # SHA-256 runs on the SHA extensions of current x86 and ARM CPUs, at 2-3 times BLAKE2's
    # speed in software: 20 ms instead of 60 for a 40 MB job-status page.
    return hashlib.sha256(data).hexdigest()


#: What tells one version of a file from another without reading it:
#: st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns.
_Signature = tuple[int, int, int, int, int]

#: How long before a read a file's last change must lie for its times to tell a later change apart.
#: A change lands in the same time stamp as the one before it when both fall in one tick of the
#: file system's clock (2 s on FAT, a jiffy on ext4); this bound is larger than those ticks.
_SETTLE_NS = 3_000_000_000


def _signature(status: os.stat_result) -> _Signature:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


@attrs.frozen
class _FileState:
    """One watched file as the last good reload read it."""

    signature: _Signature
    digest: str
    #: time.monotonic() of the read.
    read_at: float
    #: Whether its last change lay far enough before the read (see _SETTLE_NS) that an equal
    #: signature later means equal content.
    settled: bool


@attrs.define
class WatchRunner:
    """Turns the files of one watch into committed events; keeps the last good state on failure.

    Between two reloads it remembers each file's status (device, inode, size, modification and
    change times) with its content's digest: a file whose status is unchanged is not read again,
    unless it changed too shortly before it was read to tell (see ``_SETTLE_NS``), or its last
    read is ``recheck_interval`` old, or the reload is forced. It also keeps the job-status
    parser's and the snapshot builder's memory, so that a change of a few jobs rebuilds only
    those jobs' tasks.
    """

    config: WatchConfig
    store: Store
    targets: Callable[[Event], Sequence[str]]
    job_events: bool = False
    project_events: bool = False
    clock: Callable[[], float] = time.time
    _digests: tuple[str, str | None] | None = None
    _summary_cache: tuple[str, ExportBrief] | None = None
    # Whether the cached summary was parsed in this process and not stored yet (see Store.load_brief).
    _unstored: bool = attrs.field(default=False, repr=False)
    _jobs_cache: tuple[str | None, tuple[JobStatus, ...]] | None = None
    _last_error: str | None = None
    # Failed loads in a row (0 after a good one): how soon the service re-checks.
    _failures: int = attrs.field(default=0, repr=False)
    # The runner is the only writer of its watch's baseline, so after the first read the copy
    # in memory is the database's; reading it back on every change would cost ~50 ms/1k tasks.
    _baseline: tuple[Snapshot | None, dict[str, int]] | None = None
    _files: dict[Path, _FileState] = attrs.field(factory=dict, repr=False)
    _parser: jobstatus.JobStatusParser = attrs.field(factory=jobstatus.JobStatusParser, repr=False)
    _builder: SnapshotBuilder = attrs.field(factory=SnapshotBuilder, repr=False)
    # The tasks the job-status file named but the export did not hold, as last reported.
    _behind: frozenset[str] = attrs.field(default=frozenset(), repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def last_error(self) -> str | None:
        """The problem of the last failed load, until a load succeeds again."""
        return self._last_error

    @property
    def recheck_after(self) -> float:
        """Seconds until the next re-check is due: ``recheck_interval``, but while the last load
        failed about a second, doubling with each further failure up to ``recheck_interval``.

        A file can become valid again without any event the watcher sees (permissions, a write
        through a hard link elsewhere, a network file system, a rename the watcher missed); a
        broken export being written slowly is not parsed over and over either.
        """
        interval = self.config.recheck_interval
        if self._failures == 0:
            return interval
        return min(interval, _RETRY_AFTER_FAILURE * 2 ** min(self._failures - 1, 16))

    @property
    def snapshot(self) -> Snapshot | None:
        """The last committed snapshot (the database's baseline), once read; for read-only views."""
        baseline = self._baseline
        return baseline[0] if baseline is not None else None

    @property
    def paths(self) -> list[Path]:
        return [p for p in (self.config.annotations, self.config.job_status) if p is not None]

    def reload(
        self, *, force: bool = False, dry_run: bool = False, interrupted: Callable[[], bool] | None = None
    ) -> ReloadOutcome:
        """Read, diff and commit; never raises for bad input, which is logged and kept out.

        ``force`` reads both files whatever their status and commits even when nothing changed.
        ``interrupted`` is asked between the phases (read, parse, build, commit): when it says
        yes, the reload ends without committing, so that a stop never waits for a big export.
        """
        with gc_paused():
            return self._reload(force=force, dry_run=dry_run, interrupted=interrupted or _never)

    def _reload(self, *, force: bool, dry_run: bool, interrupted: Callable[[], bool]) -> ReloadOutcome:
        try:
            annotations, annotations_bytes = self._read_file(
                self.config.annotations,
                AnnotationsError,
                self._summary_cache[0] if self._summary_cache is not None else None,
                force=force,
            )
            job_status: tuple[_FileState, bytes | None] | None = None
            if self.config.job_status is not None:
                job_status = self._read_file(
                    self.config.job_status,
                    JobStatusError,
                    self._jobs_cache[0] if self._jobs_cache is not None else None,
                    force=force,
                )
            digests = (annotations.digest, job_status[0].digest if job_status is not None else None)
            if digests == self._digests and not force:
                # The last good files are back after a failed load: the error is over, and the
                # same bad file showing up again later deserves its warning again.
                self._remember(annotations, job_status)
                self._recovered()
                return ReloadOutcome("unchanged")
            if interrupted():
                return ReloadOutcome("interrupted")
            summary = self._summary(digests[0], annotations_bytes)
            annotations_bytes = None  # 240 MB at 100,000 tasks: not held through the rest of the reload
            if interrupted():
                return ReloadOutcome("interrupted")
            records = self._jobs(digests[1], job_status[1] if job_status is not None else None)
            self._refuse_emptied(summary, records)
        except (AnnotationsError, JobStatusError) as error:
            return self._failed(str(error))
        if interrupted():
            return ReloadOutcome("interrupted")
        snapshot = self._builder.build(
            watch=self.name,
            summary=summary,
            jobs=records,
            rule=self.config.completion,
            base_url=self.config.base_url,
        )
        if interrupted():
            return ReloadOutcome("interrupted")
        self._report_behind()
        outcome = self._commit(snapshot, dry_run=dry_run)
        if not dry_run:
            self._digests = digests
            self._remember(annotations, job_status)
        self._recovered()
        return outcome

    def _read_file(
        self,
        path: Path,
        error: type[AnnotationsError | JobStatusError],
        parsed: str | None,
        *,
        force: bool,
    ) -> tuple[_FileState, bytes | None]:
        """The file's state and bytes; no bytes when its status shows the version parsed last.

        A missing file is not an empty export: it raises, a failed load that keeps the last state.
        """
        known = self._files.get(path)
        trusted = None
        if (
            known is not None
            and not force
            and known.settled
            and known.digest == parsed
            and time.monotonic() - known.read_at < self.config.recheck_interval
        ):
            trusted = known.signature
        # Taken before the read: a change after it gets a later time stamp than this, less a tick.
        started_ns = time.time_ns()
        status, data = _read_unless(path, error, trusted)
        signature = _signature(status)
        if data is None:
            assert known is not None
            return known, None
        settled = max(status.st_mtime_ns, status.st_ctime_ns) < started_ns - _SETTLE_NS
        return _FileState(signature, _file_digest(data), time.monotonic(), settled), data

    def _remember(self, annotations: _FileState, job_status: tuple[_FileState, bytes | None] | None) -> None:
        self._files[self.config.annotations] = annotations
        if job_status is not None and self.config.job_status is not None:
            self._files[self.config.job_status] = job_status[0]

    def _recovered(self) -> None:
        self._failures = 0
        if self._last_error is not None:
            log.info("watch %s: files are valid again; reloaded", self.name)
            self._last_error = None

    def _report_behind(self) -> None:
        """Log once when the job-status file names tasks the export does not hold (yet), and once
        when it holds them all again; their jobs produce no events in between (see the builder)."""
        behind = frozenset(self._builder.unknown_task_ids())
        if behind - self._behind:
            shown = sorted(behind, key=id_sort_key)
            listed = ", ".join(printable(task) for task in shown[:_SHOWN_TASKS])
            more = f" and {len(shown) - _SHOWN_TASKS} more" if len(shown) > _SHOWN_TASKS else ""
            log.warning(
                "watch %s: the job-status file names %d task(s) the export does not hold (%s%s):"
                " the export is behind; no events for them until it holds them",
                self.name,
                len(shown),
                listed,
                more,
            )
        elif self._behind and not behind:
            log.info("watch %s: the export holds every task of the job-status file again", self.name)
        self._behind = behind

    def _refuse_emptied(self, summary: ExportBrief, records: tuple[JobStatus, ...]) -> None:
        """Treat a file that lost every task or job of the baseline as a failed load.

        Committing it would make the baseline forget those tasks: ``<annotations/>`` would make
        the next good export announce every completed task again under new event ids, and a job
        list of ``[]`` would reopen every completed task.
        """
        if summary.tasks and (records or self.config.job_status is None):
            return
        if self._baseline is None:
            self._baseline = self.store.load_baseline(self.name)
        baseline = self._baseline[0]
        if baseline is None or not baseline.tasks:
            return
        if not summary.tasks:
            raise AnnotationsError(
                f"holds no task, while the last good export had {len(baseline.tasks)}",
                path=self.config.annotations,
            )
        if any(task.jobs for task in baseline.tasks):
            raise JobStatusError(
                "holds no job, while the last good job-status file had some",
                path=self.config.job_status,
            )

    def _summary(self, digest: str, data: bytes | None) -> ExportBrief:
        if self._summary_cache is not None and self._summary_cache[0] == digest:
            return self._summary_cache[1]
        # At a start, the brief stored by the last run, if the export is still the same bytes.
        summary = self.store.load_brief(self.name, digest)
        if summary is not None:
            log.debug(
                "watch %s: export unchanged since the last run, %d tasks", self.name, len(summary.tasks)
            )
            self._summary_cache = (digest, summary)
            return summary
        assert data is not None  # _read_file reads whatever the cache does not hold
        # The brief: the summary's checks and errors, without keeping each task's full meta.
        summary = cvatxml.loads_brief(data, path=self.config.annotations)
        log.debug("watch %s: export parsed, %d tasks", self.name, len(summary.tasks))
        self._summary_cache = (digest, summary)
        self._unstored = True
        return summary

    def _jobs(self, digest: str | None, data: bytes | None) -> tuple[JobStatus, ...]:
        if self.config.job_status is None:
            return ()
        if self._jobs_cache is not None and self._jobs_cache[0] == digest:
            return self._jobs_cache[1]
        assert data is not None  # _read_file reads whatever the cache does not hold
        records = self._parser.parse(data, path=self.config.job_status)
        self._jobs_cache = (digest, records)
        return records

    def _failed(self, message: str) -> ReloadOutcome:
        # One warning per distinct problem: a half-written file seen by every re-check must
        # not flood the journal.
        self._failures += 1
        message = printable(message)
        if message != self._last_error:
            log.warning("watch %s: %s; keeping the last good state", self.name, message)
            self._last_error = message
        else:
            log.debug("watch %s: still failing (reported already): %s", self.name, message)
        return ReloadOutcome("failed", error=message)

    def _commit(self, snapshot: Snapshot, *, dry_run: bool) -> ReloadOutcome:
        now = self.clock()
        if self._baseline is None:
            self._baseline = self.store.load_baseline(self.name)
        baseline, generations = self._baseline
        snapshot = _keep_absent_tasks(baseline, snapshot)
        result = diff(
            baseline,
            snapshot,
            generations=generations,
            timestamp=utc_timestamp(now),
            epoch=self.store.epoch,
            notify_existing=self.config.notify_existing,
            job_events=self.job_events,
            project_events=self.project_events,
        )
        completed = sum(map(_COMPLETED, snapshot.tasks))
        if not dry_run:
            brief = self._summary_cache if self._unstored else None
            self.store.commit_reload(
                self.name, snapshot, result.generations, result.events, self.targets, now, brief=brief
            )
            self._unstored = False
            self._baseline = (snapshot, dict(result.generations))
        if baseline is None:
            log.info(
                "watch %s: first start, %d of %d tasks already completed; baseline recorded%s",
                self.name,
                completed,
                len(snapshot.tasks),
                " (notify_existing: announcing them)" if self.config.notify_existing else "",
            )
        for event in result.events:
            log.debug("watch %s: %s for task %s (%s)", self.name, event.type, event.order_key, event.id)
        return ReloadOutcome(
            "committed", events=result.events, first_start=baseline is None, completed=completed
        )


_COMPLETED = operator.attrgetter("completed")


def _never() -> bool:
    return False


def _keep_absent_tasks(baseline: Snapshot | None, snapshot: Snapshot) -> Snapshot:
    """The new snapshot plus the baseline's tasks that this export does not mention.

    An export that leaves a task out (a partial export, a task moved out and back) says nothing
    about it; forgetting it would announce its return as a new completion under a new id.
    """
    if baseline is None:
        return snapshot
    olds, news = baseline.tasks, snapshot.tasks
    if len(olds) == len(news):
        # Usually the same tasks at the same places, most of them the same objects: then none is absent.
        places = itertools.compress(itertools.count(), map(operator.is_not, news, olds))
        if all(news[place].id == olds[place].id for place in places):
            return snapshot
    present = {task.id for task in snapshot.tasks}
    absent = tuple(task for task in baseline.tasks if task.id not in present)
    if not absent:
        return snapshot
    return attrs.evolve(snapshot, tasks=snapshot.tasks + absent)


def _read_unless(
    path: Path, error: type[AnnotationsError | JobStatusError], signature: _Signature | None
) -> tuple[os.stat_result, bytes | None]:
    """The file's status, and its bytes unless its status has ``signature``.

    O_NOFOLLOW: a watched file swapped for a symlink could point the daemon at any file it may
    read; symlinked *folders* above it still work. O_NONBLOCK: a FIFO in the file's place must
    not block the daemon until some writer appears.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise error("missing", path=path) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(
                "is a symbolic link; refusing to follow it (configure the real file)", path=path
            ) from exc
        raise error(f"cannot open: {exc.strerror or exc}", path=path) from exc
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise error("is not a regular file (a directory, FIFO or device?)", path=path)
        if signature is not None and _signature(status) == signature:
            return status, None
        with os.fdopen(descriptor, "rb", closefd=False) as file:
            return status, file.read()
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror or exc}", path=path) from exc
    finally:
        os.close(descriptor)
