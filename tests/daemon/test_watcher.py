"""FileWatcher: a real watchdog observer on tmp_path, filtered to our files, debounced."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cvat_watch.daemon.watcher import FileWatcher

WAIT = 5.0  # generous deadline for something that should happen in well under a second

MakeWatcher = Callable[..., FileWatcher]


class Recorder:
    """An on_change callback that remembers its calls and lets a test wait for them."""

    def __init__(self, probe: Callable[[frozenset[Path]], object] | None = None) -> None:
        self.calls: list[frozenset[Path]] = []
        self.seen: list[object] = []  # what probe() found at each call
        self.times: list[float] = []
        self._probe = probe
        self._condition = threading.Condition()

    def __call__(self, paths: frozenset[Path]) -> None:
        seen = self._probe(paths) if self._probe is not None else None
        with self._condition:
            self.calls.append(paths)
            self.seen.append(seen)
            self.times.append(time.monotonic())
            self._condition.notify_all()

    def wait_for_calls(self, count: int, timeout: float = WAIT) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: len(self.calls) >= count, timeout)

    def wait_until(self, predicate: Callable[[Recorder], bool], timeout: float = WAIT) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: predicate(self), timeout)


@pytest.fixture
def make_watcher() -> Iterator[MakeWatcher]:
    """Create and start watchers that are stopped at teardown even when the test fails."""
    watchers: list[FileWatcher] = []

    def make(
        paths: list[Path], on_change: Callable[[frozenset[Path]], None], **options: object
    ) -> FileWatcher:
        options.setdefault("debounce", 0.1)
        options.setdefault("max_wait", 2.0)
        options.setdefault("poll_interval", 0.1)
        watcher = FileWatcher(paths, on_change, **options)  # type: ignore[arg-type]
        watchers.append(watcher)
        watcher.start()
        return watcher

    yield make
    for watcher in watchers:
        watcher.stop()


def atomic_write(path: Path, text: str) -> None:
    """Write like an exporter: a temporary file in the same directory renamed over the target."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_atomic_rename_fires_once_with_the_path(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """Replacing the file by rename fires on_change once, with the path as given."""
    target = tmp_path / "annotations.xml"
    target.write_text("v1")
    recorder = Recorder()
    make_watcher([target], recorder, debounce=0.2)

    atomic_write(target, "v2")

    assert recorder.wait_for_calls(1)
    assert not recorder.wait_for_calls(2, timeout=0.6)
    assert recorder.calls == [frozenset({target})]


def test_non_atomic_rewrite_fires_once_after_the_quiet_window(
    tmp_path: Path, make_watcher: MakeWatcher
) -> None:
    """A file written in place in three chunks fires once, after the writer has finished."""
    target = tmp_path / "annotations.xml"
    target.write_text("old")
    recorder = Recorder(probe=lambda paths: target.read_text())
    make_watcher([target], recorder, debounce=0.3)

    with target.open("w") as stream:
        for chunk in ("<annotations>", "<image/>", "</annotations>"):
            stream.write(chunk)
            stream.flush()
            time.sleep(0.05)

    assert recorder.wait_for_calls(1)
    assert not recorder.wait_for_calls(2, timeout=0.6)
    assert recorder.calls == [frozenset({target})]
    assert recorder.seen == ["<annotations><image/></annotations>"]


def test_unrelated_files_do_not_fire(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """Neighbours, temporary files that are never renamed and a namesake elsewhere are ignored."""
    watched_dir = tmp_path / "exports"
    other_dir = tmp_path / "elsewhere"
    watched_dir.mkdir()
    other_dir.mkdir()
    target = watched_dir / "annotations.xml"
    target.write_text("v1")
    recorder = Recorder()
    make_watcher([target], recorder)

    (watched_dir / "other.xml").write_text("x")
    (watched_dir / "annotations.xml.bak").write_text("x")
    (watched_dir / ".annotations.xml.partial").write_text("x")
    (watched_dir / "subdir").mkdir()
    (watched_dir / "subdir" / "annotations.xml").write_text("x")
    (other_dir / "annotations.xml").write_text("x")
    (watched_dir / "other.xml").unlink()
    # Our own change comes last: events arrive in order, so any false hit shows up by then.
    atomic_write(target, "v2")

    assert recorder.wait_for_calls(1)
    assert not recorder.wait_for_calls(2, timeout=0.3)
    assert recorder.calls == [frozenset({target})]


def test_only_the_changed_files_of_a_group_are_reported(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """With two files watched, a change to one reports that one; changes together report both."""
    first, second = tmp_path / "a.xml", tmp_path / "jobs.json"
    first.write_text("1")
    second.write_text("1")
    recorder = Recorder()
    make_watcher([first, second], recorder, debounce=0.15)

    atomic_write(second, "2")
    assert recorder.wait_for_calls(1)
    atomic_write(first, "3")
    atomic_write(second, "3")
    assert recorder.wait_for_calls(2)

    assert recorder.calls[0] == frozenset({second})
    assert frozenset({first, second}) == frozenset().union(*recorder.calls[1:])


def test_continuous_rewriting_still_fires_every_max_wait(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """An exporter rewriting every 50 ms for 2 s still produces reloads, about one per max_wait."""
    target = tmp_path / "annotations.xml"
    target.write_text("0")
    recorder = Recorder()
    make_watcher([target], recorder, debounce=0.5, max_wait=1.0)

    started = last_write = time.monotonic()
    n = 0
    while last_write - started < 2.0:
        n += 1
        atomic_write(target, str(n))
        last_write = time.monotonic()
        time.sleep(0.05)
    # The last write is reported by a call that starts after it, whichever group it fell in.
    assert recorder.wait_until(lambda r: bool(r.times) and r.times[-1] > last_write)

    during = [t for t in recorder.times if t < last_write]
    assert len(during) >= 1  # without max_wait, the first call would come only after the writer stops
    assert len(recorder.calls) <= 5
    assert all(call == frozenset({target}) for call in recorder.calls)


def test_delete_then_recreate_fires(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """Deleting the file fires (it went away) and creating it again fires again."""
    target = tmp_path / "annotations.xml"
    target.write_text("v1")
    recorder = Recorder(probe=lambda paths: target.exists())
    make_watcher([target], recorder)

    target.unlink()
    assert recorder.wait_until(lambda r: False in r.seen)
    target.write_text("v2")
    assert recorder.wait_until(lambda r: r.seen[-1] is True)
    assert set(recorder.calls) == {frozenset({target})}


def test_moving_the_file_away_fires(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """Renaming our file to another name counts as the file going away."""
    target = tmp_path / "annotations.xml"
    target.write_text("v1")
    recorder = Recorder(probe=lambda paths: target.exists())
    make_watcher([target], recorder)

    os.rename(target, tmp_path / "annotations.old")

    assert recorder.wait_until(lambda r: r.seen == [False])
    assert recorder.calls == [frozenset({target})]


def test_parent_directory_created_after_start_is_picked_up(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """A parent directory missing at start is watched once it appears; its file fires then and later."""
    target = tmp_path / "not" / "yet" / "annotations.xml"
    recorder = Recorder()
    watcher = make_watcher([target], recorder)
    assert watcher.alive

    target.parent.mkdir(parents=True)
    atomic_write(target, "v1")
    assert recorder.wait_for_calls(1)
    assert recorder.calls[0] == frozenset({target})

    count = len(recorder.calls)
    atomic_write(target, "v2")  # the directory is now watched with inotify, not just noticed
    assert recorder.wait_for_calls(count + 1)
    assert set(recorder.calls) == {frozenset({target})}


def test_directory_removed_and_recreated_is_watched_again(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """Removing the whole directory fires, and the recreated directory is watched again."""
    directory = tmp_path / "exports"
    directory.mkdir()
    target = directory / "annotations.xml"
    target.write_text("v1")
    recorder = Recorder(probe=lambda paths: target.exists())
    watcher = make_watcher([target], recorder)

    shutil.rmtree(directory)
    assert recorder.wait_until(lambda r: False in r.seen)
    directory.mkdir()
    atomic_write(target, "v2")
    assert recorder.wait_until(lambda r: r.seen[-1] is True)

    count = len(recorder.calls)
    atomic_write(target, "v3")
    assert recorder.wait_for_calls(count + 1)
    assert watcher.alive


def test_directory_replaced_by_rename_fires(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """Swapping in a new directory under the same name (mv new dir) fires and is watched from then on."""
    directory = tmp_path / "exports"
    directory.mkdir()
    target = directory / "annotations.xml"
    target.write_text("old")
    recorder = Recorder(probe=lambda paths: target.read_text() if target.exists() else None)
    make_watcher([target], recorder)

    staged = tmp_path / "exports.new"
    staged.mkdir()
    (staged / "annotations.xml").write_text("new")
    directory.rename(tmp_path / "exports.old")
    staged.rename(directory)
    assert recorder.wait_until(lambda r: "new" in r.seen)

    count = len(recorder.calls)
    atomic_write(target, "newer")
    assert recorder.wait_for_calls(count + 1)
    assert recorder.seen[-1] == "newer"


def test_symlinked_parent_directory(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """A file reached through a symlinked directory fires with the path as given."""
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    (real / "annotations.xml").write_text("v1")
    given = link / "annotations.xml"
    recorder = Recorder()
    make_watcher([given], recorder)

    atomic_write(real / "annotations.xml", "v2")

    assert recorder.wait_for_calls(1)
    assert recorder.calls == [frozenset({given})]


def test_polling_observer(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """poll=True sees an atomic rename and an in-place rewrite through PollingObserver."""
    target = tmp_path / "annotations.xml"
    target.write_text("v1")
    (tmp_path / "neighbour.txt").write_text("x")
    recorder = Recorder()
    make_watcher([target], recorder, poll=True, poll_interval=0.1)

    atomic_write(target, "v2")
    assert recorder.wait_for_calls(1)
    (tmp_path / "neighbour.txt").write_text("changed")
    target.write_text("version three")
    assert recorder.wait_for_calls(2)
    assert set(recorder.calls) == {frozenset({target})}


def test_polling_observer_picks_up_a_late_directory(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """With polling too, a parent directory created after start is watched once it appears."""
    target = tmp_path / "later" / "annotations.xml"
    recorder = Recorder()
    make_watcher([target], recorder, poll=True, poll_interval=0.1)

    target.parent.mkdir()
    target.write_text("v1")
    assert recorder.wait_for_calls(1)
    count = len(recorder.calls)
    atomic_write(target, "v2")
    assert recorder.wait_for_calls(count + 1)


def test_stop_joins_every_thread(tmp_path: Path) -> None:
    """stop() leaves no thread of the watcher behind and alive turns False."""
    target = tmp_path / "annotations.xml"
    target.write_text("v1")
    before = set(threading.enumerate())
    recorder = Recorder()
    watcher = FileWatcher([target, tmp_path / "missing" / "jobs.json"], recorder, debounce=0.05)
    assert not watcher.alive
    watcher.start()
    try:
        assert watcher.alive
        assert len(set(threading.enumerate()) - before) >= 2
        atomic_write(target, "v2")
        assert recorder.wait_for_calls(1)
    finally:
        watcher.stop()
    assert not watcher.alive
    assert set(threading.enumerate()) - before == set()


def test_on_change_error_is_logged_and_the_watcher_carries_on(
    tmp_path: Path, make_watcher: MakeWatcher, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_change is logged with its traceback and later changes still arrive."""
    target = tmp_path / "annotations.xml"
    target.write_text("v1")
    calls: list[frozenset[Path]] = []
    second = threading.Event()

    def on_change(paths: frozenset[Path]) -> None:
        calls.append(paths)
        if len(calls) == 1:
            raise RuntimeError("reload blew up")
        second.set()

    with caplog.at_level(logging.ERROR, logger="cvat_watch.daemon.watcher"):
        watcher = make_watcher([target], on_change)
        atomic_write(target, "v2")
        deadline = time.monotonic() + WAIT
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        atomic_write(target, "v3")
        assert second.wait(WAIT)

    assert watcher.alive
    errors = [
        r for r in caplog.records if r.name == "cvat_watch.daemon.watcher" and r.levelno == logging.ERROR
    ]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "reload blew up" in str(errors[0].exc_info[1])


def test_on_change_never_runs_concurrently(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """Changes arriving while on_change runs are delivered afterwards, never in parallel."""
    target = tmp_path / "annotations.xml"
    target.write_text("v1")
    active = 0
    most = 0
    lock = threading.Lock()
    done = Recorder()

    def slow(paths: frozenset[Path]) -> None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        time.sleep(0.3)  # a slow reload
        with lock:
            active -= 1
        done(paths)

    make_watcher([target], slow, debounce=0.05)
    atomic_write(target, "v2")
    time.sleep(0.15)  # the writer keeps changing the file while the first reload runs
    atomic_write(target, "v3")
    assert done.wait_for_calls(2)
    assert most == 1


def test_start_twice_is_refused(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """A watcher starts once; the daemon makes a new one instead of restarting."""
    watcher = make_watcher([tmp_path / "a.xml"], Recorder())
    with pytest.raises(RuntimeError):
        watcher.start()


@pytest.mark.parametrize(
    ("paths", "options", "error"),
    [
        ([], {}, ValueError),
        ("annotations.xml", {}, TypeError),
        ([Path("/")], {}, ValueError),
        ([Path("a.xml")], {"debounce": -1}, ValueError),
        ([Path("a.xml")], {"max_wait": 0}, ValueError),
        ([Path("a.xml")], {"poll_interval": 0}, ValueError),
    ],
)
def test_invalid_arguments_are_rejected(
    paths: object, options: dict[str, float], error: type[Exception]
) -> None:
    """No paths, a lone string, a path without a file name and non-positive timings are refused."""
    with pytest.raises(error):
        FileWatcher(paths, Recorder(), **options)  # type: ignore[arg-type]


def test_repr_names_the_paths_not_the_callback(tmp_path: Path) -> None:
    """The repr shows what is watched and how, not internal state."""
    watcher = FileWatcher([tmp_path / "a.xml"], Recorder(), name="main")
    text = repr(watcher)
    assert "a.xml" in text and "main" in text
    assert "Recorder" not in text and "_scheduled" not in text


def test_same_file_through_two_routes(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """One file given both directly and through a symlinked directory reports both paths, with one watch."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    direct, via_link = real / "a.xml", tmp_path / "link" / "a.xml"
    direct.write_text("v1")
    recorder = Recorder()
    make_watcher([direct, via_link], recorder)

    atomic_write(direct, "v2")

    assert recorder.wait_for_calls(1)
    assert recorder.calls[0] == frozenset({direct, via_link})


def test_stop_is_idempotent_and_safe_before_start(tmp_path: Path) -> None:
    """stop() on a watcher never started, or stopped already, does nothing."""
    watcher = FileWatcher([tmp_path / "a.xml"], Recorder())
    watcher.stop()
    started = FileWatcher([tmp_path / "a.xml"], Recorder())
    started.start()
    started.stop()
    started.stop()
    assert not started.alive


def test_stop_from_inside_on_change(tmp_path: Path) -> None:
    """on_change may stop its own watcher (the daemon shutting down from a reload) without deadlock."""
    target = tmp_path / "a.xml"
    target.write_text("v1")
    stopped = threading.Event()
    watcher: FileWatcher

    def on_change(paths: frozenset[Path]) -> None:
        watcher.stop()
        stopped.set()

    watcher = FileWatcher([target], on_change, debounce=0.05)
    watcher.start()
    try:
        atomic_write(target, "v2")
        assert stopped.wait(WAIT)
    finally:
        watcher.stop()
    assert not watcher.alive


def test_alive_turns_false_when_the_observer_thread_dies(tmp_path: Path, make_watcher: MakeWatcher) -> None:
    """A dead observer thread shows in alive, so the daemon knows to re-create the watcher."""
    watcher = make_watcher([tmp_path / "a.xml"], Recorder())
    assert watcher.alive
    observer = watcher._observer  # reaching in is the only way to kill watchdog's thread from outside
    assert observer is not None
    observer.stop()
    observer.join(WAIT)
    assert not watcher.alive
