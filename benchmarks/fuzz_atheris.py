"""Coverage-guided fuzzing of the readers of untrusted files with atheris (libFuzzer).

Not part of the test suite (tests/lib/test_fuzz.py is the bounded hypothesis version); run by hand:

    pip install atheris
    python -m benchmarks.fuzz_atheris xml --seconds 60
    python -m benchmarks.fuzz_atheris jobs --seconds 60 --corpus /tmp/jobs-corpus

Targets: ``xml`` feeds the bytes to ``cvatxml.loads`` and ``cvatxml.loads_summary``, ``jobs`` to
``jobstatus.parse_job_status``. Each may return a model or raise its own error
(``AnnotationsError`` / ``JobStatusError``); any other exception is a finding, and libFuzzer
writes the input that caused it to ``crash-<sha1>`` in the working directory. The run stops after
``--seconds`` (libFuzzer's ``-max_total_time``) or ``--runs`` inputs, whichever comes first.
Seeds are the example export and job-status file; ``--corpus`` keeps what the run learned.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config" / "example"


def _xml_target() -> Callable[[bytes], None]:
    from cvat_watch import cvatxml
    from cvat_watch.errors import AnnotationsError

    def one_input(data: bytes) -> None:
        for reader in (cvatxml.loads_summary, cvatxml.loads):
            try:
                reader(data, path="fuzz.xml")
            except AnnotationsError:
                pass

    return one_input


def _jobs_target() -> Callable[[bytes], None]:
    from cvat_watch import jobstatus
    from cvat_watch.errors import JobStatusError

    def one_input(data: bytes) -> None:
        try:
            jobstatus.parse_job_status(data, path="fuzz.json")
        except JobStatusError:
            pass

    return one_input


TARGETS = {
    "xml": (_xml_target, EXAMPLE / "annotations.xml"),
    "jobs": (_jobs_target, EXAMPLE / "job_status.json"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=60, help="stop after this long (default 60)")
    parser.add_argument(
        "--runs", type=int, default=-1, help="stop after this many inputs (default: no limit)"
    )
    parser.add_argument(
        "--corpus", type=Path, help="a folder to keep the corpus in (default: a temporary one)"
    )
    parser.add_argument("--max-len", type=int, default=64 * 1024, help="largest input in bytes")
    args = parser.parse_args(argv)

    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2

    make_target, seed = TARGETS[args.target]
    with atheris.instrument_imports(include=["cvat_watch"]):
        one_input = make_target()

    with tempfile.TemporaryDirectory(prefix="cvat-watch-fuzz-") as scratch:
        corpus = args.corpus or Path(scratch)
        corpus.mkdir(parents=True, exist_ok=True)
        (corpus / f"seed-{seed.name}").write_bytes(seed.read_bytes())
        libfuzzer_args = [
            sys.argv[0],
            str(corpus),
            f"-max_total_time={args.seconds}",
            f"-runs={args.runs}",
            f"-max_len={args.max_len}",
            "-print_final_stats=1",
        ]
        atheris.Setup(libfuzzer_args, one_input)
        atheris.Fuzz()  # exits the process when the run ends or finds a crash
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
