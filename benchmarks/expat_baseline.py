"""The floor every load time is compared with: pyexpat walking the same bytes.

``parse_noop`` is the honest baseline for a Python loader: the C parser plus one Python call per start tag,
end tag and text run, each doing nothing (``buffer_text`` and ``ordered_attributes`` on, as a fast loader
would set them). ``parse_bare`` registers no handlers at all and shows what the C parser alone costs. Both
read the file in 1 MiB chunks.

Run ``python -m benchmarks.expat_baseline FILE`` to time both once.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any
from xml.parsers import expat

__all__ = ["CHUNK_SIZE", "main", "parse_bare", "parse_noop"]

CHUNK_SIZE = 1 << 20


def _noop(*_args: Any) -> None:
    pass


def _feed(parser: Any, path: str | os.PathLike[str]) -> int:
    total = 0
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            parser.Parse(chunk, False)
            total += len(chunk)
    parser.Parse(b"", True)
    return total


def parse_noop(path: str | os.PathLike[str]) -> int:
    """Parse ``path`` with no-op Python handlers for elements and text; returns the bytes read."""
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.ordered_attributes = True
    parser.StartElementHandler = _noop
    parser.EndElementHandler = _noop
    parser.CharacterDataHandler = _noop
    return _feed(parser, path)


def parse_bare(path: str | os.PathLike[str]) -> int:
    """Parse ``path`` with no handlers at all (well-formedness only); returns the bytes read."""
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.ordered_attributes = True
    return _feed(parser, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m benchmarks.expat_baseline FILE", file=sys.stderr)
        return 2
    for name, parse in (("no-op handlers", parse_noop), ("no handlers", parse_bare)):
        started = time.perf_counter()
        size = parse(args[0])
        elapsed = time.perf_counter() - started
        print(f"expat, {name}: {elapsed:.3f} s, {size / 1e6 / elapsed:.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
