"""The state database: baselines, the outbox of events, and every delivery's fate.

One SQLite file (WAL, ``synchronous=FULL``) holds per watch the last snapshot and generation
counters, every event ever announced with its payload, one delivery row per (event, handler),
and which handlers said they are gone. The baseline is stored in pieces (schema 3): one row for
the snapshot without its tasks, one row per task and one per counter, so that a reload that
changed one task writes that task's row, not the whole project's baseline.
:meth:`Store.commit_reload` writes a reload's events, their deliveries and the new baseline in
one transaction, so the baseline never gets ahead of the outbox: a crash at any point either
keeps the old baseline (the reload is diffed again and yields the same event ids) or keeps
everything.

The store is shared by the dispatcher's worker threads and the main loop: one connection,
every use under one lock. Every SQLite or OS failure surfaces as a
:class:`~cvat_watch.errors.StateError` naming the database file.
"""

from cvat_watch.daemon.store._lock import LOCK_FILE_NAME, StateLock
from cvat_watch.daemon.store._schema import APPLICATION_ID, SCHEMA_VERSION
from cvat_watch.daemon.store._store import Delivery, DeliveryStatus, OutboxSummary, Store, group_identity

__all__ = [
    "APPLICATION_ID",
    "LOCK_FILE_NAME",
    "SCHEMA_VERSION",
    "Delivery",
    "DeliveryStatus",
    "OutboxSummary",
    "StateLock",
    "Store",
    "group_identity",
]
