"""Test support for end-to-end daemon tests: a workspace of real files, the real CLI in a
subprocess, and a real unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[1]
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
        {"id": int(job), "task_id": int(task), "state": states[job],
         "stage": "acceptance" if states.get(job) == "completed" else stage,
         "type": "annotation", "assignee": None, "updated_date": "2026-11-25T10:00:00Z"}
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
    def webhook(url: str, *, retry_delays: str = "[0.2, 0.2, 0.2]", extra: str = "") -> str:
        return f"""[[handler]]
type = "webhook"
name = "hook"
url = "{url}"
secret_env = "CVAT_WATCH_TEST_SECRET"
retry_delays = {retry_delays}
{extra}
"""


class NotifySocket:
    """A bound unix datagram socket that collects sd_notify messages in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(str(path))
        self._socket.settimeout(0.05)
        self._messages: list[str] = []
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
                self._messages.append(data.decode())

    @property
    def messages(self) -> list[str]:
        with self._lock:
            return list(self._messages)

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
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=environment,
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

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
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
        capture_output=True, text=True, timeout=timeout, env=environment, stdin=subprocess.DEVNULL,
    )
