"""Test support for end-to-end daemon tests: a workspace of real files, the real CLI in a
subprocess, and a real unix datagram socket standing in for systemd's NOTIFY_SOCKET.

For the reliability tests and benchmarks also: generated exports whose completed tasks a test
sets (:class:`GeneratedExport`), configurations with several watches (:func:`watch_table`,
:func:`write_daemon_config`), read-only looks into the state database (:class:`StateDatabase`),
a rig that owns every daemon and receiver it starts (:class:`DaemonRig`) and the daemon's
resident memory and open descriptors from ``/proc``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]  # the repository: cvat_watch/testing/process.py
EXAMPLE = ROOT / "config" / "example"
SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHMtb25seQ=="
# The example export's jobs: job id -> task id.
EXAMPLE_JOBS = {"21": "11", "22": "11", "23": "12", "24": "13"}
# Their states in the example: tasks 11 and 13 completed, task 12 in progress.
EXAMPLE_STATES = {"21": "completed", "22": "completed", "23": "in progress", "24": "completed"}


def wait_until(condition: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def job_page(states: Mapping[str, str], *, stage: str = "annotation") -> dict[str, Any]:
    """A CVAT REST page for the example's jobs: the example's states, overridden by ``states``."""
    states = {**EXAMPLE_STATES, **states}
    results = [
        {
            "id": int(job),
            "task_id": int(task),
            "state": states[job],
            "stage": "acceptance" if states.get(job) == "completed" else stage,
            "type": "annotation",
            "assignee": None,
            "updated_date": "2026-11-25T10:00:00Z",
        }
        for job, task in EXAMPLE_JOBS.items()
    ]
    return {"count": len(results), "next": None, "previous": None, "results": results}


class Workspace:
    """An export folder, a job-status file, a state folder and a config, all in tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.exports = root / "exports"
        self.exports.mkdir()
        self.annotations = self.exports / "annotations.xml"
        self.job_status = self.exports / "job_status.json"
        shutil.copyfile(EXAMPLE / "annotations.xml", self.annotations)
        self.write_jobs({"21": "completed", "22": "completed"})
        self.state_dir = root / "state"
        self.config = root / "cvat-watch.toml"

    def write_jobs(self, states: Mapping[str, str], *, atomic: bool = True) -> None:
        data = json.dumps(job_page(states), indent=1).encode()
        self.write(self.job_status, data, atomic=atomic)

    @staticmethod
    def write(path: Path, data: bytes, *, atomic: bool = True) -> None:
        if atomic:
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_bytes(data)
            os.replace(temporary, path)
        else:
            with path.open("wb") as file:
                file.write(data)

    def write_config(self, *, handlers: Sequence[str], watch_extra: str = "", top: str = "") -> Path:
        text = f"""{top}
state_dir = "state"
[[watch]]
name = "example"
annotations = "exports/annotations.xml"
job_status = "exports/job_status.json"
debounce = 0.1
max_wait = 1.0
recheck_interval = 2.0
{watch_extra}
""" + "\n".join(handlers)
        self.config.write_text(text)
        return self.config

    @staticmethod
    def webhook(
        url: str, *, retry_delays: str = "[0.2, 0.2, 0.2]", extra: str = "", name: str = "hook"
    ) -> str:
        return f"""[[handler]]
type = "webhook"
name = "{name}"
url = "{url}"
secret_env = "CVAT_WATCH_TEST_SECRET"
retry_delays = {retry_delays}
{extra}
"""


class NotifySocket:
    """A bound unix datagram socket standing in for systemd's NOTIFY_SOCKET, drained by a thread.

    It keeps reading after READY=1, as systemd does: the daemon sends a STATUS= datagram after
    every reload, and once the socket's queue is full its send would block. Every message is kept
    with the ``time.monotonic()`` of its arrival, for benchmarks that time the gaps between them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.05)
        self._stamped: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, name="notify-socket")
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._stamped.append((time.monotonic(), data.decode(errors="replace")))

    @property
    def messages(self) -> list[str]:
        return [message for _, message in self.stamped]

    @property
    def stamped(self) -> list[tuple[float, str]]:
        """(time.monotonic() of arrival, message) of every datagram so far."""
        with self._lock:
            return list(self._stamped)

    def first(self, prefix: str, *, after: float = 0.0) -> float | None:
        """When the first message starting with ``prefix`` arrived at or after ``after``."""
        return next((at for at, message in self.stamped if at >= after and message.startswith(prefix)), None)

    def count(self, prefix: str) -> int:
        return sum(message.startswith(prefix) for message in self.messages)

    def wait_for(self, prefix: str, *, count: int = 1, timeout: float = 15.0) -> None:
        wait_until(lambda: self.count(prefix) >= count, timeout=timeout, what=f"{count}× {prefix!r}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaemonProcess:
    """``cvat-watch run`` in a subprocess, its stderr captured in a file."""

    def __init__(
        self, config: Path, *, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
    ) -> None:
        self.log_path = config.with_name(f"daemon-{time.monotonic_ns()}.log")
        self._log = self.log_path.open("wb")
        environment = {**os.environ, "CVAT_WATCH_TEST_SECRET": SECRET, **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cvat_watch", "run", "--config", str(config), "--allow-root", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=environment,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, *, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if not self._log.closed:
            self._log.close()


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CVAT_WATCH_TEST_SECRET": SECRET, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cvat_watch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        stdin=subprocess.DEVNULL,
    )


# -- reliability: generated exports, several watches, the state database, process figures ---------


class GeneratedExport:
    """A generated CVAT export (``benchmarks.generate``) whose completed tasks the caller sets.

    The job-status file is a flat list: every job of a completed task is ``completed`` at stage
    ``acceptance``; a task that is not completed has its first job ``in progress``.
    """

    def __init__(
        self,
        folder: Path,
        *,
        tasks: int,
        jobs_per_task: int = 1,
        seed: int = 0,
        shapes_per_image: int = 1,
        completed: Iterable[str] = (),
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.annotations = folder / "annotations.xml"
        self.job_status = folder / "job_status.json"
        self._tasks, self._jobs_per_task = tasks, jobs_per_task
        self.shapes_per_image = shapes_per_image
        info = self._generate(self.annotations, seed)
        self.jobs: dict[str, tuple[str, ...]] = {
            str(task): tuple(str(job) for job in jobs) for task, jobs in info.jobs.items()
        }
        self.task_ids: list[str] = sorted(self.jobs, key=int)
        self.completed: frozenset[str] = frozenset()
        self.write_jobs(completed)

    def _generate(self, path: Path, seed: int) -> Any:
        from cvat_watch.testing.generate import generate_export

        return generate_export(
            path,
            seed=seed,
            shapes_per_image=self.shapes_per_image,
            tasks=self._tasks,
            jobs_per_task=self._jobs_per_task,
            images=self._tasks * self._jobs_per_task,
        )

    def xml_variant(self, seed: int) -> bytes:
        """The bytes of the same tasks and jobs generated with another seed (other shapes and dates)."""
        other = self.folder / f".variant-{seed}.xml"
        self._generate(other, seed)
        try:
            return other.read_bytes()
        finally:
            other.unlink()

    def job_status_bytes(self, completed: Iterable[str]) -> bytes:
        done = set(completed)
        unknown = done - set(self.jobs)
        if unknown:
            raise ValueError(f"no such task(s): {sorted(unknown)}")
        rows = []
        for task in self.task_ids:
            for index, job in enumerate(self.jobs[task]):
                finished = task in done or index > 0
                rows.append(
                    {
                        "task_id": task,
                        "job_id": int(job),
                        "state": "completed" if finished else "in progress",
                        "stage": "acceptance" if finished else "annotation",
                        "assignee": None,
                    }
                )
        return json.dumps(rows, separators=(",", ":")).encode()

    def write_jobs(self, completed: Iterable[str], *, atomic: bool = True, chunk: int | None = None) -> None:
        """Write the job-status file so that exactly ``completed`` are complete.

        Non-atomic with ``chunk``: rewritten in place in pieces of that many bytes, each flushed,
        so that a reader can catch the file empty or half-written.
        """
        completed = frozenset(completed)
        data = self.job_status_bytes(completed)
        write_file(self.job_status, data, atomic=atomic, chunk=chunk)
        self.completed = completed

    def watch(self, name: str, **options: Any) -> str:
        return watch_table(name, self.annotations, self.job_status, **options)


def write_file(path: Path, data: bytes, *, atomic: bool = True, chunk: int | None = None) -> None:
    """Replace ``path`` atomically (write and rename) or rewrite it in place, in ``chunk``-byte pieces."""
    if atomic or chunk is None:
        Workspace.write(path, data, atomic=atomic)
        return
    with path.open("wb") as file:
        for start in range(0, len(data), chunk):
            file.write(data[start : start + chunk])
            file.flush()


def watch_table(
    name: str,
    annotations: Path,
    job_status: Path | None,
    *,
    debounce: float = 0.1,
    max_wait: float = 1.0,
    recheck_interval: float = 2.0,
    extra: str = "",
) -> str:
    """One ``[[watch]]`` table with test-friendly timings."""
    jobs = f'job_status = "{job_status}"\n' if job_status is not None else ""
    return (
        f'[[watch]]\nname = "{name}"\nannotations = "{annotations}"\n{jobs}'
        f"debounce = {debounce}\nmax_wait = {max_wait}\nrecheck_interval = {recheck_interval}\n{extra}\n"
    )


def write_daemon_config(
    path: Path, *, watches: Sequence[str], handlers: Sequence[str], state_dir: Path | str = "state"
) -> Path:
    """A configuration of the given watch and handler tables."""
    path.write_text(f'state_dir = "{state_dir}"\n' + "\n".join([*watches, *handlers]) + "\n")
    return path


class StateDatabase:
    """Read-only looks into the daemon's state database, a fresh connection each time.

    Read-only so that the test never checkpoints or removes the WAL of a daemon it killed: the
    next daemon must find the database exactly as the kill left it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if not self.path.exists():
            return []
        connection = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return connection.execute(sql, tuple(parameters)).fetchall()
        finally:
            connection.close()

    def events(self) -> list[tuple[str, str, str, str]]:
        """(id, type, watch, task_id) of every event, in the order they were committed."""
        rows = self.query("SELECT id, type, watch, task_id FROM events ORDER BY seq")
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    def event_ids(self) -> set[str]:
        return {row[0] for row in self.query("SELECT id FROM events")}

    def deliveries(self, handler_key: str | None = None) -> list[dict[str, Any]]:
        """Every delivery row (of the handler named ``handler_key``) as a dict, oldest first.

        ``handler_key`` is the handler's configured name, ``handler_id`` the identity the row is
        bound to.
        """
        where, parameters = ("WHERE h.name = ?", (handler_key,)) if handler_key else ("", ())
        columns = ("id", "event_id", "handler_key", "handler_id", "watch", "task_id", "status", "attempts")
        rows = self.query(
            "SELECT d.id, d.event_id, COALESCE(h.name, d.handler_id), d.handler_id, d.watch, d.task_id,"
            " d.status, d.attempts, d.last_error"
            f" FROM deliveries AS d LEFT JOIN handlers AS h ON h.id = d.handler_id {where} ORDER BY d.id",
            parameters,
        )
        return [dict(zip((*columns, "last_error"), row, strict=True)) for row in rows]

    def epoch(self) -> str:
        """The database's epoch, part of every event id; "" before the database exists."""
        rows = self.query("SELECT value FROM meta WHERE key = 'epoch'")
        return str(rows[0][0]) if rows else ""

    def unsettled(self) -> int:
        """Deliveries still pending."""
        rows = self.query("SELECT count(*) FROM deliveries WHERE status = 'pending'")
        return int(rows[0][0]) if rows else 0

    def baseline_completed(self, watch: str) -> frozenset[str] | None:
        """The completed task ids of ``watch``'s committed baseline; None before its first commit."""
        # One query, so that a commit between two reads cannot mix two baselines.
        rows = self.query(
            "SELECT t.task FROM baselines AS b LEFT JOIN baseline_tasks AS t ON t.watch = b.watch"
            " WHERE b.watch = ?",
            (watch,),
        )
        if not rows:
            return None
        tasks = [json.loads(text) for (text,) in rows if text is not None]
        return frozenset(task["id"] for task in tasks if task["completed"])

    def integrity(self) -> str:
        return "; ".join(str(row[0]) for row in self.query("PRAGMA integrity_check"))


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (``VmRSS`` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def open_fds(pid: int) -> int:
    """How many file descriptors process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


class DaemonRig:
    """One NOTIFY_SOCKET, and every daemon and receiver started through it, stopped by :meth:`close`."""

    def __init__(self, root: Path) -> None:
        from cvat_watch.testing.receiver import Receiver

        self._receiver_class = Receiver
        self.root = root
        self.notify = NotifySocket(root / "notify.sock")
        self.daemons: list[DaemonProcess] = []
        self.receivers: list[Any] = []

    def receiver(self, **options: Any) -> Any:
        """A started :class:`receiver.Receiver` (options as its constructor takes them)."""
        receiver = self._receiver_class(**options).start()
        self.receivers.append(receiver)
        return receiver

    def start(
        self,
        config: Path,
        *,
        ready: bool = True,
        timeout: float = 30.0,
        args: Sequence[str] = ("--log-level", "warning"),
        env: Mapping[str, str] | None = None,
    ) -> DaemonProcess:
        """Start ``cvat-watch run``; with ``ready``, wait for its READY=1 (or fail if it exits)."""
        before = self.notify.count("READY=1")
        daemon = DaemonProcess(config, env={"NOTIFY_SOCKET": str(self.notify.path), **(env or {})}, args=args)
        self.daemons.append(daemon)
        if ready:
            wait_until(
                lambda: self.notify.count("READY=1") > before or daemon.process.poll() is not None,
                timeout=timeout,
                what="READY=1",
            )
            if daemon.process.poll() is not None:
                raise AssertionError(f"the daemon exited with {daemon.process.returncode}:\n{daemon.log}")
        return daemon

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.process.poll() is None:
                daemon.process.send_signal(signal.SIGTERM)
                try:
                    daemon.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    daemon.process.kill()
                    daemon.process.wait(timeout=10)
            daemon.__exit__(None, None, None)
        for receiver in self.receivers:
            receiver.stop()
        self.notify.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
