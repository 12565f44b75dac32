"""One ``[watch.cvat]`` table: keep the watch's two files fresh from a CVAT server.

Each poll lists the project's (or task's) jobs and writes the job-status file in next-cvat's flat
format (``task_id``, ``job_id``, ``task_name``, ``stage``, ``state``, ``assignee``, ``type``),
atomically and only when it changed. The files stay the interface: the daemon's watcher, reload,
diff and outbox do the rest, unchanged.

The order is the point. When a task newly becomes complete (by the watch's completion rule, the
model's one function), the source first exports the annotations, checks that they load, and
replaces the annotations file; only then does it write the job-status file that shows the
completion. So ``task.completed`` is never announced before the export that holds the task is on
disk. Several completions in one poll share one export. When the export fails (on CVAT's side, a
timeout, an invalid archive), the good annotations file is left alone and the job-status file is
written with the newly complete tasks' jobs as they were: the completion shows up once a later
poll's export succeeds. A SIGKILL at any point leaves files that a restart completes the same
way: the completion is on disk only with its export, so it is announced once.

Problems are logged once each (a new problem, or the return to health), not once per poll.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from cvat_watch.config import CvatSourceConfig, WatchConfig
from cvat_watch.cvatxml import loads_brief
from cvat_watch.daemon.cvat.client import CvatClient
from cvat_watch.errors import CvatServerError, CvatWatchError
from cvat_watch.jobstatus import parse_job_status
from cvat_watch.model import CompletionRule, JobStatus, is_task_complete

__all__ = ["CvatSource", "PollOutcome", "flat_records", "make_client"]

log = logging.getLogger(__name__)

#: After a CVAT webhook, wait this long for more before polling: PATCHes close together share a poll.
TRIGGER_SETTLE = 0.2
#: Seconds between polls after a failure grow up to this (or the poll interval, if longer).
MAX_ERROR_DELAY = 300.0


@attrs.frozen
class PollOutcome:
    """What one poll did: for the log, ``pull`` and the tests."""

    jobs: int
    requests: int
    exported: bool
    wrote_annotations: bool
    wrote_job_status: bool
    newly_complete: tuple[str, ...] = ()
    withheld: tuple[str, ...] = ()
    #: A server problem (CvatServerError), or files that could not be written (CvatWatchError).
    error: CvatWatchError | None = None

    @classmethod
    def failed(cls, error: CvatWatchError) -> PollOutcome:
        """A poll that did nothing because of ``error``."""
        return cls(0, 0, False, False, False, error=error)


def make_client(config: CvatSourceConfig, *, stop: threading.Event | None = None) -> CvatClient:
    return CvatClient(
        config.url,
        token=config.token,
        username=config.username,
        password=config.password,
        organization=config.organization,
        verify_tls=config.verify_tls,
        ca_file=config.ca_file,
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        export_timeout=config.export_timeout,
        page_size=config.page_size,
        stop=stop,
    )


def flat_records(jobs: Sequence[Mapping[str, Any]], task_names: Mapping[int, str]) -> list[dict[str, Any]]:
    """CVAT job objects → next-cvat's flat rows (plus ``type``), sorted by task then job id."""
    rows = []
    for job in jobs:
        assignee = job.get("assignee")
        task_id = job.get("task_id")
        rows.append(
            {
                "task_id": str(task_id),
                "job_id": job.get("id"),
                "task_name": task_names.get(task_id) if isinstance(task_id, int) else None,
                "stage": job.get("stage"),
                "state": job.get("state"),
                "assignee": assignee.get("username") if isinstance(assignee, dict) else None,
                "type": job.get("type"),
            }
        )
    rows.sort(key=lambda row: (_int_key(row["task_id"]), _int_key(row["job_id"])))
    return rows


def _int_key(value: object) -> tuple[int, str]:
    text = str(value)
    return (int(text), "") if text.isdigit() else (-1, text)


def _render(rows: Sequence[Mapping[str, Any]]) -> bytes:
    return (json.dumps(list(rows), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _complete_tasks(records: Sequence[JobStatus], rule: CompletionRule) -> set[str]:
    by_task: dict[str, list[JobStatus]] = {}
    for record in records:
        by_task.setdefault(record.task_id, [])
        if record.counts:
            by_task[record.task_id].append(record)
    return {task for task, jobs in by_task.items() if is_task_complete(jobs, rule)}


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.cvat-watch-{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


@attrs.define
class CvatSource:
    """Polls one CVAT project or task for one watch; :meth:`poll` once, or :meth:`start` a thread."""

    watch: WatchConfig
    client_factory: Callable[[threading.Event], CvatClient] | None = None
    _stop: threading.Event = attrs.field(factory=threading.Event)
    _wake: threading.Event = attrs.field(factory=threading.Event)
    _thread: threading.Thread | None = None
    _client: CvatClient | None = None
    _version: str | None = None
    _task_names: dict[int, str] = attrs.field(factory=dict)
    _problem: str | None = None
    _export_owed: bool = False
    #: Log problems (the daemon); ``pull`` turns this off and prints the one error itself.
    report_errors: bool = True
    _failures: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    last_success: float | None = None

    @property
    def name(self) -> str:
        return self.watch.name

    @property
    def config(self) -> CvatSourceConfig:
        assert self.watch.cvat is not None
        return self.watch.cvat

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"cvat-source-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def trigger(self) -> None:
        """Poll now (a CVAT webhook said something changed); several triggers make one poll."""
        self._wake.set()

    # --- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                outcome = self.poll()
            except Exception:
                # A bug must not end the source silently: log it, keep the files, poll again.
                log.exception("watch %s: the CVAT source failed; polling again later", self.name)
                outcome = PollOutcome.failed(CvatWatchError("internal error"))
                self._failures += 1
            delay = self.config.poll_interval
            error = outcome.error
            if error is not None:
                retry_after = getattr(error, "retry_after", None) or 0.0
                retry = getattr(error, "retry", True)
                backoff = min(
                    MAX_ERROR_DELAY, self.config.poll_interval * 2 ** min(max(self._failures - 1, 0), 8)
                )
                # Problems a person must fix (401/403) are looked at every poll interval; a
                # struggling server gets more room, and never less than it asked for.
                delay = max(retry_after, backoff if retry else self.config.poll_interval)
            if self._wake.wait(delay) and not self._stop.is_set():
                # Let a burst of CVAT webhooks settle into one poll.
                self._stop.wait(TRIGGER_SETTLE)

    # --- one poll ---------------------------------------------------------------------------
    def poll(self, *, force_export: bool = False) -> PollOutcome:
        """List, export when needed (or always, with ``force_export``, unless ``export = "never"``),
        write the files; never raises for a server problem: the outcome carries it."""
        with self._lock:
            try:
                outcome = self._poll(force_export=force_export)
            except CvatServerError as error:
                if not self._stop.is_set():
                    self._failures += 1
                    self._report(error)
                return PollOutcome.failed(error)
            except OSError as exc:
                # The export folder is not writable (permissions, disk full): the files stay as they were.
                problem = CvatWatchError(
                    f"cannot write the watched files: {exc.strerror or exc} ({exc.filename})"
                )
                self._failures += 1
                self._report(problem)
                return PollOutcome.failed(problem)
            self.last_success = time.time()
            if outcome.error is None:
                self._failures = 0
                if self._problem is not None:
                    log.info("watch %s: CVAT server %s answers again", self.name, self.config.url)
                    self._problem = None
            return outcome

    def _report(self, error: CvatWatchError) -> None:
        text = str(error)
        if not self.report_errors:
            self._problem = text
            return
        if text != self._problem:
            log.error("watch %s: %s", self.name, text)
            self._problem = text
        else:
            log.debug("watch %s: still failing: %s", self.name, text)

    def _ensure_client(self) -> CvatClient:
        if self._client is None:
            factory = self.client_factory or (lambda stop: make_client(self.config, stop=stop))
            self._client = factory(self._stop)
        if self._version is None:
            self._version = self._client.check_server()
            log.info("watch %s: CVAT %s at %s", self.name, self._version, self.config.url)
        return self._client

    def _poll(self, *, force_export: bool) -> PollOutcome:
        config = self.config
        client = self._ensure_client()
        requests_before = client.requests_sent
        jobs = client.list_jobs(project=config.project, task=config.task)
        task_ids = {job.get("task_id") for job in jobs if isinstance(job.get("task_id"), int)}
        names_fresh = False
        if not task_ids <= set(self._task_names):
            # One more listing only when a task is new to us: names rarely change.
            self._refresh_task_names(client)
            names_fresh = True
        rows = flat_records(jobs, self._task_names)
        rendered = _render(rows)
        new_records = parse_job_status(rendered)
        job_status_path = self.watch.job_status
        assert job_status_path is not None
        old_bytes, old_records = self._read_listing(job_status_path, rendered, new_records)
        rule = self.watch.completion
        newly_complete = tuple(
            sorted(_complete_tasks(new_records, rule) - _complete_tasks(old_records, rule), key=_int_key)
        )
        if newly_complete and not names_fresh:
            # A completion is announced with the task's name: take the current one (a rename
            # since the last listing of tasks would otherwise be missed), one request per export.
            self._refresh_task_names(client)
            rows = flat_records(jobs, self._task_names)
            rendered = _render(rows)
        annotations_missing = not self.watch.annotations.exists()
        changed = rendered != old_bytes
        if config.export == "never":
            wanted = False
        elif config.export == "on-change":
            wanted = changed or annotations_missing
        else:
            wanted = bool(newly_complete) or annotations_missing
        # An export that failed is owed (on-change has no withheld completion to remember it by).
        wanted = wanted or ((force_export or self._export_owed) and config.export != "never")
        exported = wrote_annotations = False
        withheld: tuple[str, ...] = ()
        export_error: CvatServerError | None = None
        if wanted:
            try:
                result = client.export(project=config.project, task=config.task)
                self._check_export(result.xml)
                write_atomic(self.watch.annotations, result.xml)
                exported = wrote_annotations = True
                self._export_owed = False
                log.info(
                    "watch %s: exported %s in %.2f s%s",
                    self.name,
                    f"project {config.project}" if config.project is not None else f"task {config.task}",
                    result.seconds,
                    f" (newly complete: {', '.join(newly_complete)})" if newly_complete else "",
                )
            except CvatServerError as error:
                if self._stop.is_set():
                    raise
                export_error = error
                self._export_owed = True
                self._failures += 1
                self._report(error)
        if export_error is not None and config.export == "on-change":
            # The export follows every change of the listing: keep the whole old listing, so the
            # difference on disk still owes the export after a restart, not only in this process.
            withheld = newly_complete
            changed = False
        elif export_error is not None and newly_complete:
            # Never show a completion whose export is not on disk: keep those tasks' old rows.
            withheld = newly_complete
            rows = self._withhold(rows, old_bytes, set(withheld))
            rendered = _render(rows)
            changed = rendered != old_bytes
        if changed:
            write_atomic(job_status_path, rendered)
        outcome = PollOutcome(
            jobs=len(jobs),
            requests=client.requests_sent - requests_before,
            exported=exported,
            wrote_annotations=wrote_annotations,
            wrote_job_status=changed,
            newly_complete=newly_complete,
            withheld=withheld,
            error=export_error,
        )
        # With an export error the listing still went out; the export is retried after the error delay.
        log.debug("watch %s: poll %s", self.name, outcome)
        return outcome

    def _refresh_task_names(self, client: CvatClient) -> None:
        config = self.config
        tasks = client.list_tasks(project=config.project, task=config.task)
        self._task_names.update(
            {t["id"]: str(t.get("name", "")) for t in tasks if isinstance(t.get("id"), int)}
        )

    def _check_export(self, xml: bytes) -> None:
        try:
            loads_brief(xml, path=self.watch.annotations)
        except CvatWatchError as error:
            raise CvatServerError(
                f"the export does not load, the annotations file was kept: {error}",
                server=self.config.url,
                retry=True,
            ) from None

    @staticmethod
    def _read_listing(
        path: Path, rendered: bytes, records: tuple[JobStatus, ...]
    ) -> tuple[bytes | None, tuple[JobStatus, ...]]:
        """The listing on disk and its records; when it is what was just rendered (a steady poll),
        the records of that rendering, which the same bytes would give again."""
        try:
            data = path.read_bytes()
        except OSError:
            return None, ()
        if data == rendered:
            return data, records
        try:
            return data, parse_job_status(data, path=path)
        except CvatWatchError:
            return data, ()

    @staticmethod
    def _withhold(
        rows: list[dict[str, Any]], old_bytes: bytes | None, tasks: set[str]
    ) -> list[dict[str, Any]]:
        old_rows: list[dict[str, Any]] = []
        if old_bytes is not None:
            try:
                loaded = json.loads(old_bytes)
            except (json.JSONDecodeError, UnicodeDecodeError):
                loaded = []
            if isinstance(loaded, list):
                old_rows = [
                    row for row in loaded if isinstance(row, dict) and str(row.get("task_id")) in tasks
                ]
        kept = [row for row in rows if row["task_id"] not in tasks] + old_rows
        kept.sort(key=lambda row: (_int_key(row.get("task_id")), _int_key(row.get("job_id"))))
        return kept
