"""The Store (one connection under one lock), its deliveries and outbox summaries."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote

import attrs

from cvat_watch.daemon.events import Event
from cvat_watch.daemon.snapshot import Snapshot
from cvat_watch.daemon.store._baseline import _baseline_change, _write_baseline, _Written
from cvat_watch.daemon.store._briefs import brief_key, brief_of_text, brief_text
from cvat_watch.daemon.store._schema import (
    _LEGACY_PREFIX,
    APPLICATION_ID,
    SCHEMA_VERSION,
    _connect,
    _create,
    _describe,
    _make_private_dirs,
    _prepare_briefs,
    _prepare_groups,
    _prepare_schema,
    _refuse_foreign,
    immediate_transaction,
)
from cvat_watch.daemon.store._stored import stored_tasks
from cvat_watch.errors import StateError, StateLostError
from cvat_watch.model import ExportBrief

log = logging.getLogger("cvat_watch.daemon.store")  # the package's name: log lines keep the name they had


#: "orphaned" is never stored: ``deliveries`` shows it for a pending row whose handler is no
#: longer configured (the row waits; it is never sent to another handler).
DeliveryStatus = Literal["pending", "delivered", "dead", "gone", "orphaned"]


# A pending row waits while an earlier pending row of the same handler, watch and task exists:
# receivers see a task's events in the order they happened, even across retries.
_HEAD_OF_LINE = """
    d.status = 'pending'
    AND NOT EXISTS (
        SELECT 1 FROM deliveries AS earlier
        WHERE earlier.handler_id = d.handler_id
          AND earlier.status = 'pending'
          AND earlier.watch = d.watch
          AND earlier.task_id = d.task_id
          AND earlier.id < d.id
    )
"""

_DELIVERY_COLUMNS = """
    d.id, d.event_id, e.type, d.watch, d.task_id, d.handler_id, COALESCE(h.name, d.handler_id),
    d.status, d.attempts, d.next_attempt_at, d.last_error, d.created_at, d.delivered_at, e.payload
"""
_DELIVERY_TABLES = """
    FROM deliveries AS d JOIN events AS e ON e.id = d.event_id LEFT JOIN handlers AS h ON h.id = d.handler_id
"""


@attrs.frozen
class Delivery:
    """One event on its way to one handler, and how far it got."""

    id: int
    event_id: str
    event_type: str
    watch: str
    task_id: str
    #: The identity of the handler the row is bound to (see routes.handler_identity).
    handler_id: str
    #: That handler's name in the configuration, for people.
    handler_key: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float | None
    last_error: str | None
    created_at: float
    delivered_at: float | None
    payload: dict[str, Any] = attrs.field(repr=False)

    @classmethod
    def _from_row(cls, row: Sequence[Any]) -> Delivery:
        # The columns are _DELIVERY_COLUMNS, in the order of the fields.
        values = dict(zip(_FIELD_NAMES, row, strict=True))
        values["payload"] = json.loads(values["payload"])
        return cls(**values)


_FIELD_NAMES = tuple(field.name for field in attrs.fields(Delivery))


@attrs.frozen
class OutboxSummary:
    """One handler's deliveries by status; ``retrying``: pending ones that failed before."""

    pending: int = 0
    retrying: int = 0
    dead: int = 0
    gone: int = 0
    delivered: int = 0
    #: Seconds since the oldest pending delivery's event was committed; None when none is pending.
    oldest_pending_age: float | None = None


@attrs.define(eq=False)
class Store:
    """The state database at ``path``; open it with :meth:`open`."""

    _path: Path = attrs.field(alias="path")
    _connection: sqlite3.Connection = attrs.field(alias="connection", repr=False)
    _lock: threading.RLock = attrs.field(factory=threading.RLock, init=False, repr=False)
    _closed: bool = attrs.field(default=False, init=False)
    #: (st_dev, st_ino) of the file when it was opened; None in memory.
    _identity: tuple[int, int] | None = attrs.field(default=None, alias="identity", repr=False)
    _epoch: str = attrs.field(default="", alias="epoch", repr=False)
    # Per watch, the baseline the database holds, to write only what changed (see _Written).
    _written: dict[str, _Written] = attrs.field(factory=dict, init=False, repr=False)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def epoch(self) -> str:
        """A random value made with the database: part of every event id (see events.event_id).

        A state that is lost or reset gets a new epoch, so its events never reuse an id that
        receivers have already seen, while retries and restarts of one state keep their ids.
        """
        return self._epoch

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, busy_timeout: float = 10.0) -> Store:
        """Open (and on first use create) the database; StateError naming ``path`` on failure.

        A new database is built beside ``path`` and linked into place complete, so that a file
        at ``path`` is always a whole cvat-watch database: any other file there (another
        program's database, an emptied or truncated one) is an error, never a first start.
        A new file gets mode 0600 and a new parent directory 0700: the outbox holds task names
        and links that are nobody else's business.
        """
        path = Path(path)
        # ":memory:" is a private, throw-away database (a dry run with no state yet): no file,
        # and no WAL, which SQLite does not do in memory.
        in_memory = str(path) == ":memory:"
        connection: sqlite3.Connection | None = None
        try:
            if not in_memory:
                _make_private_dirs(path.parent)
                if not os.path.lexists(path):
                    _create(path, busy_timeout)
            connection = _connect(path, busy_timeout)
            # Before anything writes (switching to WAL rewrites the header): never touch a file
            # that is not ours.
            _refuse_foreign(connection, path, new=in_memory)
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal" and not in_memory:
                raise StateError(
                    f"cannot switch the database to WAL mode (it stays in {mode!r} mode)",
                    path=path,
                )
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            epoch = _prepare_schema(connection, path)
            _prepare_groups(connection)
            _prepare_briefs(connection)
            identity = None
            if not in_memory:
                status = os.stat(path)
                identity = (status.st_dev, status.st_ino)
        except Exception as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, sqlite3.Error | OSError):
                raise StateError(f"cannot open the state database: {_describe(exc)}", path=path) from exc
            raise
        return cls(path=path, connection=connection, identity=identity, epoch=epoch)

    def close(self) -> None:
        """Close the connection; idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(sqlite3.Error):
                    self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _use(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with SQLite errors turned into StateError."""
        with self._lock:
            if self._closed:
                raise StateError(f"cannot {what}: the store is closed", path=self._path)
            try:
                yield self._connection
            except (sqlite3.Error, OSError) as exc:
                raise StateError(f"cannot {what}: {_describe(exc)}", path=self._path) from exc

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._use(what) as connection:
            # A commit into a deleted or replaced file would be lost without a word.
            self.verify()
            with immediate_transaction(connection):
                yield connection

    # -- baselines and the outbox -----------------------------------------------------------

    def load_baseline(self, watch: str) -> tuple[Snapshot | None, dict[str, int]]:
        """The last committed snapshot of ``watch`` and its generation counters ((None, {}) if none)."""
        with self._use(f"read the baseline of watch {watch!r}") as connection:
            row = connection.execute("SELECT snapshot FROM baselines WHERE watch = ?", (watch,)).fetchone()
            if row is None:
                return None, {}
            # Row by row, without cattrs, when the rows are what this package writes; else as always.
            states = stored_tasks(
                connection.execute("SELECT task FROM baseline_tasks WHERE watch = ?", (watch,))
            )
            tasks = []
            if states is None:
                tasks = connection.execute(
                    "SELECT task_id, task FROM baseline_tasks WHERE watch = ?", (watch,)
                ).fetchall()
            counters = connection.execute(
                "SELECT key, value FROM baseline_generations WHERE watch = ?", (watch,)
            ).fetchall()
        try:
            data = json.loads(row[0])
            data["tasks"] = [json.loads(task) for _, task in tasks]
            snapshot = Snapshot.from_dict(data)
            if states is not None:
                snapshot = attrs.evolve(snapshot, tasks=states)
            generations = {str(key): int(value) for key, value in counters}
        except Exception as exc:  # cattrs raises exception groups of anything
            raise StateError(
                f"the stored baseline of watch {watch!r} is unreadable ({type(exc).__name__})",
                path=self._path,
            ) from exc
        # What the database holds now: the next commit writes only what differs from it.
        self._written[watch] = _Written(
            head=row[0],
            tasks={task.id: task for task in snapshot.tasks},
            order=snapshot.tasks,
            generations=dict(generations),
        )
        return snapshot, generations

    def load_brief(self, watch: str, digest: str) -> ExportBrief | None:
        """The brief stored for ``watch`` if it was read from an export with content ``digest``
        by this version's reader; None when there is none, or another, or an unusable one."""
        with self._use(f"read the export brief of watch {watch!r}") as connection:
            row = connection.execute(
                "SELECT brief FROM export_briefs WHERE watch = ? AND key = ?", (watch, brief_key(digest))
            ).fetchone()
        return brief_of_text(row[0]) if row is not None else None

    def commit_reload(
        self,
        watch: str,
        snapshot: Snapshot,
        generations: Mapping[str, int],
        events: Sequence[Event],
        targets: Callable[[Event], Sequence[str]],
        now: float,
        brief: tuple[str, ExportBrief] | None = None,
    ) -> None:
        """Store the reload's events, one pending delivery per target, and the new baseline, atomically.

        ``brief`` (the digest of the export and the brief read from it) replaces the watch's stored
        brief, for :meth:`load_brief` at the next start.

        Events already in the outbox (a replay after a crash) are left as they are, and so are
        their deliveries. Handlers marked gone get no new deliveries.
        """
        # Routing is the caller's code: run it before the transaction so that its failure
        # leaves nothing half-written and never holds the write lock.
        routed = [(event, list(targets(event))) for event in events]
        # Only the baseline rows that changed are written: at 100,000 tasks the whole baseline is
        # tens of megabytes, a one-job change one task's row. Working out the change outside the
        # transaction is safe: the memory is replaced only once the transaction committed.
        written = self._written.get(watch)
        change = _baseline_change(written, snapshot, generations)
        brief_row = (watch, brief_key(brief[0]), brief_text(brief[1])) if brief is not None else None
        with self._transaction(f"commit a reload of watch {watch!r}") as connection:
            if brief_row is not None:
                connection.execute(
                    "INSERT INTO export_briefs (watch, key, brief) VALUES (?, ?, ?)"
                    " ON CONFLICT (watch) DO UPDATE SET key = excluded.key, brief = excluded.brief",
                    brief_row,
                )
            gone = {key for (key,) in connection.execute("SELECT id FROM handlers WHERE status = 'gone'")}
            for event, keys in routed:
                connection.execute(
                    "INSERT OR IGNORE INTO events (id, type, watch, task_id, payload, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        event.id,
                        event.type,
                        event.watch,
                        event.order_key,
                        json.dumps(event.to_payload(), ensure_ascii=False, separators=(",", ":")),
                        now,
                    ),
                )
                for key in keys:
                    if key in gone:
                        continue
                    connection.execute(
                        "INSERT OR IGNORE INTO handlers (id, status, changed_at) VALUES (?, 'active', ?)",
                        (key, now),
                    )
                    connection.execute(
                        "INSERT OR IGNORE INTO deliveries"
                        " (event_id, handler_id, watch, task_id, status, next_attempt_at, created_at)"
                        " VALUES (?, ?, ?, ?, 'pending', ?, ?)",
                        (event.id, key, event.watch, event.order_key, now, now),
                    )
            _write_baseline(connection, watch, written, change, now)
        self._written[watch] = change.after

    # -- the dispatcher's side --------------------------------------------------------------

    def due_deliveries(self, handler_id: str, now: float, limit: int = 100) -> list[Delivery]:
        """Pending deliveries bound to handler ``handler_id`` due at ``now``, one per task at a time.

        Oldest first within a watch, the watches taking turns: a burst of a thousand events
        from one export must not hold back the next event of another.
        """
        with self._use(f"read the deliveries due for {handler_id!r}") as connection:
            rows = connection.execute(
                f"SELECT {_DELIVERY_COLUMNS} {_DELIVERY_TABLES}"
                f" WHERE d.handler_id = ? AND d.next_attempt_at <= ? AND {_HEAD_OF_LINE}"
                " ORDER BY row_number() OVER (PARTITION BY d.watch ORDER BY d.id), d.id LIMIT ?",
                (handler_id, now, limit),
            ).fetchall()
        return [Delivery._from_row(row) for row in rows]

    def next_due_time(self, handler_id: str | None = None) -> float | None:
        """When a delivery (of ``handler_id``, or of any handler) is due next; None if none is pending.

        Rows held back by the per-task order do not count: they are not due until the row ahead
        of them is settled, and counting them would wake a worker for nothing.
        """
        query = f"SELECT MIN(d.next_attempt_at) FROM deliveries AS d WHERE {_HEAD_OF_LINE}"
        parameters: tuple[str, ...] = ()
        if handler_id is not None:
            query += " AND d.handler_id = ?"
            parameters = (handler_id,)
        with self._use("read the next due delivery") as connection:
            (due,) = connection.execute(query, parameters).fetchone()
        return None if due is None else float(due)

    def record_delivered(self, delivery_id: int, now: float) -> None:
        with self._transaction(f"record delivery {delivery_id} as delivered") as connection:
            connection.execute(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,"
                " next_attempt_at = NULL, last_attempt_at = ?, delivered_at = ? WHERE id = ?",
                (now, now, delivery_id),
            )

    def record_failure(self, delivery_id: int, error: str, now: float, next_attempt_at: float | None) -> None:
        """Count a failed attempt; ``next_attempt_at`` None gives up: the row becomes a dead letter."""
        with self._transaction(f"record a failed attempt of delivery {delivery_id}") as connection:
            connection.execute(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?,"
                " last_attempt_at = ?, last_error = ? WHERE id = ?",
                (
                    "pending" if next_attempt_at is not None else "dead",
                    next_attempt_at,
                    now,
                    error,
                    delivery_id,
                ),
            )

    def shift_retries(self, moves: Mapping[int, float]) -> None:
        """Move the next attempt of pending rows by the seconds given per row id (a clock step)."""
        with self._transaction("move retry times after a clock step") as connection:
            connection.executemany(
                "UPDATE deliveries SET next_attempt_at = next_attempt_at + ?"
                " WHERE id = ? AND status = 'pending' AND attempts > 0",
                [(step, row) for row, step in moves.items()],
            )

    def mark_gone(self, handler_id: str, reason: str, now: float) -> None:
        """The target said it is gone for good: its pending rows become 'gone', and it gets no new ones."""
        with self._transaction(f"mark handler {handler_id!r} as gone") as connection:
            connection.execute(
                "INSERT INTO handlers (id, status, reason, changed_at) VALUES (?, 'gone', ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET status = 'gone', reason = excluded.reason,"
                " changed_at = excluded.changed_at",
                (handler_id, reason, now),
            )
            connection.execute(
                "UPDATE deliveries SET status = 'gone', next_attempt_at = NULL,"
                " last_error = COALESCE(last_error, ?)"
                " WHERE handler_id = ? AND status = 'pending'",
                (reason, handler_id),
            )

    # -- the operator's side ----------------------------------------------------------------

    def deliveries(
        self,
        *,
        failed_only: bool = False,
        limit: int | None = None,
        configured: Collection[str] | None = None,
    ) -> list[Delivery]:
        """Deliveries, newest first; ``failed_only``: dead, gone, orphaned, and pending ones that have failed.

        With ``configured`` (the identities of the configured handlers), a pending row bound to
        any other handler is shown as ``"orphaned"``: it waits for its handler to come back.
        """
        columns = _DELIVERY_COLUMNS
        parameters: list[Any] = []
        orphaned = "0"
        if configured is not None:
            orphaned = "(d.status = 'pending' AND d.handler_id NOT IN (SELECT value FROM json_each(?)))"
            columns = columns.replace(
                "d.status,", f"CASE WHEN {orphaned} THEN 'orphaned' ELSE d.status END,", 1
            )
            parameters.append(json.dumps(sorted(configured)))
        where = ""
        if failed_only:
            where = (
                "WHERE d.status IN ('dead', 'gone') OR (d.status = 'pending' AND d.attempts > 0)"
                f" OR {orphaned}"
            )
            if configured is not None:
                parameters.append(parameters[0])
        query = f"SELECT {columns} {_DELIVERY_TABLES} {where} ORDER BY d.id DESC LIMIT ?"
        with self._use("list deliveries") as connection:
            # LIMIT -1 is SQLite for "no limit".
            rows = connection.execute(query, (*parameters, -1 if limit is None else limit)).fetchall()
        return [Delivery._from_row(row) for row in rows]

    def redeliver(self, delivery_id: int, now: float) -> Delivery:
        """Queue a delivery again, due now, attempts kept; StateError if there is no such delivery.

        Redelivering to a handler marked gone makes it active again: an operator asking for a
        delivery is saying the target is back.
        """
        with self._transaction(f"redeliver delivery {delivery_id}") as connection:
            row = connection.execute(
                "SELECT handler_id FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()
            if row is None:
                raise StateError(f"no delivery with id {delivery_id}", path=self._path)
            connection.execute(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ? WHERE id = ?",
                (now, delivery_id),
            )
            connection.execute(
                "UPDATE handlers SET status = 'active', reason = NULL, changed_at = ?"
                " WHERE id = ? AND status = 'gone'",
                (now, row[0]),
            )
            delivery = connection.execute(
                f"SELECT {_DELIVERY_COLUMNS} {_DELIVERY_TABLES} WHERE d.id = ?",
                (delivery_id,),
            ).fetchone()
        return Delivery._from_row(delivery)

    def handler_status(self) -> dict[str, str]:
        """Every handler the store has seen, by name: ``"active"`` or ``"gone: <reason>"``.

        A name that several identities have had (a handler whose URL changed) is shown with
        each identity: ``"hook (webhook:1a2b…)"``.
        """
        with self._use("read handler status") as connection:
            rows = connection.execute(
                "SELECT id, COALESCE(name, id), status, reason FROM handlers ORDER BY name, id"
            ).fetchall()
        names = [name for _id, name, _status, _reason in rows]
        return {
            (name if names.count(name) == 1 else f"{name} ({handler_id})"): (
                status if status != "gone" else f"gone: {reason or 'no reason given'}"
            )
            for handler_id, name, status, reason in rows
        }

    # -- read-only views: metrics, the status page, admin commands ---------------------------

    @classmethod
    def open_read_only(cls, path: Path | str, *, busy_timeout: float = 10.0) -> Store:
        """Open an existing database for reading only; StateError if it is missing or not ours.

        Never creates the file (an admin command pointed at the wrong folder must say so, not
        report an empty outbox), and never writes: the daemon keeps its own connection, and a
        reader on a second connection does not wait for the daemon's lock between statements.
        """
        path = Path(path)
        if not path.is_file():
            raise StateError("no state database here", path=path)
        connection: sqlite3.Connection | None = None
        try:
            connection = sqlite3.connect(
                f"file:{quote(str(path.resolve()))}?mode=ro",
                uri=True,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            application_id = connection.execute("PRAGMA application_id").fetchone()[0]
            version = connection.execute("PRAGMA user_version").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            if connection is not None:
                connection.close()
            raise StateError(f"cannot open the state database: {_describe(exc)}", path=path) from exc
        if application_id == APPLICATION_ID and version < SCHEMA_VERSION:
            connection.close()
            raise StateError(
                f"the state has the older schema version {version}: start the daemon (or run"
                " `cvat-watch once`) once to upgrade it",
                path=path,
            )
        if application_id != APPLICATION_ID or version != SCHEMA_VERSION:
            connection.close()
            raise StateError(
                f"not a cvat-watch state database of schema version {SCHEMA_VERSION}"
                f" (application id {application_id:#x}, version {version})",
                path=path,
            )
        return cls(path=path, connection=connection)

    def outbox_summary(self, now: float, *, delivered: bool = False) -> dict[str, OutboxSummary]:
        """Per handler name seen in the state: its counts by status and its oldest pending age.

        Each count is a range of the (handler, status, …, id) index, so a scrape costs what is
        pending, not what was ever delivered; ``delivered`` counts those too (the status page).
        A name that had several identities (a handler whose URL changed) sums them.
        """
        statuses = ("pending", "dead", "gone", "delivered") if delivered else ("pending", "dead", "gone")
        totals: dict[str, dict[str, float]] = {}
        with self._use("summarise the outbox") as connection:
            handlers = connection.execute("SELECT id, COALESCE(name, id) FROM handlers").fetchall()
            for handler_id, name in handlers:
                total = totals.setdefault(name, dict.fromkeys((*statuses, "retrying"), 0.0))
                for status in statuses:
                    count, first = connection.execute(
                        "SELECT count(*), min(id) FROM deliveries WHERE handler_id = ? AND status = ?",
                        (handler_id, status),
                    ).fetchone()
                    total[status] += count
                    if status == "pending" and first is not None:
                        # Ids grow with creation time: the smallest pending id is the oldest row.
                        (created,) = connection.execute(
                            "SELECT created_at FROM deliveries WHERE id = ?", (first,)
                        ).fetchone()
                        total["oldest"] = max(total.get("oldest", 0.0), now - float(created))
                (retrying,) = connection.execute(
                    "SELECT count(*) FROM deliveries WHERE handler_id = ? AND status = 'pending'"
                    " AND attempts > 0",
                    (handler_id,),
                ).fetchone()
                total["retrying"] += retrying
        return {
            name: OutboxSummary(
                pending=int(total["pending"]),
                retrying=int(total["retrying"]),
                dead=int(total["dead"]),
                gone=int(total["gone"]),
                delivered=int(total.get("delivered", 0)),
                oldest_pending_age=max(0.0, total["oldest"]) if "oldest" in total else None,
            )
            for name, total in sorted(totals.items())
        }

    def register_handlers(self, names: Mapping[str, str], now: float) -> None:
        """Record the configured handlers: identity -> name.

        A handler whose name a schema-1 database bound rows to adopts those rows (and a "gone"
        mark) once: schema 1 knew handlers only by name, and the daemon that wrote them ran
        this configuration's handler of that name, as far as anything can tell.
        """
        with self._transaction("record the configured handlers") as connection:
            for handler_id, name in names.items():
                connection.execute(
                    "INSERT INTO handlers (id, name, status, changed_at) VALUES (?, ?, 'active', ?)"
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                    (handler_id, name, now),
                )
                legacy = _LEGACY_PREFIX + name
                old = connection.execute(
                    "SELECT status, reason, changed_at FROM handlers WHERE id = ?", (legacy,)
                ).fetchone()
                if old is None:
                    continue
                connection.execute(
                    "UPDATE handlers SET status = ?, reason = ?, changed_at = ? WHERE id = ?",
                    (*old, handler_id),
                )
                connection.execute("DELETE FROM handlers WHERE id = ?", (legacy,))
                adopted = connection.execute(
                    "UPDATE OR IGNORE deliveries SET handler_id = ? WHERE handler_id = ?",
                    (handler_id, legacy),
                ).rowcount
                log.info(
                    "state: %d delivery row(s) of the old schema adopted by handler %s (%s)",
                    adopted,
                    name,
                    handler_id,
                )

    def claim(self, config_path: str) -> str | None:
        """Record that ``config_path`` now delivers from this state; the configuration that did before.

        None when it was the same one (or nobody yet). Two configurations on one state folder is
        almost always a mistake (their watches' baselines would mix when names repeat), so the
        caller warns; a configuration file that moved is the harmless case.
        """
        with self._transaction("record the configuration using the state") as connection:
            row = connection.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
            connection.execute(
                "INSERT INTO meta (key, value) VALUES ('config', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (config_path,),
            )
        previous = None if row is None else str(row[0])
        return None if previous == config_path else previous

    # -- keeping the file healthy -----------------------------------------------------------

    def verify(self) -> None:
        """StateLostError if the database file was deleted or replaced since it was opened.

        SQLite keeps writing to the file it opened: after an ``rm`` or a ``mv`` over it, every
        commit would land in a file nobody will ever open again, and the next start would be a
        silent first start whose generations (and so event ids) begin again.
        """
        if self._identity is None:
            return
        try:
            status = os.stat(self._path)
        except FileNotFoundError:
            raise StateLostError(
                "the state database was deleted while cvat-watch was using it; stopping instead of"
                " carrying on into a state nobody will read (restore it from a backup, or restart"
                " to begin a new state with new event ids)",
                path=self._path,
            ) from None
        except OSError as exc:
            raise StateError(f"cannot check the state database: {_describe(exc)}", path=self._path) from exc
        if (status.st_dev, status.st_ino) != self._identity:
            raise StateLostError(
                "the state database was replaced by another file while cvat-watch was using it;"
                " stopping (restart to use the new file)",
                path=self._path,
            )

    def checkpoint(self) -> None:
        """Copy the WAL into the database file as far as no reader needs it (PASSIVE: never waits).

        SQLite checkpoints by itself after about 1000 pages of WAL; a quiet daemon may not write
        that much in weeks, and a WAL lost (a backup of the .db file alone) would lose them.
        """
        if self._identity is None:
            return
        with self._use("checkpoint the write-ahead log") as connection:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def prune(self, older_than: float) -> tuple[int, int]:
        """Delete delivered and dead rows settled before ``older_than``, then events no row needs.

        What stops an event from being announced twice is the baseline and its generation
        counters (and the epoch in every id), not old outbox rows: a crash replay only ever
        re-inserts the events of a reload that was never committed. Pending and gone rows stay,
        and so do their events. Returns (deliveries, events) deleted.
        """
        with self._transaction("delete old deliveries") as connection:
            # A digest's group claims point at their rows: they go first.
            connection.execute(
                "DELETE FROM delivery_groups WHERE delivery_id IN (SELECT id FROM deliveries"
                " WHERE status IN ('delivered', 'dead')"
                " AND COALESCE(delivered_at, last_attempt_at, created_at) < ?)",
                (older_than,),
            )
            deliveries = connection.execute(
                "DELETE FROM deliveries WHERE status IN ('delivered', 'dead')"
                " AND COALESCE(delivered_at, last_attempt_at, created_at) < ?",
                (older_than,),
            ).rowcount
            events = connection.execute(
                "DELETE FROM events WHERE created_at < ?"
                " AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id)",
                (older_than,),
            ).rowcount
        return deliveries, events

    def durability(self) -> dict[str, object]:
        """The settings the store's promises rest on, as its own connection has them now.

        ``synchronous`` is per connection and lost on reopen: reading it back here is the only
        way to know that a commit is on disk when it returns (2, FULL) rather than some time later.
        """
        with self._use("read the durability settings") as connection:
            return {
                name: connection.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "foreign_keys")
            }

    def __repr__(self) -> str:
        return f"<Store {str(self._path)!r}{' closed' if self._closed else ''}>"

    # -- grouped deliveries (chat digests) --------------------------------------------------
    #
    # A route with a group wait is not delivered row by row: its pending rows are claimed
    # together into a group once the oldest has waited long enough (or enough have gathered).
    # The claim is committed before anything is sent, so after a crash the same rows go out
    # again as the same group, under the same id; outcomes are recorded for the whole group at once.

    def claim_group(
        self, handler_id: str, now: float, *, wait: float, limit: int, force: bool = False
    ) -> tuple[str, list[Delivery]] | None:
        """The next group of ``handler_id`` to attempt, claiming one if it is time; None if none is due.

        A group claimed earlier and still pending comes first, once due. Otherwise the oldest
        unclaimed pending rows (at most ``limit``) become a group when the oldest is ``wait``
        seconds old, when ``limit`` rows are waiting, or with ``force``.
        """
        with self._transaction(f"claim a group of deliveries for {handler_id!r}") as connection:
            claimed = connection.execute(
                "SELECT g.group_id FROM delivery_groups AS g JOIN deliveries AS d ON d.id = g.delivery_id"
                " WHERE d.handler_id = ? AND d.status = 'pending' AND d.next_attempt_at <= ?"
                " ORDER BY d.id LIMIT 1",
                (handler_id, now),
            ).fetchone()
            if claimed is None:
                rows = connection.execute(
                    "SELECT d.id, d.event_id, d.created_at FROM deliveries AS d"
                    " WHERE d.handler_id = ? AND d.status = 'pending' AND d.next_attempt_at <= ?"
                    " AND NOT EXISTS (SELECT 1 FROM delivery_groups AS g WHERE g.delivery_id = d.id)"
                    " ORDER BY d.id LIMIT ?",
                    (handler_id, now, limit),
                ).fetchall()
                if not rows or not (force or len(rows) >= limit or rows[0][2] + wait <= now):
                    return None
                group_id = group_identity(event for _id, event, _created in rows)
                connection.executemany(
                    "INSERT INTO delivery_groups (delivery_id, group_id) VALUES (?, ?)",
                    [(row_id, group_id) for row_id, _event, _created in rows],
                )
            else:
                (group_id,) = claimed
            members = connection.execute(
                f"SELECT {_DELIVERY_COLUMNS} {_DELIVERY_TABLES}"
                " JOIN delivery_groups AS g ON g.delivery_id = d.id"
                " WHERE g.group_id = ? AND d.handler_id = ? AND d.status = 'pending' ORDER BY d.id",
                (group_id, handler_id),
            ).fetchall()
        return group_id, [Delivery._from_row(row) for row in members]

    def next_group_time(self, handler_id: str, *, wait: float) -> float | None:
        """When :meth:`claim_group` may next return a group of ``handler_id``; None if nothing is pending."""
        with self._use("read the next due group") as connection:
            (claimed,) = connection.execute(
                "SELECT MIN(d.next_attempt_at) FROM deliveries AS d JOIN delivery_groups AS g"
                " ON g.delivery_id = d.id WHERE d.handler_id = ? AND d.status = 'pending'",
                (handler_id,),
            ).fetchone()
            (oldest,) = connection.execute(
                "SELECT MIN(MAX(d.created_at + ?, d.next_attempt_at)) FROM deliveries AS d"
                " WHERE d.handler_id = ? AND d.status = 'pending'"
                " AND NOT EXISTS (SELECT 1 FROM delivery_groups AS g WHERE g.delivery_id = d.id)",
                (wait, handler_id),
            ).fetchone()
        times = [float(t) for t in (claimed, oldest) if t is not None]
        return min(times) if times else None

    def record_group(
        self,
        delivery_ids: Sequence[int],
        now: float,
        *,
        error: str | None = None,
        next_attempt_at: float | None = None,
    ) -> None:
        """One outcome for every row of a group: delivered (no error), retry at next_attempt_at, or dead."""
        marks = ",".join("?" * len(delivery_ids))
        with self._transaction(f"record the outcome of a group of {len(delivery_ids)}") as connection:
            if error is None:
                connection.execute(
                    "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1,"
                    f" next_attempt_at = NULL, last_attempt_at = ?, delivered_at = ? WHERE id IN ({marks})",
                    (now, now, *delivery_ids),
                )
            else:
                connection.execute(
                    "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?,"
                    f" last_attempt_at = ?, last_error = ? WHERE id IN ({marks})",
                    (
                        "pending" if next_attempt_at is not None else "dead",
                        next_attempt_at,
                        now,
                        error,
                        *delivery_ids,
                    ),
                )


def group_identity(event_ids: Iterable[str]) -> str:
    """``grp_`` and 32 hex digits from the sorted event ids: the same group, the same id."""
    material = json.dumps(sorted(event_ids), ensure_ascii=False)
    return "grp_" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]
