"""Text from an export made safe to print: what is escaped, what is left alone."""

from __future__ import annotations

import json

import pytest
from cvat_watch._escape import json_quoted, printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("drive\n11  forged", "drive\\n11  forged"),
        ("tab\tand\rreturn", "tab\\tand\\rreturn"),
        ("rtl\u202eoverride", "rtl\\u202eoverride"),
        ("isolate\u2066x\u2069", "isolate\\u2066x\\u2069"),
        ("c1\x85next\x9bcsi", "c1\\x85next\\x9bcsi"),
        ("del\x7f", "del\\x7f"),
        ("line\u2028sep", "line\\u2028sep"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("lone\udcffsurrogate", "lone\\udcffsurrogate"),
        # Once something is escaped, a backslash is too: the escaped text cannot be mistaken.
        ("back\\n\nslash", "back\\\\n\\nslash"),
    ],
)
def test_controls_bidi_and_separators_are_escaped(text: str, shown: str) -> None:
    """Every character that could break a line, reorder it or drive a terminal is an escape."""
    assert printable(text) == shown


@pytest.mark.parametrize(
    "text",
    ["drive-01", "C:\\exports\\a.xml", "Straße 街道 شارع", "می\u200cخواهم", "👩\u200d💻", "naïve café", ""],
)
def test_ordinary_names_are_left_alone(text: str) -> None:
    """Names in any script, backslashes in paths and zero-width joiners (needed in Persian,
    Indic scripts and emoji) print as they are."""
    assert printable(text) == text


def test_json_quoted_is_valid_json_on_one_line_without_raw_controls() -> None:
    """The JSON form escapes C1 and bidi characters as \\u escapes that decode to the original."""
    text = 'a "name"\n\u202e\x85\U000e0041'
    quoted = json_quoted(text)
    assert "\n" not in quoted and "\u202e" not in quoted and "\x85" not in quoted
    assert json.loads(quoted) == text
    assert json_quoted("plain") == '"plain"'
