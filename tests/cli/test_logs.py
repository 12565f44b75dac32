"""The command line's log formatting: one record, one line, reading as what it holds."""

from __future__ import annotations

import logging

from cvat_watch.cli.logs import TextFormatter


def test_text_formatter_escapes_newlines_bidi_and_c1_in_messages() -> None:
    """A message quoting a hostile name stays one line, with its bidi override and C1 control escaped."""
    record = logging.LogRecord(
        "cvat_watch.x", logging.WARNING, __file__, 1, "task %s", ("a\nb\u202ec\x85",), None
    )
    line = TextFormatter("%(levelname)s %(message)s").format(record)
    assert line == "WARNING task a\\nb\\u202ec\\x85"
