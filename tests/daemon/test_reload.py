"""One watch's reload (``WatchRunner``) on real files and a real SQLite store: what it reads, what it
skips, and that its memory between reloads never changes what it commits."""

from __future__ import annotations

import gc
import json
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cvat_watch import cvatxml, jobstatus
from cvat_watch.config import WatchConfig
from cvat_watch.daemon import reload
from cvat_watch.daemon.diff import diff
from cvat_watch.daemon.events import Event
from cvat_watch.daemon.reload import WatchRunner, utc_timestamp
from cvat_watch.daemon.snapshot import Snapshot, build_snapshot
from cvat_watch.daemon.store import Store
from cvat_watch.errors import StateError
from cvat_watch.testing.generate import generate_export, generate_job_status

NOW = 1_780_000_000.0
TIMESTAMP = utc_timestamp(NOW)


def _hook(_event: Event) -> list[str]:
    return ["hook"]


def bytes_read() -> int:
    """Bytes this process has read through read() so far (Linux ``rchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


class Export:
    """A generated project export (20 tasks, 100 jobs) and its job-status page, in tmp_path."""

    def __init__(self, root: Path, *, seed: int = 0) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.annotations = root / "annotations.xml"
        self.job_status = root / "job_status.json"
        info = generate_export(
            self.annotations, images=100, tasks=20, jobs_per_task=5, shapes_per_image=1, seed=seed
        )
        generate_job_status(self.job_status, export=info, seed=seed, shape="rest")
        self.page: dict[str, Any] = json.loads(self.job_status.read_bytes())
        self.write_jobs()

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.page["results"]  # type: ignore[no-any-return]

    def write_jobs(self, *, in_place: bool = False) -> bytes:
        # CVAT counts the jobs a page lists (a repeat is one job): a count above them is a partial listing.
        self.page["count"] = len({record["id"] for record in self.records})
        data = json.dumps(self.page, indent=1).encode()
        if in_place:
            with self.job_status.open("r+b") as file:
                file.write(data)
                file.truncate()
        else:
            partial = self.job_status.with_name("job_status.json.part")
            partial.write_bytes(data)
            os.replace(partial, self.job_status)
        return data

    def size(self) -> int:
        return self.annotations.stat().st_size + self.job_status.stat().st_size


@pytest.fixture
def export(tmp_path: Path) -> Export:
    return Export(tmp_path / "exports")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(tmp_path / "state" / "cvat-watch.db")
    yield opened
    opened.close()


def make_runner(export: Export, store: Store, *, job_events: bool = False, **config: Any) -> WatchRunner:
    watch = WatchConfig(name="w", annotations=export.annotations, job_status=export.job_status, **config)
    return WatchRunner(config=watch, store=store, targets=_hook, job_events=job_events, clock=lambda: NOW)


@pytest.fixture
def settle_quickly(monkeypatch: pytest.MonkeyPatch) -> int:
    """Trust a file's status once it is 50 ms old (instead of seconds), so tests need not wait."""
    margin = 50_000_000
    monkeypatch.setattr(reload, "_SETTLE_NS", margin)
    return margin


def wait_until_settled(margin: int, *paths: Path) -> None:
    """Wait until every file's last change is ``margin`` nanoseconds (and a tick) in the past."""
    last = max(max(p.stat().st_mtime_ns, p.stat().st_ctime_ns) for p in paths)
    deadline = time.monotonic() + 10
    while time.time_ns() <= last + margin + 10_000_000:
        assert time.monotonic() < deadline, "the clock does not advance"
        time.sleep(0.01)


def set_field(export: Export, index: int, **values: Any) -> None:
    """Change the record at ``index`` and every repeat of its job alike."""
    job_id = export.records[index]["id"]
    for record in export.records:
        if record["id"] == job_id:
            record.update(values)


def set_state(export: Export, index: int, state: str) -> None:
    set_field(export, index, state=state, stage="acceptance" if state == "completed" else "annotation")


def job_of_a_completed_task(export: Export) -> int:
    """The place of a record whose task has every job completed."""
    by_task: dict[object, list[int]] = {}
    for index, record in enumerate(export.records):
        by_task.setdefault(record["task_id"], []).append(index)
    return next(
        places[0]
        for places in by_task.values()
        if all(export.records[i]["state"] == "completed" for i in places)
    )


# -- what is read --------------------------------------------------------------------------------


def test_files_with_an_unchanged_status_are_not_read_again(
    export: Export, store: Store, settle_quickly: int
) -> None:
    """Once both files have settled, a reload that finds their status unchanged reads neither of them."""
    wait_until_settled(settle_quickly, export.annotations, export.job_status)
    runner = make_runner(export, store)
    assert runner.reload(force=True).status == "committed"
    before = bytes_read()
    assert runner.reload().status == "unchanged"
    assert bytes_read() - before < export.size() // 10


def test_a_changed_job_status_reads_only_that_file(export: Export, store: Store, settle_quickly: int) -> None:
    """A job-status change re-reads the job-status file and not the settled export."""
    wait_until_settled(settle_quickly, export.annotations, export.job_status)
    runner = make_runner(export, store)
    runner.reload(force=True)
    set_state(export, 0, "rejected")
    export.write_jobs()
    before = bytes_read()
    assert runner.reload().status == "committed"
    read = bytes_read() - before
    jobs_size = export.job_status.stat().st_size
    assert jobs_size <= read < jobs_size + export.annotations.stat().st_size // 2


@pytest.mark.parametrize("phases", [1, 2, 3, 4])
def test_an_interrupted_reload_commits_nothing_and_the_next_one_does(
    export: Export, store: Store, phases: int
) -> None:
    """A stop request seen after any phase (read, parse, build) ends the reload as "interrupted"
    with nothing committed; the next reload commits the change."""
    runner = make_runner(export, store)
    runner.reload(force=True)
    set_state(export, 0, "rejected")
    export.write_jobs()
    asked = []

    def interrupted() -> bool:
        asked.append(True)
        return len(asked) >= phases

    before = store.load_baseline("w")
    assert runner.reload(interrupted=interrupted).status == "interrupted"
    assert store.load_baseline("w") == before
    assert runner.reload().status == "committed"
    assert store.load_baseline("w") != before


@pytest.mark.parametrize("how", ["force", "recheck"])
def test_force_and_the_recheck_interval_read_everything(
    export: Export, store: Store, settle_quickly: int, how: str
) -> None:
    """A forced reload, or one recheck_interval after the last read, reads both files, changed or not."""
    wait_until_settled(settle_quickly, export.annotations, export.job_status)
    runner = make_runner(export, store, recheck_interval=0.0 if how == "recheck" else 30.0)
    runner.reload(force=True)
    before = bytes_read()
    outcome = runner.reload(force=how == "force")
    assert outcome.status == ("committed" if how == "force" else "unchanged")
    assert bytes_read() - before >= export.size()


def test_a_same_size_rewrite_in_place_with_its_mtime_put_back_is_noticed(
    export: Export, store: Store, settle_quickly: int
) -> None:
    """A settled file rewritten in place, same size, its mtime put back, has a new ctime: it is read."""
    wait_until_settled(settle_quickly, export.annotations, export.job_status)
    runner = make_runner(export, store)
    runner.reload(force=True)
    before = export.job_status.stat()
    completed = job_of_a_completed_task(export)
    # "completed"/"acceptance" and "rejected!"/"annotation" have equal lengths.
    set_state(export, completed, "rejected!")
    export.write_jobs(in_place=True)
    os.utime(export.job_status, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = export.job_status.stat()
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    assert after.st_mtime_ns == before.st_mtime_ns
    outcome = runner.reload()
    assert outcome.status == "committed"
    assert [event.type for event in outcome.events] == ["task.reopened"]


def test_a_file_replaced_by_one_of_the_same_size_and_mtime_is_noticed(
    export: Export, store: Store, settle_quickly: int
) -> None:
    """An atomic replacement of the same size with the old mtime is another inode: it is read."""
    wait_until_settled(settle_quickly, export.annotations, export.job_status)
    runner = make_runner(export, store)
    runner.reload(force=True)
    before = export.job_status.stat()
    completed = job_of_a_completed_task(export)
    set_state(export, completed, "rejected!")
    export.write_jobs()
    os.utime(export.job_status, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert export.job_status.stat().st_size == before.st_size
    assert [event.type for event in runner.reload().events] == ["task.reopened"]


def test_a_file_changed_just_before_it_was_read_is_read_again(export: Export, store: Store) -> None:
    """Changes in one clock tick share time stamps: a file read soon after its last change is read again."""
    runner = make_runner(export, store)
    export.write_jobs(in_place=True)
    runner.reload(force=True)
    before = bytes_read()
    assert runner.reload().status == "unchanged"
    assert bytes_read() - before >= export.size()


def test_the_same_content_under_a_new_status_is_unchanged(
    export: Export, store: Store, settle_quickly: int
) -> None:
    """Identical bytes rewritten are read (new status) and unchanged, and not read again once settled."""
    runner = make_runner(export, store)
    runner.reload(force=True)
    export.write_jobs()
    assert runner.reload().status == "unchanged"
    wait_until_settled(settle_quickly, export.annotations, export.job_status)
    assert runner.reload().status == "unchanged"  # read once more: the last read was too close to the change
    before = bytes_read()
    assert runner.reload().status == "unchanged"
    assert bytes_read() - before < export.size() // 10


def test_a_failed_load_keeps_the_last_good_files(export: Export, store: Store, settle_quickly: int) -> None:
    """A broken job-status file fails; the old bytes back are unchanged; a real change commits."""
    wait_until_settled(settle_quickly, export.annotations, export.job_status)
    runner = make_runner(export, store)
    runner.reload(force=True)
    good = export.job_status.read_bytes()
    export.job_status.write_bytes(good[: len(good) // 2])
    assert runner.reload().status == "failed"
    export.job_status.write_bytes(good)
    assert runner.reload().status == "unchanged"
    set_state(export, 0, "rejected")
    export.write_jobs()
    assert runner.reload().status == "committed"


def test_a_dry_run_commits_nothing_and_remembers_nothing(
    export: Export, store: Store, settle_quickly: int
) -> None:
    """After a dry run the same change is still new to the next real reload."""
    wait_until_settled(settle_quickly, export.annotations, export.job_status)
    runner = make_runner(export, store)
    runner.reload(force=True)
    completed = job_of_a_completed_task(export)
    set_state(export, completed, "rejected")
    export.write_jobs()
    assert [e.type for e in runner.reload(dry_run=True).events] == ["task.reopened"]
    assert [e.type for e in runner.reload().events] == ["task.reopened"]
    assert runner.reload().status == "unchanged"


def test_a_failed_commit_is_retried_by_the_next_reload(tmp_path: Path, export: Export) -> None:
    """When the state database refuses a commit, the next reload of the same files commits it."""
    path = tmp_path / "state.db"
    store = Store.open(path, busy_timeout=0.05)
    try:
        runner = make_runner(export, store)
        runner.reload(force=True)
        completed = job_of_a_completed_task(export)
        set_state(export, completed, "rejected")
        export.write_jobs()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StateError, match="locked"):
            runner.reload()
        other.execute("ROLLBACK")
        other.close()
        assert [e.type for e in runner.reload().events] == ["task.reopened"]
        assert runner.reload().status == "unchanged"
    finally:
        store.close()


# -- the garbage collector -------------------------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was(export: Export, store: Store, enabled: bool) -> None:
    """Reloads that commit, fail or raise leave the cyclic collector enabled or disabled as they found it."""
    runner = make_runner(export, store)
    was = gc.isenabled()
    try:
        if not enabled:
            gc.disable()
        assert runner.reload(force=True).status == "committed"
        assert gc.isenabled() is enabled
        export.job_status.write_bytes(b"[")
        assert runner.reload().status == "failed"
        assert gc.isenabled() is enabled
        export.write_jobs()
        store.close()
        with pytest.raises(StateError):
            runner.reload(force=True)
        assert gc.isenabled() is enabled
    finally:
        if was:
            gc.enable()


def test_the_collector_is_paused_during_a_reload(export: Export, store: Store) -> None:
    """While a reload runs (seen from the clock it asks at commit time) the cyclic collector is disabled."""
    seen: list[bool] = []

    def clock() -> float:
        seen.append(gc.isenabled())
        return NOW

    watch = WatchConfig(name="w", annotations=export.annotations, job_status=export.job_status)
    runner = WatchRunner(config=watch, store=store, targets=_hook, clock=clock)
    assert gc.isenabled()
    runner.reload(force=True)
    set_state(export, 0, "rejected")
    export.write_jobs()
    runner.reload()
    assert seen == [False, False]
    assert gc.isenabled()


# -- the memory between reloads never changes the result ---------------------------------------------


def _edit(rng: random.Random, export: Export, spare: list[dict[str, Any]]) -> str:
    """One random change of the job-status page, in place; says what it did."""
    records = export.records
    kind = rng.choice(
        [
            "state",
            "state",
            "state",
            "assignee",
            "stage",
            "type",
            "remove",
            "insert",
            "move",
            "repeat",
            "reorder",
            "nothing",
        ]
    )
    index = rng.randrange(len(records))
    if kind == "state":
        set_state(export, index, rng.choice(["completed", "new", "in progress", "rejected"]))
    elif kind == "assignee":
        assignee = rng.choice([None, {"username": "ann", "id": 3}, {"username": "bob"}])
        set_field(export, index, assignee=assignee)
    elif kind == "stage":
        set_field(export, index, stage=rng.choice(["annotation", "validation", "acceptance"]))
    elif kind == "type":
        set_field(export, index, type=rng.choice(["annotation", "ground_truth"]))
    elif kind == "remove" and len(records) > 1:
        spare.append(records.pop(index))
    elif kind == "insert" and spare:
        records.insert(index, spare.pop())
    elif kind == "move":
        set_field(export, index, task_id=records[rng.randrange(len(records))]["task_id"])
    elif kind == "repeat":
        records.insert(rng.randrange(len(records) + 1), dict(records[index]))
    elif kind == "reorder":
        rng.shuffle(records)
    return kind


@pytest.mark.parametrize("job_events", [False, True])
def test_every_reload_commits_what_a_fresh_pipeline_computes(
    tmp_path: Path, export: Export, store: Store, job_events: bool
) -> None:
    """Through random job-status edits and an export change, the events and the stored baseline are those of
    parsing, building and diffing from scratch, and the stored text is exactly the snapshot's JSON."""
    runner = make_runner(export, store, job_events=job_events)
    rng = random.Random(f"runner:{job_events}")
    spare: list[dict[str, Any]] = []
    baseline: Snapshot | None = None
    generations: dict[str, int] = {}
    other_export = Export(tmp_path / "other", seed=1).annotations.read_bytes()
    done: set[str] = set()
    for step in range(60):
        if step == 30:  # a new export: other tasks' names, counts and segments
            export.annotations.write_bytes(other_export)
            done.add("export")
        else:
            done.add(_edit(rng, export, spare))
        export.write_jobs(in_place=rng.random() < 0.5)
        summary = cvatxml.loads_summary(export.annotations.read_bytes())
        records = jobstatus.parse_job_status(export.job_status.read_bytes())
        expected = build_snapshot(watch="w", summary=summary, jobs=records)
        result = diff(
            baseline,
            expected,
            generations=generations,
            timestamp=TIMESTAMP,
            epoch=store.epoch,
            job_events=job_events,
        )
        outcome = runner.reload(force=baseline is None)
        if baseline is not None and expected == baseline and result.generations == generations:
            assert outcome.status in ("unchanged", "committed")
        else:
            assert outcome.status == "committed", outcome
        assert outcome.events == (result.events if outcome.status == "committed" else ())
        baseline, generations = expected, dict(result.generations)
        assert store.load_baseline("w") == (baseline, generations)
        with sqlite3.connect(store.path) as connection:
            (head,) = connection.execute("SELECT snapshot FROM baselines WHERE watch = 'w'").fetchone()
            rows = dict(connection.execute("SELECT task_id, task FROM baseline_tasks WHERE watch = 'w'"))
        connection.close()
        whole = baseline.to_dict()
        tasks = whole.pop("tasks")
        assert head == json.dumps(whole | {"tasks": []}, ensure_ascii=False, separators=(",", ":"))
        assert rows == {
            task["id"]: json.dumps(task, ensure_ascii=False, separators=(",", ":")) for task in tasks
        }
    assert {"state", "remove", "insert", "move", "repeat", "reorder", "export"} <= done


def test_a_restart_with_the_same_export_reads_the_stored_brief(
    tmp_path: Path, export: Export, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The brief of the export is committed with the baseline; a new runner (a restart) on the same
    export bytes takes it instead of parsing the XML, and commits what parsing would; once the
    export's bytes change, it parses them again (and stores that brief in turn)."""
    first = make_runner(export, store)
    assert first.reload(force=True).status == "committed"
    parsed = cvatxml.loads_brief(export.annotations.read_bytes())
    digest = reload._file_digest(export.annotations.read_bytes())
    assert store.load_brief("w", digest) == parsed
    assert store.load_brief("w", "0" * 64) is None

    def no_parse(data: bytes, *, path: object = None) -> None:
        raise AssertionError("the export was parsed again")

    monkeypatch.setattr(cvatxml, "loads_brief", no_parse)
    export.records[0]["state"] = "completed" if export.records[0]["state"] != "completed" else "new"
    export.write_jobs()
    restarted = make_runner(export, store)
    outcome = restarted.reload(force=True)
    assert outcome.status == "committed"
    expected = build_snapshot(
        watch="w", summary=parsed, jobs=jobstatus.parse_job_status(export.job_status.read_bytes())
    )
    assert restarted.snapshot == expected
    monkeypatch.undo()
    other = Export(tmp_path / "other", seed=1).annotations.read_bytes()
    export.annotations.write_bytes(other)
    assert restarted.reload(force=True).status == "committed"
    assert store.load_brief("w", reload._file_digest(other)) == cvatxml.loads_brief(other)
    assert store.load_brief("w", digest) is None  # one brief per watch: the export's current one
