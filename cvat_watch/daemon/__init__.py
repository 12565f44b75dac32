"""The daemon: watch the files, reload, diff, and deliver events through a SQLite outbox.

Data flow, one module per arrow: :mod:`.watcher` (file events, debounced) → :mod:`.reload`
(read, parse, snapshot) → :mod:`.snapshot` / :mod:`.diff` / :mod:`.events` (pure) →
:mod:`.store` (events, outbox rows and the new baseline in one transaction) → :mod:`.dispatch`
→ :mod:`cvat_watch.handlers`. :mod:`.service` owns the process lifecycle (signals, sd_notify);
:mod:`.routes` builds the handlers from the configuration.

Nothing here is imported by ``import cvat_watch``: library users do not pay for watchdog,
sqlite3 or an HTTP client.
"""
