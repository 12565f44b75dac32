"""Text from an export made safe to print: control, format and separator characters escaped.

Task names, job states and file names come from files anyone with access to CVAT can shape. A raw
newline in one would forge a line of the journal or a row of ``cvat-watch status``; a bidi
override (U+202E) would make a log line read differently from what it holds; C1 controls (U+0080 to
U+009F) are terminal escapes on some emulators. :func:`printable` writes each such character as a
Python-style escape (``\\n``, ``\\x85``, ``\\u202e``) and leaves every other character alone, so
names in any script stay readable.
"""

from __future__ import annotations

import json
import re
import unicodedata

__all__ = ["json_quoted", "printable"]

# The categories that can change how the surrounding text is shown: controls (C0, DEL, C1), format
# characters (bidi embeddings, overrides and isolates, zero-width ones), line and paragraph
# separators, and lone surrogates (undecodable bytes kept by surrogateescape).
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
# Zero-width (non-)joiners are format characters too, but harmless and needed: Persian and Indic
# words and emoji sequences are spelled with them.
_KEPT = frozenset({"\u200c", "\u200d"})
# Plain ASCII text (the common case) needs a look only at its C0 controls and DEL.
_ASCII_SAFE = re.compile(r"[ -~]*")


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\\":
        return "\\\\"
    if char in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every control, format, separator and surrogate character escaped.

    A backslash is doubled only when something else was escaped, so ordinary names (Windows paths
    included) print as they are, while an escaped name cannot be confused with one that held the
    escape sequence literally.
    """
    if _ASCII_SAFE.fullmatch(text):
        return text
    if not any(_unsafe(char) for char in text):
        return text
    return "".join(_escape(char) if char == "\\" or _unsafe(char) else char for char in text)


def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES and char not in _KEPT


def json_quoted(text: str) -> str:
    """``text`` as a JSON string literal that stays on one line and shows what it holds.

    ``json.dumps`` escapes C0 controls but leaves C1 controls, bidi overrides and separators raw
    (JSON allows them); here they become ``\\uXXXX`` escapes too, still valid JSON.
    """
    quoted = json.dumps(text, ensure_ascii=False)
    if _ASCII_SAFE.fullmatch(text):
        return quoted
    return "".join(
        _json_escape(char) if unicodedata.category(char) in _UNSAFE_CATEGORIES else char for char in quoted
    )


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
