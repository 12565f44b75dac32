"""The state database's schema: connect, create, refuse a foreign file, prepare and migrate."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from cvat_watch.errors import StateError

log = logging.getLogger("cvat_watch.daemon.store")  # the package's name: log lines keep the name they had

#: ``PRAGMA application_id`` of a cvat-watch database ("CVWT"): tells our file from any other SQLite file.
APPLICATION_ID = 0x43565754
SCHEMA_VERSION = 3


# The baseline of a watch: ``baselines.snapshot`` is the JSON of its snapshot with no tasks
# ("tasks":[]), each task's JSON is a row of baseline_tasks and each generation counter a row of
# baseline_generations. A commit writes the rows that changed, in the same transaction as its events.
_BASELINE_SCHEMA = """
CREATE TABLE baselines (
    watch TEXT PRIMARY KEY,
    snapshot TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE baseline_tasks (
    watch TEXT NOT NULL,
    task_id TEXT NOT NULL,
    task TEXT NOT NULL,
    PRIMARY KEY (watch, task_id)
) WITHOUT ROWID;
CREATE TABLE baseline_generations (
    watch TEXT NOT NULL,
    key TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (watch, key)
) WITHOUT ROWID;
"""

_SCHEMA = (
    """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
    + _BASELINE_SCHEMA
    + """
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    watch TEXT NOT NULL,
    task_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
-- handler_id is the identity of the handler the row was routed to (routes.handler_identity),
-- never a position in the configuration: a row is only ever sent to that handler.
-- watch and task_id are repeated from the event so that the per-task ordering rule of
-- due_deliveries is one indexed lookup instead of a join per candidate row.
CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL REFERENCES events (id),
    handler_id TEXT NOT NULL,
    watch TEXT NOT NULL,
    task_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead', 'gone')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    last_attempt_at REAL,
    last_error TEXT,
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (event_id, handler_id)
);
CREATE INDEX deliveries_queue ON deliveries (handler_id, status, watch, task_id, id);
CREATE INDEX deliveries_status ON deliveries (status, id);
CREATE TABLE handlers (
    id TEXT PRIMARY KEY,
    name TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'gone')),
    reason TEXT,
    changed_at REAL NOT NULL
);
"""
)

# Schema 1 bound rows to the handler's name ("webhook-1" for an unnamed one). The migration
# keeps those rows under "legacy:<name>", which no handler identity matches, until a daemon
# with a handler of that name adopts them once (Store.register_handlers).
_MIGRATE_1_TO_2 = """
ALTER TABLE deliveries RENAME COLUMN handler_key TO handler_id;
UPDATE deliveries SET handler_id = 'legacy:' || handler_id;
ALTER TABLE handlers RENAME COLUMN key TO id;
ALTER TABLE handlers ADD COLUMN name TEXT;
UPDATE handlers SET name = id, id = 'legacy:' || id;
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_LEGACY_PREFIX = "legacy:"


def _describe(exc: BaseException) -> str:
    """A short reason for a StateError, in words a user can act on."""
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, sqlite3.DatabaseError):
        if "file is not a database" in lowered or "malformed" in lowered:
            return f"not a cvat-watch state database, or a corrupt one ({text})"
        if "disk is full" in lowered or "disk full" in lowered:
            return f"the disk is full ({text})"
        if "readonly" in lowered or "read-only" in lowered:
            return f"the database or its directory is read-only ({text})"
        if "disk i/o error" in lowered:
            return f"a write failed: is the disk full or failing? ({text})"
        if "locked" in lowered or "busy" in lowered:
            return f"the database is locked by another process ({text})"
        if "unable to open" in lowered:
            return f"cannot open the database file or create its journal beside it ({text})"
        return text
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "the disk is full"
        return exc.strerror or text
    return text


def _dumps(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _migrate_2_to_3(connection: sqlite3.Connection) -> None:
    """Schemas 1 and 2 kept a watch's whole baseline in one row (snapshot and counters as JSON): split it.

    The task rows are the task objects of the old JSON, written back with the separators the old
    text was written with, so they are the texts a schema-2 commit would write.
    """
    old = connection.execute("SELECT watch, snapshot, generations, updated_at FROM baselines").fetchall()
    connection.execute("ALTER TABLE baselines RENAME TO baselines_schema_2")
    for statement in _BASELINE_SCHEMA.split(";"):
        if statement.strip():
            connection.execute(statement)
    for watch, snapshot, generations, updated_at in old:
        data = json.loads(snapshot)
        tasks = data.get("tasks") or []
        data["tasks"] = []
        connection.execute(
            "INSERT INTO baselines (watch, snapshot, updated_at) VALUES (?, ?, ?)",
            (watch, _dumps(data), updated_at),
        )
        connection.executemany(
            "INSERT INTO baseline_tasks (watch, task_id, task) VALUES (?, ?, ?)",
            [(watch, str(task["id"]), _dumps(task)) for task in tasks],
        )
        connection.executemany(
            "INSERT INTO baseline_generations (watch, key, value) VALUES (?, ?, ?)",
            [(watch, str(key), int(value)) for key, value in json.loads(generations).items()],
        )
    connection.execute("DROP TABLE baselines_schema_2")


def _make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents as 0700 whatever the umask.

    ``Path.mkdir(parents=True)`` gives only the last folder the requested mode; the parents
    would get 0777 minus the umask, which is everything under ``umask 000``.
    """
    missing = []
    while not folder.exists():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by someone else: leave its mode alone
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


def _prepare_briefs(connection: sqlite3.Connection) -> None:
    """The export brief kept per watch (see _briefs): an addition any database can take on open."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS export_briefs ("
        " watch TEXT PRIMARY KEY, key TEXT NOT NULL, brief TEXT NOT NULL) WITHOUT ROWID"
    )


def _prepare_groups(connection: sqlite3.Connection) -> None:
    """The group claims of chat digests: an addition any schema-1 database can take on open."""
    connection.execute(
        "CREATE TABLE IF NOT EXISTS delivery_groups ("
        " delivery_id INTEGER PRIMARY KEY REFERENCES deliveries (id),"
        " group_id TEXT NOT NULL)"
    )
    connection.execute("CREATE INDEX IF NOT EXISTS delivery_groups_by_group ON delivery_groups (group_id)")


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
        check_same_thread=False,  # shared by worker threads, serialised by the lock
    )
    connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    return connection


def _create(path: Path, busy_timeout: float) -> None:
    """Build a new database (WAL, schema, epoch) in a file of its own, then link it to ``path``.

    A crash halfway leaves only the temporary file; ``path`` never holds half a database. When
    another process creates ``path`` meanwhile, its database is the one used.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    # Created by us so that its mode never depends on SQLite's defaults; SQLite gives the -wal
    # and -shm files the mode of the database file.
    os.close(os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    try:
        connection = _connect(temporary, busy_timeout)
        try:
            connection.execute("PRAGMA journal_mode = WAL").fetchone()
            connection.execute("PRAGMA synchronous = FULL")
            _prepare_schema(connection, temporary, create=True)
        finally:
            connection.close()  # the last connection: checkpoints and removes the -wal file
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
        descriptor = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    finally:
        for leftover in (temporary, Path(f"{temporary}-wal"), Path(f"{temporary}-shm")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)


def _refuse_foreign(connection: sqlite3.Connection, path: Path, *, new: bool) -> None:
    """StateError unless the database is ours (or ``new``: in memory, about to get the schema)."""
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    if application_id == APPLICATION_ID:
        return
    if application_id != 0:
        raise StateError(
            "not a cvat-watch state database (an SQLite database of another application)", path=path
        )
    (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    if tables or not new:
        raise StateError(
            "not a cvat-watch state database (a file of something else, or one that lost its"
            " content); move it away to start a new state",
            path=path,
        )


@contextlib.contextmanager
def immediate_transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed when the block ends, rolled back if it raises.

    IMMEDIATE takes the write lock up front, so a concurrent writer in another process makes us
    wait (busy_timeout) instead of failing halfway through.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise


def _prepare_schema(connection: sqlite3.Connection, path: Path, *, create: bool = False) -> str:
    """Create the schema in a new (or in-memory) database, or migrate an older one; refuse one that
    is not ours. Returns the database's epoch.
    """
    with immediate_transaction(connection):
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if application_id == 0 and version == 0:
            (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            if tables or not (create or str(path) == ":memory:"):
                raise StateError(
                    "not a cvat-watch state database (a file of something else, or one that lost"
                    " its content); move it away to start a new state",
                    path=path,
                )
            _run_script(connection, _SCHEMA)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        elif application_id != APPLICATION_ID:
            raise StateError(
                "not a cvat-watch state database (an SQLite database of another application)",
                path=path,
            )
        elif version > SCHEMA_VERSION:
            raise StateError(
                f"the state database has schema version {version}, newer than this cvat-watch"
                f" understands ({SCHEMA_VERSION}); upgrade cvat-watch",
                path=path,
            )
        elif version in (1, 2):
            # Each step in the same transaction as the version bump: a crash leaves the old schema whole.
            if version == 1:
                _run_script(connection, _MIGRATE_1_TO_2)
            try:
                _migrate_2_to_3(connection)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise StateError(
                    f"cannot migrate the state database from schema {version}: a stored baseline is"
                    f" unreadable ({type(exc).__name__})",
                    path=path,
                ) from exc
            log.info("state: schema upgraded from version %d to %d", version, SCHEMA_VERSION)
        elif version < SCHEMA_VERSION:
            raise StateError(f"unknown old schema version {version}", path=path)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        row = connection.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is None:
            # Made once, with the schema (or its upgrade), and never changed afterwards.
            epoch = secrets.token_hex(16)
            connection.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
        else:
            epoch = str(row[0])
    return epoch


def _run_script(connection: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the open transaction first.
    for statement in script.split(";"):
        if statement.strip():
            connection.execute(statement)
