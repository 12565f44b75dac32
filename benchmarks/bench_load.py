"""How fast cvat-watch loads CVAT exports, as a multiple of a bare pyexpat pass over the same bytes.

``python -m benchmarks.bench_load [--sizes 1,10,50,100,200] [--repeat 3] [--quick]``

For each size a project export is generated once into a cache directory (reused while the generator's output
is unchanged). Every load then runs in a fresh interpreter (``benchmarks.load_child``), the contenders taking
turns within each round, and the median of ``--repeat`` rounds is reported: the no-op-handler expat pass
(``benchmarks.expat_baseline``), ``cvat_watch.Annotations.from_path`` and, when it is installed, datumaro's
CVAT importer. The result is a Markdown table on stdout; progress goes to stderr. Ratios only: nothing here
asserts a speed, since machines differ.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
from cvat_watch.testing.generate import GENERATOR_VERSION, generate_export

__all__ = [
    "CACHE_DIR",
    "ContenderResult",
    "Measurement",
    "Row",
    "bench_file",
    "ensure_export",
    "format_table",
    "main",
    "measure",
    "run",
]

CACHE_DIR = Path("/tmp/cvat-watch-bench")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (1.0, 10.0, 50.0, 100.0, 200.0)
QUICK_SIZES = (1.0, 10.0)
_CONTENDERS = ("expat", "cvat-watch", "datumaro")
CVAT_WATCH_SKIPPED = "skipped: cvat_watch not importable"
DATUMARO_SKIPPED = "datumaro not installed: skipped"


@attrs.frozen
class Measurement:
    """One load in one child process, or why it did not happen."""

    contender: str
    seconds: float | None = None
    peak_rss_bytes: int | None = None
    skipped: str | None = None


@attrs.frozen
class ContenderResult:
    """The median over the rounds of one contender on one file; ``note`` says why there is no figure."""

    seconds: float | None = None
    peak_rss_bytes: int | None = None
    note: str | None = None


@attrs.frozen
class Row:
    """One line of the table."""

    file_bytes: int
    results: dict[str, ContenderResult]


def ensure_export(size_mb: float, *, cache_dir: Path = CACHE_DIR, seed: int = 0) -> Path:
    """A project export of about ``size_mb`` MB in ``cache_dir``, generated on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"project-{size_mb:g}mb-seed{seed}-v{GENERATOR_VERSION}.xml"
    if not path.exists():
        # generate_export writes a sibling file and renames it, so a half-written export is never reused.
        generate_export(path, kind="project", target_mb=size_mb, seed=seed)
    return path


def measure(contender: str, path: Path, *, timeout: float | None = None) -> Measurement:
    """Load ``path`` once with ``contender`` in a fresh interpreter and read back what it measured."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.load_child", contender, str(path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        last = (completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"])[-1]
        return Measurement(contender, skipped=f"failed: {last}")
    report = json.loads(lines[-1])
    if "skipped" in report:
        return Measurement(contender, skipped=str(report["skipped"]))
    return Measurement(
        contender, seconds=float(report["seconds"]), peak_rss_bytes=int(report["peak_rss_bytes"])
    )


def bench_file(
    path: Path,
    *,
    repeat: int,
    contenders: Sequence[str] = _CONTENDERS,
    progress: Callable[[str], None] = lambda _line: None,
) -> dict[str, ContenderResult]:
    """Median time and peak memory of each contender on ``path``; the contenders take turns every round."""
    runs: dict[str, list[Measurement]] = {name: [] for name in contenders}
    given_up: dict[str, str] = {}
    for round_number in range(repeat):
        # Rotate who goes first, so that no contender always runs right after the same neighbour.
        shift = round_number % len(contenders)
        for contender in [*contenders[shift:], *contenders[:shift]]:
            if contender in given_up:
                continue
            result = measure(contender, path)
            if result.skipped is not None:
                given_up[contender] = result.skipped
                progress(f"  {contender}: {result.skipped}")
                continue
            runs[contender].append(result)
            progress(f"  {contender}: {result.seconds:.3f} s")
    summary = {}
    for contender in contenders:
        measured = runs[contender]
        if not measured:
            summary[contender] = ContenderResult(note=given_up.get(contender, "not run"))
            continue
        summary[contender] = ContenderResult(
            seconds=statistics.median(m.seconds for m in measured if m.seconds is not None),
            peak_rss_bytes=round(statistics.median(m.peak_rss_bytes or 0 for m in measured)),
            note=given_up.get(contender),
        )
    return summary


def run(
    sizes_mb: Sequence[float],
    *,
    repeat: int,
    cache_dir: Path = CACHE_DIR,
    progress: Callable[[str], None] = lambda _line: None,
) -> tuple[list[Row], list[str]]:
    """Benchmark every size; returns the rows and the notes to print under the table."""
    notes = []
    contenders = list(_CONTENDERS)
    if importlib.util.find_spec("datumaro") is None:
        contenders.remove("datumaro")
        notes.append(DATUMARO_SKIPPED)
    rows = []
    cannot_import: str | None = None
    for size_mb in sizes_mb:
        path = ensure_export(size_mb, cache_dir=cache_dir)
        progress(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
        # Once cvat_watch failed to import, it will not import for the next file either.
        active = [name for name in contenders if not (name == "cvat-watch" and cannot_import)]
        results = bench_file(path, repeat=repeat, contenders=active, progress=progress)
        if cannot_import is not None:
            results["cvat-watch"] = ContenderResult(note=cannot_import)
        for result in results.values():
            if result.note is not None and result.note not in notes:
                notes.append(result.note)
        ours = results["cvat-watch"]
        if ours.seconds is None and ours.note is not None and "not importable" in ours.note:
            cannot_import = ours.note
        rows.append(Row(file_bytes=path.stat().st_size, results=results))
    return rows, notes


def _cell(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_table(rows: Sequence[Row]) -> str:
    """The Markdown table: absolute times, throughput, cvat-watch's time and peak memory as ratios."""
    lines = [
        "| size MB | expat s | expat MB/s | cvat-watch s | MB/s | ratio to expat | peak RSS ÷ file size "
        "| datumaro s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        megabytes = row.file_bytes / 1e6
        expat = row.results.get("expat", ContenderResult())
        ours = row.results.get("cvat-watch", ContenderResult())
        datumaro = row.results.get("datumaro", ContenderResult())
        if ours.seconds is None:
            reason = ours.note or "not run"
            cell = CVAT_WATCH_SKIPPED if "not importable" in reason else "failed (see below)"
            cvat_cells = [cell, "—", "—", "—"]
        else:
            cvat_cells = [
                f"{ours.seconds:.3f}",
                f"{megabytes / ours.seconds:.1f}",
                "—" if not expat.seconds else f"{ours.seconds / expat.seconds:.2f}×",
                "—" if ours.peak_rss_bytes is None else f"{ours.peak_rss_bytes / row.file_bytes:.2f}",
            ]
        cells = [
            f"{megabytes:.1f}",
            _cell(expat.seconds, ".3f"),
            "—" if not expat.seconds else f"{megabytes / expat.seconds:.1f}",
            *cvat_cells,
            _cell(datumaro.seconds, ".3f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _sizes(text: str) -> list[float]:
    try:
        sizes = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes in MB separated by commas, got {text!r}") from None
    if not sizes or any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_load", description=__doc__.strip().split("\n")[0]
    )
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES), help="MB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median is reported")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, one round (CI smoke)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where generated exports are kept")
    args = parser.parse_args(argv)
    sizes, repeat = (list(QUICK_SIZES), 1) if args.quick else (args.sizes, args.repeat)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    rows, notes = run(
        sizes, repeat=repeat, cache_dir=args.cache_dir, progress=lambda line: print(line, file=sys.stderr)
    )
    print(format_table(rows))
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
