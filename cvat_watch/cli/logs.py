"""Logging set-up for the command line: text lines for people, JSON lines for machines.

The library never calls this; only the CLI does. journald adds its own timestamps, so the text
format leaves them out when stderr is the journal.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from cvat_watch._escape import printable

__all__ = ["JsonFormatter", "TextFormatter", "configure_logging"]


class TextFormatter(logging.Formatter):
    """The format string's line, with control and bidi characters in the message written as escapes.

    Messages quote names, ids and paths from other people's files: a newline in one of them must
    not start a line of its own, which journald would take for a separate entry of ours, and a
    bidi override must not make the line read differently from what it holds.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class _CommandFormatter(TextFormatter):
    """``cvat-watch: warning: …``: the lower-case level, as the command's own error lines read."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure_logging(*, json_lines: bool = False, level: str = "INFO", command: bool = False) -> None:
    """Log lines to stderr; ``command``: a short command's ``cvat-watch: warning: …`` lines."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    elif command:
        handler.setFormatter(_CommandFormatter("cvat-watch: %(levelname)s: %(message)s"))
    elif os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO with its full URL, which may carry a token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # Apprise says "Sent Telegram notification." at INFO for every message: our own line
    # already reports the delivery. Its warnings and errors still come through.
    third_party = logging.DEBUG if logging.getLevelName(level) == logging.DEBUG else logging.WARNING
    logging.getLogger("apprise").setLevel(third_party)
