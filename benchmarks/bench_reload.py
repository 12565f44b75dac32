"""Where one daemon reload spends its time, inside the daemon's own code path.

``python -m benchmarks.bench_reload [--tasks 10000] [--jobs-per-task 5] [--shapes-per-image 2] [--repeat 20]
[--formats rest,flat] [--profile] [--quick]``

A project export (``--tasks`` tasks of ``--jobs-per-task`` jobs, one image per job, few shapes an
image) and a matching job-status file in each requested format (a CVAT REST page, "rest"; next-cvat's
flat list, "flat") are generated once into a cache directory. For each format a real
:class:`cvat_watch.daemon.service.WatchRunner` with a real :class:`cvat_watch.daemon.store.Store` in a temporary folder
loads them once (its first start), then:

(a) **job status only**: every round rewrites the job-status file (atomically) with a few tasks flipped
    between completed and open, and times ``runner.reload()`` as a whole. A second pipeline, with its own
    store and baseline, makes the runner's calls one at a time on the same files and times each (read,
    hash, cached summary, ``JobStatusParser.parse``, ``SnapshotBuilder.build``, ``diff``,
    ``Store.commit_reload``), with the runner's memory between reloads (file status, parser,
    builder) and its collector pause. The runner and the step-by-step pipeline take turns going first.
(b) **XML changed**: every round makes fresh bytes (the export with a few shapes' ``occluded`` flags
    flipped) and times ``cvatxml.loads_summary`` against a pyexpat pass with no-op handlers over the same
    bytes, in turns; then, for a few rounds, the whole ``runner.reload()`` after the export itself
    changed, with the same step-by-step breakdown.

The result is one Markdown table per section on stdout (median and p95 of the rounds, the target from the
performance issue, the ratio); progress goes to stderr. ``--profile`` adds cProfile's top functions for one
reload of each kind. Nothing asserts a speed: the figures are for reading.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.parsers import expat

import attrs
from cvat_watch import cvatxml, jobstatus
from cvat_watch.config import WatchConfig
from cvat_watch.daemon.diff import diff
from cvat_watch.daemon.events import Event
from cvat_watch.daemon.reload import (
    _SETTLE_NS,
    ReloadOutcome,
    WatchRunner,
    _file_digest,
    _read_unless,
    _signature,
    utc_timestamp,
)
from cvat_watch.daemon.snapshot import Snapshot, SnapshotBuilder
from cvat_watch.daemon.store import Store
from cvat_watch.model import ExportSummary, JobStatus
from cvat_watch.testing.generate import GENERATOR_VERSION, generate_export, generate_job_status

from benchmarks.expat_baseline import CHUNK_SIZE, parse_noop

__all__ = [
    "CACHE_DIR",
    "FORMATS",
    "Dataset",
    "JobStatusEditor",
    "Row",
    "StepwiseReload",
    "ensure_dataset",
    "format_table",
    "main",
    "percentile",
]

CACHE_DIR = Path("/tmp/cvat-watch-bench")
FORMATS = ("rest", "flat")
#: The issue's budget from "files changed" to "diff computed" when only the job status changed, per format
#: (performance round 2: 50 ms for next-cvat's flat list, 150 ms for a 5-times larger CVAT REST page).
JOB_STATUS_TARGET_MS = {"flat": 50.0, "rest": 150.0}
#: The issue's bound on the summary load as a multiple of the no-op expat pass.
SUMMARY_TARGET_RATIO = 1.2
WATCH_NAME = "bench"
TARGET_KEY = "log-1"

# The steps of one reload, in the order the runner makes them; the first ones up to "diff" are what the
# issue's "files changed → diff computed" budget covers.
STEPS = (
    "read both files",
    "hash both files",
    "cvatxml.loads_summary",
    "JobStatusParser.parse",
    "build_snapshot",
    "diff",
    "store.commit_reload",
)
_BEFORE_COMMIT = STEPS[:-1]


def _read(path: Path, error: Any) -> bytes:
    """The runner's own read, without its unchanged-status shortcut: the breakdown times a real read."""
    data = _read_unless(path, error, None)[1]
    assert data is not None
    return data


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- data


@attrs.frozen
class Dataset:
    """A cached export and its job-status files, one per format."""

    xml: Path
    job_files: Mapping[str, Path]
    tasks: int
    jobs: int
    images: int
    shapes_per_image: int


def ensure_dataset(
    *,
    tasks: int,
    jobs_per_task: int,
    shapes_per_image: int,
    cache_dir: Path = CACHE_DIR,
    seed: int = 0,
) -> Dataset:
    """The export (one image per job) and both job-status files, generated into ``cache_dir`` on first use."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    images = tasks * jobs_per_task
    stem = f"reload-t{tasks}-j{jobs_per_task}-s{shapes_per_image}-seed{seed}-v{GENERATOR_VERSION}"
    xml = cache_dir / f"{stem}.xml"
    job_files = {shape: cache_dir / f"{stem}.{shape}.json" for shape in FORMATS}
    if not (xml.exists() and all(path.exists() for path in job_files.values())):
        started = time.perf_counter()
        info = generate_export(
            xml,
            kind="project",
            images=images,
            tasks=tasks,
            jobs_per_task=jobs_per_task,
            shapes_per_image=shapes_per_image,
            seed=seed,
        )
        for shape, path in job_files.items():
            generate_job_status(path, export=info, seed=seed, shape=shape)  # type: ignore[arg-type]
        _progress(f"generated {info!r} and job-status files in {time.perf_counter() - started:.1f} s")
    return Dataset(
        xml=xml,
        job_files=job_files,
        tasks=tasks,
        jobs=tasks * jobs_per_task,
        images=images,
        shapes_per_image=shapes_per_image,
    )


# generate_job_status writes json.dumps(indent=2): every record has exactly one top-level "state" (the REST
# job's assignee and issues objects have none), so the n-th match is the n-th record's state.
_STATE_VALUE = re.compile(rb'"state": "([^"\\]*)"')


class JobStatusEditor:
    """Rewrites a generated job-status file with tasks flipped, every other byte as generated.

    Flipping a completed task sets its first job to "in progress" (a reopen); flipping an open task
    sets all its jobs to "completed". Either is one event for the daemon's diff.
    """

    def __init__(self, data: bytes) -> None:
        document = json.loads(data)
        records = document["results"] if isinstance(document, dict) else document
        spans = [match.span(1) for match in _STATE_VALUE.finditer(data)]
        if len(spans) != len(records):
            raise ValueError(f"found {len(spans)} state values for {len(records)} job records")
        self._original = data
        self._spans = spans
        self._initial = [str(record["state"]) for record in records]
        self._states = list(self._initial)
        self._jobs_of_task: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            self._jobs_of_task.setdefault(str(record["task_id"]), []).append(index)

    @property
    def task_ids(self) -> list[str]:
        return list(self._jobs_of_task)

    def completed(self, task_id: str) -> bool:
        return all(self._states[index] == "completed" for index in self._jobs_of_task[task_id])

    def flip(self, task_ids: Sequence[str]) -> bytes:
        """The file's bytes after flipping ``task_ids`` (on top of every earlier flip)."""
        for task_id in task_ids:
            indices = self._jobs_of_task[task_id]
            if self.completed(task_id):
                self._states[indices[0]] = "in progress"
            else:
                for index in indices:
                    self._states[index] = "completed"
        pieces: list[bytes] = []
        position = 0
        for index, (start, end) in enumerate(self._spans):
            state = self._states[index]
            if state != self._initial[index]:
                pieces.append(self._original[position:start])
                pieces.append(state.encode())
                position = end
        pieces.append(self._original[position:])
        return b"".join(pieces)


class XmlMutator:
    """Fresh export bytes on every call: a few shapes' ``occluded`` flags flipped, same length."""

    def __init__(self, data: bytes, *, seed: int = 0) -> None:
        self._data = bytearray(data)
        self._positions = [match.start(1) for match in re.finditer(rb' occluded="([01])"', data)]
        self._rng = random.Random(f"xml:{seed}")

    def next(self, flips: int = 3) -> bytes:
        if self._positions:
            for position in self._rng.sample(self._positions, min(flips, len(self._positions))):
                self._data[position] ^= ord("0") ^ ord("1")
        else:  # an export without shapes: make the bytes differ at the end instead
            self._data[-1:] = b" \n" if self._data.endswith(b"\n") else b"\n"
        return bytes(self._data)


def _write_atomically(path: Path, data: bytes) -> None:
    # Like an exporter: write a sibling, then rename it over the watched file.
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(data)
    os.replace(partial, path)


# --- the daemon's reload, step by step


@attrs.define
class StepwiseReload:
    """The calls ``WatchRunner.reload`` makes, in its order, each timed; its own store and baseline.

    It keeps the same memory as the runner (each file's status and digest, the summary and the job
    records by digest, the job-status parser's and the snapshot builder's last results), so on the
    same sequence of files it reads, parses, diffs and commits exactly what the runner does, with the
    cyclic garbage collector paused as the runner pauses it. (The runner's guard against an emptied
    file, a check of two lengths on this path, is left out.)
    """

    config: WatchConfig
    store: Store
    targets: Callable[[Event], Sequence[str]]
    _digests: tuple[str, str | None] | None = None
    _summary: tuple[str, ExportSummary] | None = None
    _jobs: tuple[str | None, tuple[JobStatus, ...]] | None = None
    _baseline: Snapshot | None = None
    _generations: dict[str, int] = attrs.field(factory=dict)
    _files: dict[Path, tuple[Any, str, bool]] = attrs.field(factory=dict)
    _parser: jobstatus.JobStatusParser = attrs.field(factory=jobstatus.JobStatusParser)
    _builder: SnapshotBuilder = attrs.field(factory=SnapshotBuilder)

    def _read_file(self, path: Path, error: Any) -> tuple[os.stat_result, bytes | None]:
        # As the runner: no read while the status is the one read last, once that file had settled.
        known = self._files.get(path)
        return _read_unless(path, error, known[0] if known is not None and known[2] else None)

    def run(self) -> tuple[dict[str, float], int]:
        """One reload: seconds per step (0 for a cache hit) and the number of events committed."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if enabled:
                gc.enable()

    def _run(self) -> tuple[dict[str, float], int]:
        from cvat_watch.errors import AnnotationsError, JobStatusError

        assert self.config.job_status is not None
        seconds: dict[str, float] = {}
        clock = time.perf_counter
        paths = (self.config.annotations, self.config.job_status)

        started = clock()
        started_ns = time.time_ns()
        read = [self._read_file(paths[0], AnnotationsError), self._read_file(paths[1], JobStatusError)]
        seconds["read both files"] = clock() - started

        started = clock()
        states = []
        for path, (status, data) in zip(paths, read, strict=True):
            if data is None:
                states.append(self._files[path])
            else:
                settled = max(status.st_mtime_ns, status.st_ctime_ns) < started_ns - _SETTLE_NS
                states.append((_signature(status), _file_digest(data), settled))
        digests = (states[0][1], states[1][1])
        seconds["hash both files"] = clock() - started
        if digests == self._digests:
            raise RuntimeError("the files did not change between two rounds")

        started = clock()
        if self._summary is None or self._summary[0] != digests[0]:
            assert read[0][1] is not None
            self._summary = (
                digests[0],
                cvatxml.loads_summary(read[0][1], path=self.config.annotations),
            )
        summary = self._summary[1]
        seconds["cvatxml.loads_summary"] = clock() - started

        started = clock()
        if self._jobs is None or self._jobs[0] != digests[1]:
            assert read[1][1] is not None
            self._jobs = (digests[1], self._parser.parse(read[1][1], path=self.config.job_status))
        records = self._jobs[1]
        seconds["JobStatusParser.parse"] = clock() - started

        started = clock()
        snapshot = self._builder.build(
            watch=self.config.name,
            summary=summary,
            jobs=records,
            rule=self.config.completion,
            base_url=self.config.base_url,
        )
        seconds["build_snapshot"] = clock() - started

        now = time.time()
        started = clock()
        result = diff(
            self._baseline,
            snapshot,
            generations=self._generations,
            timestamp=utc_timestamp(now),
            epoch=self.store.epoch,
            notify_existing=self.config.notify_existing,
        )
        seconds["diff"] = clock() - started

        started = clock()
        self.store.commit_reload(
            self.config.name, snapshot, result.generations, result.events, self.targets, now
        )
        seconds["store.commit_reload"] = clock() - started

        self._digests = digests
        for path, state in zip(paths, states, strict=True):
            self._files[path] = state
        self._baseline = snapshot
        self._generations = dict(result.generations)
        return seconds, len(result.events)


def _targets(_event: Event) -> list[str]:
    return [TARGET_KEY]


@attrs.define
class _Setup:
    """One format's watched folder: the runner under test and the step-by-step twin, each with a store."""

    folder: Path
    config: WatchConfig
    runner: WatchRunner
    stepwise: StepwiseReload
    stores: list[Store]
    shape: str

    def close(self) -> None:
        for store in self.stores:
            store.close()


def _set_up(folder: Path, dataset: Dataset, shape: str) -> _Setup:
    exports = folder / "exports"
    exports.mkdir(parents=True)
    annotations = exports / "annotations.xml"
    job_status = exports / "job_status.json"
    shutil.copyfile(dataset.xml, annotations)
    shutil.copyfile(dataset.job_files[shape], job_status)
    config = WatchConfig(name=WATCH_NAME, annotations=annotations, job_status=job_status)
    runner_store = Store.open(folder / "state" / "cvat-watch.db")
    stepwise_store = Store.open(folder / "stepwise" / "cvat-watch.db")
    runner = WatchRunner(config=config, store=runner_store, targets=_targets)
    stepwise = StepwiseReload(config=config, store=stepwise_store, targets=_targets)
    first = runner.reload(force=True)
    if first.status != "committed" or not first.first_start:
        raise RuntimeError(f"the runner's first load did not commit a baseline: {first!r}")
    stepwise.run()
    return _Setup(folder, config, runner, stepwise, [runner_store, stepwise_store], shape)


def _timed_reload(runner: WatchRunner) -> tuple[float, ReloadOutcome]:
    started = time.perf_counter()
    outcome = runner.reload()
    return time.perf_counter() - started, outcome


def _expect(outcome: ReloadOutcome, events: int, what: str) -> None:
    if outcome.status != "committed" or len(outcome.events) != events:
        raise RuntimeError(
            f"{what}: expected a committed reload with {events} events, got {outcome.status}"
            f" with {len(outcome.events)} ({outcome.error or 'no error'})"
        )


# --- statistics and the table


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with ``fraction`` of all samples at or below it."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@attrs.frozen
class Row:
    """One line of a table: a step, its samples in seconds (None for a heading line), target and ratio."""

    step: str
    samples: tuple[float, ...] | None = None
    target: str = ""
    ratio: str = ""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}" if seconds >= 0.0005 or seconds == 0 else f"{seconds * 1000:.3f}"


def format_table(rows: Sequence[Row]) -> str:
    """The Markdown table: step, median ms, p95 ms, target, ratio."""
    lines = ["| step | median ms | p95 ms | target | ratio |", "| --- | ---: | ---: | --- | --- |"]
    for row in rows:
        if row.samples:
            median = _ms(statistics.median(row.samples))
            p95 = _ms(percentile(row.samples, 0.95))
        else:
            median = p95 = "—"
        lines.append(f"| {row.step} | {median} | {p95} | {row.target or '—'} | {row.ratio or '—'} |")
    return "\n".join(lines)


def _verdict(ratio: float, bound: float) -> str:
    return "met" if ratio <= bound else "not met"


def _step_rows(
    breakdown: Mapping[str, list[float]], *, cached: Sequence[str], budget_label: str, budget_ms: float | None
) -> list[Row]:
    rows = []
    for step in STEPS:
        label = f"{step} (cache hit)" if step in cached else step
        rows.append(Row(f"&nbsp;&nbsp;{label}", tuple(breakdown[step])))
        if step == _BEFORE_COMMIT[-1]:
            totals = tuple(
                sum(breakdown[name][i] for name in _BEFORE_COMMIT) for i in range(len(breakdown["diff"]))
            )
            if budget_ms is None:
                rows.append(Row(f"&nbsp;&nbsp;= {budget_label}", totals))
            else:
                ratio = statistics.median(totals) * 1000 / budget_ms
                rows.append(
                    Row(
                        f"&nbsp;&nbsp;= **{budget_label}**",
                        totals,
                        f"≤ {budget_ms:g} ms",
                        f"{ratio:.1f}× target ({_verdict(ratio, 1.0)})",
                    )
                )
    return rows


# --- the measurements


def _bench_job_status(setup: _Setup, *, repeat: int, flips: int, seed: int) -> list[Row]:
    """(a): the job-status file changes, the export does not."""
    assert setup.config.job_status is not None
    job_status = setup.config.job_status
    editor = JobStatusEditor(job_status.read_bytes())
    rng = random.Random(f"flips:{seed}")
    whole: list[float] = []
    floor: list[float] = []
    floor_paused: list[float] = []
    breakdown: dict[str, list[float]] = {step: [] for step in STEPS}
    for round_number in range(repeat):
        data = editor.flip(rng.sample(editor.task_ids, flips))
        _write_atomically(job_status, data)
        # The floor no parser of this file beats: the json module's C decoder alone.
        started = time.perf_counter()
        json.loads(data)
        floor.append(time.perf_counter() - started)
        # The same with the cyclic collector paused, as the runner decodes it.
        enabled = gc.isenabled()
        gc.disable()
        try:
            started = time.perf_counter()
            json.loads(data)
            floor_paused.append(time.perf_counter() - started)
        finally:
            if enabled:
                gc.enable()
        for who in ("runner", "stepwise") if round_number % 2 == 0 else ("stepwise", "runner"):
            if who == "runner":
                seconds, outcome = _timed_reload(setup.runner)
                _expect(outcome, flips, "job-status change")
                whole.append(seconds)
            else:
                steps, events = setup.stepwise.run()
                if events != flips:
                    raise RuntimeError(f"step-by-step reload: expected {flips} events, got {events}")
                for step, value in steps.items():
                    breakdown[step].append(value)
        _progress(f"  round {round_number + 1}/{repeat}: runner.reload() {whole[-1] * 1000:.1f} ms")
    rows = _step_rows(
        breakdown,
        cached=("cvatxml.loads_summary",),
        budget_label="files changed → diff computed",
        budget_ms=JOB_STATUS_TARGET_MS[setup.shape],
    )
    rows.append(Row(f"**whole runner.reload()** ({flips} tasks flipped, {flips} events)", tuple(whole)))
    rows.append(Row("reference: json.loads of the job-status bytes alone (round 1's decoder)", tuple(floor)))
    rows.append(Row("reference, collector paused (as in the runner)", tuple(floor_paused)))
    totals = [sum(breakdown[name][i] for name in _BEFORE_COMMIT) for i in range(len(breakdown["diff"]))]
    ratio = statistics.median(totals) / statistics.median(floor_paused)
    rows.append(
        Row(
            "files changed → diff computed ÷ json.loads (paused), same round",
            tuple(totals),
            "",
            f"{ratio:.2f}× json.loads",
        )
    )
    return rows


def _expat_noop_bytes(data: bytes) -> None:
    """``expat_baseline.parse_noop`` over bytes in memory, fed in the 1 MiB pieces ``loads_summary`` uses."""

    def noop(*_args: Any) -> None:
        pass

    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.ordered_attributes = True
    parser.StartElementHandler = noop
    parser.EndElementHandler = noop
    parser.CharacterDataHandler = noop
    view = memoryview(data)
    for offset in range(0, len(view), CHUNK_SIZE):
        parser.Parse(bytes(view[offset : offset + CHUNK_SIZE]), False)
    parser.Parse(b"", True)


def _bench_summary(xml: Path, *, repeat: int, seed: int) -> list[Row]:
    """(b), first half: the summary load against the no-op expat pass over the same fresh bytes."""
    mutator = XmlMutator(xml.read_bytes(), seed=seed)
    expat_times: list[float] = []
    summary_times: list[float] = []
    ratios: list[float] = []
    file_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as folder:
        scratch = Path(folder) / "annotations.xml"
        for round_number in range(repeat):
            data = mutator.next()
            order = ("expat", "summary") if round_number % 2 == 0 else ("summary", "expat")
            measured = {}
            for who in order:
                started = time.perf_counter()
                if who == "expat":
                    _expat_noop_bytes(data)
                else:
                    cvatxml.loads_summary(data, path=xml)
                measured[who] = time.perf_counter() - started
            expat_times.append(measured["expat"])
            summary_times.append(measured["summary"])
            ratios.append(measured["summary"] / measured["expat"])
            scratch.write_bytes(data)
            started = time.perf_counter()
            parse_noop(scratch)
            file_times.append(time.perf_counter() - started)
            _progress(
                f"  round {round_number + 1}/{repeat}: expat {measured['expat'] * 1000:.0f} ms,"
                f" loads_summary {measured['summary'] * 1000:.0f} ms ({ratios[-1]:.2f}×)"
            )
    ratio = statistics.median(ratios)
    return [
        Row("expat, no-op handlers, same bytes in memory (baseline)", tuple(expat_times)),
        Row(
            "**cvatxml.loads_summary**",
            tuple(summary_times),
            f"≤ {SUMMARY_TARGET_RATIO:g}× expat",
            f"{ratio:.2f}× expat, median of rounds ({_verdict(ratio, SUMMARY_TARGET_RATIO)})",
        ),
        Row("expat_baseline.parse_noop(path): the same pass reading the file", tuple(file_times)),
    ]


def _bench_xml_reload(setup: _Setup, *, repeat: int, seed: int) -> list[Row]:
    """(b), second half: the whole reload after the export changed (the job status did not)."""
    annotations = setup.config.annotations
    mutator = XmlMutator(annotations.read_bytes(), seed=seed + 1)
    whole: list[float] = []
    breakdown: dict[str, list[float]] = {step: [] for step in STEPS}
    for round_number in range(repeat):
        _write_atomically(annotations, mutator.next())
        for who in ("runner", "stepwise") if round_number % 2 == 0 else ("stepwise", "runner"):
            if who == "runner":
                seconds, outcome = _timed_reload(setup.runner)
                _expect(outcome, 0, "export change")
                whole.append(seconds)
            else:
                steps, _events = setup.stepwise.run()
                for step, value in steps.items():
                    breakdown[step].append(value)
        _progress(f"  round {round_number + 1}/{repeat}: runner.reload() {whole[-1] * 1000:.0f} ms")
    rows = _step_rows(
        breakdown,
        cached=("JobStatusParser.parse",),
        budget_label="files changed → diff computed",
        budget_ms=None,
    )
    rows.append(Row("**whole runner.reload()** (export changed, 0 events)", tuple(whole)))
    return rows


def _profile(call: Callable[[], object], *, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    # pstats' header lines and the blank ones add nothing to a report.
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls")), 0)
    return "\n".join(lines[start:])


def _profiles(setup: _Setup, shape: str, *, top: int, seed: int) -> Iterator[str]:
    assert setup.config.job_status is not None
    job_status = setup.config.job_status
    editor = JobStatusEditor(job_status.read_bytes())
    rng = random.Random(f"profile:{seed}")
    _write_atomically(job_status, editor.flip(rng.sample(editor.task_ids, 3)))
    yield f"### cProfile: runner.reload() after a job-status change ({shape}), top {top} by cumulative time"
    yield "```\n" + _profile(setup.runner.reload, top=top) + "\n```"
    setup.stepwise.run()  # keep the twin in step with the files, as in the timed rounds
    annotations = setup.config.annotations
    _write_atomically(annotations, XmlMutator(annotations.read_bytes(), seed=seed + 2).next())
    yield f"### cProfile: runner.reload() after an export change ({shape}), top {top} by cumulative time"
    yield "```\n" + _profile(setup.runner.reload, top=top) + "\n```"
    setup.stepwise.run()


def run(args: argparse.Namespace) -> str:
    """Everything the command prints on stdout."""
    dataset = ensure_dataset(
        tasks=args.tasks,
        jobs_per_task=args.jobs_per_task,
        shapes_per_image=args.shapes_per_image,
        cache_dir=args.cache_dir,
        seed=args.seed,
    )
    xml_mb = dataset.xml.stat().st_size / 1e6
    out = [
        f"## Reload benchmark: {dataset.tasks:,} tasks, {dataset.jobs:,} jobs, {dataset.images:,} images,"
        f" {dataset.shapes_per_image} shapes an image",
        "",
        f"Export {xml_mb:.1f} MB; job-status files "
        + ", ".join(
            f"{shape} {dataset.job_files[shape].stat().st_size / 1e6:.1f} MB" for shape in args.formats
        )
        + f". Python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}."
        f" Median and p95 of {args.repeat} rounds; {args.flips} tasks flipped a round.",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as folder:
        setups: dict[str, _Setup] = {}
        try:
            for shape in args.formats:
                _progress(f"{shape}: first load")
                setups[shape] = _set_up(Path(folder) / shape, dataset, shape)
            for shape in args.formats:
                _progress(f"{shape}: (a) job-status changes")
                rows = _bench_job_status(setups[shape], repeat=args.repeat, flips=args.flips, seed=args.seed)
                out += ["", f"### (a) Job status only changed — {shape} format", "", format_table(rows)]
            if args.skip_xml:
                return "\n".join(out)
            _progress("(b) loads_summary against expat")
            rows = _bench_summary(dataset.xml, repeat=args.repeat, seed=args.seed)
            reload_rounds = max(1, min(args.repeat, args.xml_reloads))
            first = setups[args.formats[0]]
            _progress(f"(b) runner.reload() after an export change ({args.formats[0]})")
            rows += _bench_xml_reload(first, repeat=reload_rounds, seed=args.seed)
            out += [
                "",
                f"### (b) Export changed ({xml_mb:.1f} MB; loads_summary vs expat: {args.repeat} rounds,"
                f" whole reload: {reload_rounds} rounds, {args.formats[0]} job status)",
                "",
                format_table(rows),
            ]
            if args.profile:
                for shape in args.formats:
                    _progress(f"{shape}: profiling")
                    out += ["", *_profiles(setups[shape], shape, top=args.top, seed=args.seed)]
        finally:
            for setup in setups.values():
                setup.close()
    return "\n".join(out)


def _formats(text: str) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in FORMATS]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"formats are a comma-separated subset of {','.join(FORMATS)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_reload", description=__doc__.strip().split("\n")[0]
    )
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--jobs-per-task", type=int, default=5)
    parser.add_argument(
        "--shapes-per-image", type=int, default=2, help="2 keeps the file moderate (the generator's: 20)"
    )
    parser.add_argument("--repeat", type=int, default=20, help="rounds; median and p95 are reported")
    parser.add_argument(
        "--xml-reloads", type=int, default=5, help="rounds of the whole reload after an export change"
    )
    parser.add_argument("--flips", type=int, default=3, help="tasks flipped in each job-status rewrite")
    parser.add_argument("--formats", type=_formats, default=list(FORMATS), help="rest,flat")
    parser.add_argument("--skip-xml", action="store_true", help="leave out (b), the export changes")
    parser.add_argument("--profile", action="store_true", help="cProfile's top functions per reload kind")
    parser.add_argument("--top", type=int, default=25, help="functions listed per profile")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where generated files are kept")
    parser.add_argument(
        "--quick", action="store_true", help="300 tasks, 3 rounds, no profile (CI smoke, well under 20 s)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.repeat, args.xml_reloads, args.profile = 300, 3, 2, False
    if args.tasks < 1 or args.jobs_per_task < 1 or args.repeat < 1 or args.shapes_per_image < 0:
        parser.error("--tasks, --jobs-per-task, --repeat must be at least 1; --shapes-per-image at least 0")
    if not 1 <= args.flips <= args.tasks:
        parser.error("--flips must be between 1 and --tasks")
    print(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
