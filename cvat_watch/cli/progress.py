"""Progress on a terminal while a large file is read: one line on stderr, rewritten in place.

The readers take a path and know nothing of progress; how far one got is the read position of
the descriptor it opened, which Linux shows in ``/proc/self/fdinfo``. A thread finds the
descriptor by the file it points at and shows the share read. Only when stderr is a terminal:
logs and pipes never get the carriage returns.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["reading_progress"]

_INTERVAL = 0.25


def _position(target: Path) -> int | None:
    """How far this process's descriptor open on ``target`` has read; None if none is open."""
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return None
    for descriptor in descriptors:
        try:
            if os.readlink(f"/proc/self/fd/{descriptor}") != str(target):
                continue
            with open(f"/proc/self/fdinfo/{descriptor}") as info:
                for line in info:
                    if line.startswith("pos:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return None


def _size(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


@contextlib.contextmanager
def reading_progress(path: str | os.PathLike[str], stream: TextIO) -> Iterator[None]:
    """Show how far the reading of ``path`` got on ``stream`` while the block runs, if a terminal."""
    if not stream.isatty():
        yield
        return
    target = Path(os.path.realpath(path))
    try:
        total = target.stat().st_size
    except OSError:
        total = 0
    started = time.monotonic()
    stop = threading.Event()

    def show() -> None:
        seen = False
        while True:
            position = _position(target)
            # Not open yet: nothing read; open: its position; closed again: all of it read.
            if position is None:
                position = total if seen else 0
            else:
                seen = True
            elapsed = time.monotonic() - started
            share = f"{100 * position / total:3.0f}%" if total else "…"
            stream.write(f"\rreading {target.name} ({_size(total)}): {share}  {elapsed:.0f} s ")
            stream.flush()
            if stop.wait(_INTERVAL):
                return

    thread = threading.Thread(target=show, name="cvat-watch progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        # Clear the line: what follows (a table on stdout, an error) starts on a clean one.
        stream.write("\r\033[K")
        stream.flush()
