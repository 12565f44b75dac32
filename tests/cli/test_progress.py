"""`cvat-watch status` shows reading progress on a terminal, and only there (a real pty)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

from cvat_watch.testing.process import EXAMPLE, run_cli


def _status_with_stderr_on_a_terminal() -> tuple[str, str]:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cvat_watch",
                "status",
                str(EXAMPLE / "annotations.xml"),
                "--jobs",
                str(EXAMPLE / "job_status.json"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        terminal = -1
        chunks = []
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        stdout, _ = process.communicate(timeout=60)
        assert process.returncode == 0
        return stdout.decode(), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)


def test_progress_on_a_terminal_goes_to_stderr_and_is_cleared() -> None:
    """On a terminal, stderr shows "reading annotations.xml (… kB): N%" and clears the line; stdout is the table."""
    stdout, terminal = _status_with_stderr_on_a_terminal()
    assert "reading annotations.xml (" in terminal and "%" in terminal
    assert terminal.rstrip().endswith("\x1b[K")
    assert "\r" not in stdout and "reading" not in stdout
    assert stdout.splitlines()[0].split()[:2] == ["ID", "NAME"]


def test_no_progress_when_stderr_is_not_a_terminal() -> None:
    """Piped or logged, stderr gets no progress line and no carriage return."""
    result = run_cli("status", str(EXAMPLE / "annotations.xml"), "--jobs", str(EXAMPLE / "job_status.json"))
    assert result.returncode == 0
    assert "reading" not in result.stderr and "\r" not in result.stderr


def test_read_position_comes_from_the_open_descriptor(tmp_path) -> None:
    """The progress reads how far this process's descriptor on the file got (/proc/self/fdinfo)."""
    from cvat_watch.cli.progress import _position

    path = tmp_path / "big.xml"
    path.write_bytes(b"x" * 10_000)
    assert _position(path) is None
    with path.open("rb", buffering=0) as file:
        file.read(1234)
        assert _position(path) == 1234
    assert _position(path) is None
