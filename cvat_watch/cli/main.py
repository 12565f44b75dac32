"""The ``cvat-watch`` command: a thin adapter from argv to the library and the daemon.

Every :class:`~cvat_watch.errors.CvatWatchError` becomes one line on stderr and exit code 2;
the library never imports this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from cvat_watch.errors import CvatWatchError

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


# -- subcommands ---------------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    from cvat_watch.cli.progress import reading_progress
    from cvat_watch.cli.report import format_table, task_reports, unreported_tasks
    from cvat_watch.converter import to_dict
    from cvat_watch.model import Annotations

    # A project export of a gigabyte takes a while: say how far it got, on a terminal only.
    with reading_progress(args.export, sys.stderr):
        annotations = Annotations.from_path(args.export, args.jobs)
    reports = task_reports(annotations, base_url=args.base_url)
    for note in unreported_tasks(annotations):
        print(f"cvat-watch: {args.export}: {note}", file=sys.stderr)
    if args.json:
        _print_json([to_dict(report) for report in reports])
    elif reports:
        print(format_table(reports))
        if args.jobs is None:
            print("(no --jobs file given: no task counts as completed)", file=sys.stderr)
    return EXIT_OK


def _setup_logging(args: argparse.Namespace) -> None:
    from cvat_watch.cli.logs import configure_logging

    configure_logging(json_lines=args.log_format == "json", level=args.log_level.upper())


def _setup_command_logging() -> None:
    """Short commands: warnings (the config's among them) once on stderr, as the command's own lines."""
    from cvat_watch.cli.logs import configure_logging

    configure_logging(level="WARNING", command=True)


def _load_config(args: argparse.Namespace) -> Any:
    from cvat_watch.config import load_config

    return load_config(args.config)


def _state_database(args: argparse.Namespace) -> Any:
    from cvat_watch.cli.state import find_state

    return find_state(state_dir=args.state_dir, config=args.config)


def _cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cvat_watch.daemon.service import Daemon

    _setup_logging(args)
    if os.geteuid() == 0 and not args.allow_root:
        print(
            "cvat-watch: error: refusing to run as root: use a dedicated user or systemd's "
            "DynamicUser=yes (or pass --allow-root)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return Daemon(Path(args.config)).run()


def _cmd_once(args: argparse.Namespace) -> int:
    from cvat_watch.daemon.service import run_once

    _setup_logging(args)
    config = _load_config(args)
    outcomes = run_once(config, dry_run=args.dry_run)
    failed = [outcome for outcome in outcomes if outcome.status == "failed"]
    if args.dry_run:
        _print_json([event.to_payload() for outcome in outcomes for event in outcome.events])
    for outcome in failed:
        print(f"cvat-watch: error: {outcome.error}", file=sys.stderr)
    return EXIT_FAILURE if failed else EXIT_OK


def _cmd_check_config(args: argparse.Namespace) -> int:
    from cvat_watch.cli.deliveries import describe_config

    _setup_command_logging()
    config = _load_config(args)
    lines, problems = describe_config(config)
    print("\n".join(lines))
    for problem in problems:
        print(f"cvat-watch: error: {problem}", file=sys.stderr)
    return EXIT_USAGE if problems else EXIT_OK


def _cmd_deliveries(args: argparse.Namespace) -> int:
    from cvat_watch.cli.deliveries import format_deliveries
    from cvat_watch.daemon.store import Store

    _setup_command_logging()
    # Read-only: no handler is started and nothing is ever created. Reading needs no lock: the
    # database is in WAL mode, and a reader never blocks the daemon. Run by root on the
    # service's state, SQLite gives the -wal and -shm files it creates to the database's owner.
    configured = _configured_identities(args)
    store = Store.open_read_only(_state_database(args))
    try:
        rows = store.deliveries(failed_only=args.failed, limit=args.limit, configured=configured)
        gone = store.handler_status()
    finally:
        store.close()
    if args.json:
        _print_json([_delivery_dict(row) for row in rows])
    else:
        print(format_deliveries(rows, gone))
    return EXIT_OK


def _delivery_dict(row: Any) -> dict[str, Any]:
    from datetime import UTC, datetime

    from cvat_watch.converter import to_dict

    data: dict[str, Any] = to_dict(row)
    data.pop("payload", None)
    for field in ("created_at", "delivered_at", "next_attempt_at"):
        if data.get(field) is not None:
            data[field] = datetime.fromtimestamp(data[field], UTC).isoformat(timespec="milliseconds")
    return data


def _cmd_redeliver(args: argparse.Namespace) -> int:
    from cvat_watch.daemon.mailbox import Mailbox
    from cvat_watch.daemon.store import StateLock, Store
    from cvat_watch.errors import StateError, StateLockedError

    _setup_command_logging()
    database = _state_database(args)
    configured = _configured_identities(args)
    try:
        # The lock: only one process writes a state; without a daemon, this command is it.
        lock = StateLock.acquire(database.parent, command="cvat-watch redeliver")
    except StateLockedError as error:
        if "cvat-watch run" not in error.holder:
            raise  # `once` (or an older daemon) is delivering: try again when it is done
        # The service holds the state: it carries the request out itself, and sends at once.
        answer = Mailbox(database.parent).ask(
            {"action": "redeliver", "id": args.delivery_id}, timeout=_REDELIVER_ANSWER_WAIT
        )
        if answer is None:
            print(
                f"delivery {args.delivery_id}: the running daemon ({error.holder}) has not answered"
                f" within {_REDELIVER_ANSWER_WAIT:.0f} s (a long reload?); it carries the request out"
                " when that work ends"
            )
            return EXIT_OK
        if not answer.get("ok"):
            raise StateError(str(answer.get("error", "the daemon refused the request"))) from None
        print(
            f"delivery {answer['id']} ({answer['event_type']} {answer['event_id']} → {answer['handler']})"
            " is due now; the running daemon is sending it"
        )
        _warn_unconfigured(answer["id"], answer["handler"], answer["handler_id"], configured)
        return EXIT_OK
    try:
        store = Store.open(database)
        try:
            row = store.redeliver(args.delivery_id, time.time())
        finally:
            store.close()
    finally:
        lock.release()
    print(
        f"delivery {row.id} ({row.event_type} {row.event_id} → {row.handler_key}) is due now;"
        " it is sent when the daemon starts, or run `cvat-watch once`"
    )
    _warn_unconfigured(row.id, row.handler_key, row.handler_id, configured)
    return EXIT_OK


#: How long `redeliver` waits for the running daemon to carry its request out.
_REDELIVER_ANSWER_WAIT = 10.0


def _configured_identities(args: argparse.Namespace) -> set[str] | None:
    """The identities of the configured handlers; None without a config or its secrets.

    They mark rows whose handler is no longer configured ("orphaned"). Computing them needs the
    handlers' URLs, some of which are secrets: an admin shell without them still gets the list.
    """
    if not args.config:
        return None
    from cvat_watch.config import load_config
    from cvat_watch.daemon.routes import handler_identities
    from cvat_watch.errors import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as error:
        log.warning("%s; rows of handlers no longer configured are not marked orphaned", error)
        return None
    return {identity for _name, identity in handler_identities(config)}


def _warn_unconfigured(delivery: int, handler: str, identity: str, configured: set[str] | None) -> None:
    if configured is not None and identity not in configured:
        print(
            f"cvat-watch: warning: delivery {delivery} is bound to handler {handler}"
            f" ({identity}), which this configuration no longer has; it waits until that"
            " handler is configured again and is never sent to another one",
            file=sys.stderr,
        )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cvat-watch",
        description="Query CVAT XML exports and announce completed CVAT tasks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    status = commands.add_parser("status", help="one row per task: images, jobs, completed?, link")
    status.add_argument("export", metavar="EXPORT.xml", help="a CVAT XML export")
    status.add_argument("--jobs", metavar="JOB_STATUS", help="the job-status JSON file beside it")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.add_argument("--base-url", metavar="URL", help="CVAT's address for the links")
    status.set_defaults(func=_cmd_status)

    _add_daemon_commands(commands)
    return parser


def _add_daemon_commands(commands: Any) -> None:
    def with_config(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--config", "-c", required=True, metavar="FILE", help="the TOML configuration")
        return parser

    def with_logging(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--log-format",
            choices=("text", "json"),
            default="text",
            help="log lines as text (default) or one JSON object per line",
        )
        parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
        return parser

    run = with_logging(
        with_config(
            commands.add_parser("run", help="run the daemon in the foreground (systemd: Type=notify)")
        )
    )
    run.add_argument("--allow-root", action="store_true", help="run even as root (not recommended)")
    run.set_defaults(func=_cmd_run)

    once = with_logging(
        with_config(
            commands.add_parser("once", help="one pass: load, diff against the saved state, deliver, exit")
        )
    )
    once.add_argument("--dry-run", action="store_true", help="print the events as JSON; change nothing")
    once.set_defaults(func=_cmd_once)

    check = with_config(commands.add_parser("check-config", help="validate the configuration and exit"))
    check.set_defaults(func=_cmd_check_config)

    def with_state(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument(
            "--config", "-c", metavar="FILE", help="the TOML configuration (only its state_dir is read)"
        )
        parser.add_argument(
            "--state-dir",
            metavar="DIR",
            help="the daemon's state folder (default: the config's state_dir, $STATE_DIRECTORY,"
            " /var/lib/cvat-watch, then ~/.local/state/cvat-watch)",
        )
        return parser

    deliveries = with_state(
        commands.add_parser("deliveries", help="list the outbox: what was sent, what failed")
    )
    deliveries.add_argument("--failed", action="store_true", help="only dead, gone or retrying deliveries")
    deliveries.add_argument("--json", action="store_true", help="print JSON for scripts")
    deliveries.add_argument("--limit", type=int, default=50, help="at most this many rows (default 50)")
    deliveries.set_defaults(func=_cmd_deliveries)

    pull = with_logging(
        with_config(
            commands.add_parser(
                "pull",
                help="fetch the job listing and an export from CVAT once ([watch.cvat]), write both files",
            )
        )
    )
    pull.add_argument(
        "--watch", metavar="NAME", help="only this watch (default: every watch with [watch.cvat])"
    )
    pull.set_defaults(func=_cmd_pull)

    redeliver = with_state(commands.add_parser("redeliver", help="queue one delivery again, due now"))
    redeliver.add_argument("delivery_id", metavar="ID", type=int, help="the delivery's id from `deliveries`")
    redeliver.set_defaults(func=_cmd_redeliver)


def _cmd_pull(args: argparse.Namespace) -> int:
    from cvat_watch.daemon.cvat.source import CvatSource
    from cvat_watch.errors import ConfigError

    _setup_logging(args)
    config = _load_config(args)
    watches = [w for w in config.watches if w.cvat is not None and args.watch in (None, w.name)]
    if not watches:
        names = [w.name for w in config.watches]
        if args.watch is not None and args.watch not in names:
            raise ConfigError(
                f"no watch named {args.watch!r} (watches: {', '.join(names)})", path=config.path
            )
        raise ConfigError("no [watch.cvat] table: nothing to pull", path=config.path)
    for watch in watches:
        source = CvatSource(watch, report_errors=False)
        try:
            outcome = source.poll(force_export=True)
        finally:
            source.close()
        if outcome.error is not None:
            raise outcome.error
        print(
            f"{watch.name}: {outcome.jobs} jobs in {outcome.requests} requests"
            + (", annotations exported" if outcome.wrote_annotations else "")
        )
    return EXIT_OK


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cvat-watch")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CvatWatchError as error:
        print(f"cvat-watch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `cvat-watch status … | head`: the reader left; not an error worth a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as error:
        log.debug("unexpected error", exc_info=True)
        print(
            f"cvat-watch: internal error: {type(error).__name__}: {error}"
            " (set CVAT_WATCH_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        if os.environ.get("CVAT_WATCH_DEBUG"):
            raise
        return EXIT_FAILURE
