"""One measured load in a fresh interpreter: ``python -m benchmarks.load_child CONTENDER PATH``.

Prints one JSON object on stdout: ``{"contender", "seconds", "peak_rss_bytes", "rss_before_bytes",
"file_bytes"}`` for a load, or ``{"contender", "skipped"}`` when the contender cannot be imported. The
contender is imported before the clock starts, so import time and the modules' memory stay out of the figures.
``peak_rss_bytes`` is the peak resident size during the load minus the resident size just before it.

The peers (``next-cvat``, ``datumaro``) run in the interpreter of their own virtual environment (see
``benchmarks.bench_load``); this module needs only the standard library for them. datumaro's CVAT importer is
given the export inside a folder with placeholder images (``bench_load.datumaro_folder``): it refuses an
image it cannot find on disk.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CONTENDERS", "main"]

CONTENDERS = ("expat", "cvat-watch", "next-cvat", "datumaro")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _current_rss() -> int:
    """Resident bytes now; the peak so far where /proc is missing (the delta then comes out smaller)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE_SIZE
    except OSError:
        return _peak_rss()


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _loader(contender: str) -> Callable[[str], Any] | str:
    """The load function, or the reason it cannot run."""
    if contender == "expat":
        from benchmarks.expat_baseline import parse_noop

        return parse_noop
    if contender == "cvat-watch":
        try:
            import cvat_watch
            import cvat_watch.cvatxml  # from_path imports it lazily: keep compiling it off the clock
            import cvat_watch.jobstatus

            return cvat_watch.Annotations.from_path
        except Exception as exc:  # a library mid-development may fail in any way on import
            return f"cvat_watch not importable ({type(exc).__name__}: {exc})"
    if contender == "next-cvat":
        try:
            from next_cvat import Annotations
        except Exception as exc:
            return f"next-cvat not installed ({type(exc).__name__}: {exc})"

        return Annotations.from_path
    if contender == "datumaro":
        try:
            from datumaro.components.dataset import Dataset
        except Exception as exc:
            return f"datumaro not installed ({type(exc).__name__}: {exc})"

        def load(path: str) -> Any:
            dataset = Dataset.import_from(path, "cvat")
            len(dataset)  # import_from may defer parsing; counting items forces it
            return dataset

        return load
    raise SystemExit(f"unknown contender {contender!r}; expected one of {', '.join(CONTENDERS)}")


def main(argv: Sequence[str] | None = None) -> int:
    contender, path = sys.argv[1:] if argv is None else argv
    load = _loader(contender)
    if isinstance(load, str):
        print(json.dumps({"contender": contender, "skipped": load}))
        return 0
    gc.collect()
    before = _current_rss()
    started = time.perf_counter()
    result = load(path)
    seconds = time.perf_counter() - started
    peak = _peak_rss()
    del result
    print(
        json.dumps(
            {
                "contender": contender,
                "seconds": seconds,
                "peak_rss_bytes": max(0, peak - before),
                "rss_before_bytes": before,
                "file_bytes": os.path.getsize(path),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
