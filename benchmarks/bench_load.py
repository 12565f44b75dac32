"""How fast cvat-watch loads CVAT exports, as a multiple of a bare pyexpat pass over the same bytes.

``python -m benchmarks.bench_load [--sizes 1,10,50,100,200] [--repeat 3] [--quick]``

For each size a project export is generated once into a cache directory (reused while the generator's output
is unchanged). Every load then runs in a fresh interpreter (``benchmarks.load_child``), the contenders taking
turns within each round, and the median of ``--repeat`` rounds is reported: the no-op-handler expat pass
(``benchmarks.expat_baseline``), ``cvat_watch.Annotations.from_path`` and, when it is installed, datumaro's
CVAT importer. The result is a Markdown table on stdout; progress goes to stderr. Ratios only: nothing here
asserts a speed, since machines differ.

The peers, next-cvat (``Annotations.from_path``) and datumaro (``Dataset.import_from(path, "cvat")``), are
not dependencies of cvat-watch: on first use the benchmark creates its own virtual environment
(``benchmarks/.peers-venv``, git-ignored) and installs them there with pip, at the versions in
``PEER_PACKAGES``; their loads run in that environment's interpreter, one fresh process per load like the
others. datumaro's importer refuses an export whose images are not on disk, so it gets the same bytes
(a hard link) in a folder beside an ``images/`` tree of empty placeholder files, one per ``<image name>``;
it only checks that they exist. ``--no-peers`` leaves both out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from xml.parsers import expat

import attrs
from cvat_watch.testing.generate import GENERATOR_VERSION, generate_export

__all__ = [
    "CACHE_DIR",
    "ContenderResult",
    "Measurement",
    "Row",
    "bench_file",
    "datumaro_folder",
    "ensure_export",
    "ensure_peers",
    "format_peers_table",
    "format_table",
    "main",
    "measure",
    "run",
]

CACHE_DIR = Path("/tmp/cvat-watch-bench")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = (1.0, 10.0, 50.0, 100.0, 200.0)
QUICK_SIZES = (1.0, 10.0)
_CONTENDERS = ("expat", "cvat-watch", "next-cvat", "datumaro")
PEERS = ("next-cvat", "datumaro")
#: What the peers' environment gets; pinned so that a rerun measures the same code.
PEER_PACKAGES = ("next-cvat==0.1.28", "datumaro==1.12.0")
PEERS_VENV = REPO_ROOT / "benchmarks" / ".peers-venv"
CVAT_WATCH_SKIPPED = "skipped: cvat_watch not importable"


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


def ensure_peers(
    venv: Path = PEERS_VENV, *, progress: Callable[[str], None] = lambda _line: None
) -> Path | str:
    """The interpreter of the peers' virtual environment, created and filled on first use; or why not."""
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    wanted = "\n".join(PEER_PACKAGES)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    progress(f"installing {' '.join(PEER_PACKAGES)} into {venv} (once)")
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES],
    ]
    for step in steps:
        completed = subprocess.run(step, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            last = (completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"])[-1]
            return f"peers not installed ({' '.join(step[-3:])}: {last})"
    marker.write_text(wanted)
    return python


def datumaro_folder(path: Path) -> Path:
    """``path`` hard-linked into a folder beside empty placeholder images, as datumaro's importer wants them.

    datumaro looks each ``<image name>`` up under ``images/`` next to the XML file and refuses the
    export when one is missing; it does not open them while importing.
    """
    folder = path.with_name(f"{path.stem}.datumaro")
    linked = folder / path.name
    done = folder / "placeholders-done"
    if done.exists():
        return linked
    images = folder / "images"
    names: list[str] = []

    def start(name: str, attributes: dict[str, str]) -> None:
        if name == "image" and "name" in attributes:
            names.append(attributes["name"])

    parser = expat.ParserCreate()
    parser.StartElementHandler = start
    with path.open("rb") as file:
        parser.ParseFile(file)
    for name in names:
        placeholder = images / name
        if not placeholder.resolve().is_relative_to(images.resolve()):
            raise ValueError(f"image name {name!r} leaves the images folder")
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.touch()
    if linked.exists():
        linked.unlink()
    try:
        os.link(path, linked)
    except OSError:
        linked.write_bytes(path.read_bytes())
    done.touch()
    return linked


def measure(
    contender: str, path: Path, *, python: Path | str | None = None, timeout: float | None = None
) -> Measurement:
    """Load ``path`` once with ``contender`` in a fresh interpreter and read back what it measured."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    completed = subprocess.run(
        [str(python or sys.executable), "-m", "benchmarks.load_child", contender, str(path)],
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
    pythons: Mapping[str, Path] | None = None,
    inputs: Mapping[str, Path] | None = None,
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
            result = measure(
                contender,
                (inputs or {}).get(contender, path),
                python=(pythons or {}).get(contender),
            )
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
    peers: bool = True,
    peers_venv: Path = PEERS_VENV,
    progress: Callable[[str], None] = lambda _line: None,
) -> tuple[list[Row], list[str]]:
    """Benchmark every size; returns the rows and the notes to print under the table."""
    notes = []
    contenders = list(_CONTENDERS)
    pythons: dict[str, Path] = {}
    if peers:
        python = ensure_peers(peers_venv, progress=progress)
        if isinstance(python, str):
            notes.append(python)
            contenders = [name for name in contenders if name not in PEERS]
        else:
            pythons = dict.fromkeys(PEERS, python)
    else:
        contenders = [name for name in contenders if name not in PEERS]
        notes.append("peers left out (--no-peers)")
    rows = []
    cannot_import: str | None = None
    for size_mb in sizes_mb:
        path = ensure_export(size_mb, cache_dir=cache_dir)
        progress(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
        inputs = {"datumaro": datumaro_folder(path)} if "datumaro" in contenders else {}
        # Once cvat_watch failed to import, it will not import for the next file either.
        active = [name for name in contenders if not (name == "cvat-watch" and cannot_import)]
        results = bench_file(
            path, repeat=repeat, contenders=active, pythons=pythons, inputs=inputs, progress=progress
        )
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
        "| size MB | expat s | expat MB/s | cvat-watch s | MB/s | ratio to expat | peak RSS ÷ file size |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        megabytes = row.file_bytes / 1e6
        expat_result = row.results.get("expat", ContenderResult())
        ours = row.results.get("cvat-watch", ContenderResult())
        if ours.seconds is None:
            reason = ours.note or "not run"
            cell = CVAT_WATCH_SKIPPED if "not importable" in reason else "failed (see below)"
            cvat_cells = [cell, "—", "—", "—"]
        else:
            cvat_cells = [
                f"{ours.seconds:.3f}",
                f"{megabytes / ours.seconds:.1f}",
                "—" if not expat_result.seconds else f"{ours.seconds / expat_result.seconds:.2f}×",
                "—" if ours.peak_rss_bytes is None else f"{ours.peak_rss_bytes / row.file_bytes:.2f}",
            ]
        cells = [
            f"{megabytes:.1f}",
            _cell(expat_result.seconds, ".3f"),
            "—" if not expat_result.seconds else f"{megabytes / expat_result.seconds:.1f}",
            *cvat_cells,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_peers_table(rows: Sequence[Row]) -> str:
    """cvat-watch against each peer on the same files: times, peak RSS, and the two ratios.

    "× faster" is the peer's time over cvat-watch's; "memory" is cvat-watch's peak RSS over the peer's.
    """
    header = ["size MB", "cvat-watch s", "peak RSS MB"]
    for peer in PEERS:
        header += [f"{peer} s", "peak RSS MB", "cvat-watch × faster", "cvat-watch memory ÷ peer's"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---:" for _ in header) + " |"]
    for row in rows:
        ours = row.results.get("cvat-watch", ContenderResult())
        cells = [
            f"{row.file_bytes / 1e6:.1f}",
            _cell(ours.seconds, ".3f"),
            _cell(None if ours.peak_rss_bytes is None else ours.peak_rss_bytes / 1e6, ".0f"),
        ]
        for peer in PEERS:
            theirs = row.results.get(peer, ContenderResult())
            faster = f"{theirs.seconds / ours.seconds:.1f}×" if theirs.seconds and ours.seconds else "—"
            memory = (
                f"{ours.peak_rss_bytes / theirs.peak_rss_bytes:.2f}"
                if theirs.peak_rss_bytes and ours.peak_rss_bytes is not None
                else "—"
            )
            cells += [
                _cell(theirs.seconds, ".3f"),
                _cell(None if theirs.peak_rss_bytes is None else theirs.peak_rss_bytes / 1e6, ".0f"),
                faster,
                memory,
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
    parser.add_argument("--no-peers", action="store_true", help="leave next-cvat and datumaro out")
    parser.add_argument("--peers-venv", type=Path, default=PEERS_VENV, help="the peers' virtual environment")
    args = parser.parse_args(argv)
    sizes, repeat = (list(QUICK_SIZES), 1) if args.quick else (args.sizes, args.repeat)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    rows, notes = run(
        sizes,
        repeat=repeat,
        cache_dir=args.cache_dir,
        peers=not args.no_peers,
        peers_venv=args.peers_venv,
        progress=lambda line: print(line, file=sys.stderr),
    )
    print(format_table(rows))
    if not args.no_peers:
        print()
        print(format_peers_table(rows))
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
