"""The command handler, running real Python child processes."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.handlers import CommandHandler, Handler, event_body
from cvat_watch.testing.receiver import sample_event

# Writes its stdin and its CVAT_WATCH_* variables to the file named by argv[1].
RECORDER = """
import json, os, sys
data = sys.stdin.buffer.read()
env = {k: v for k, v in os.environ.items() if k.startswith(("CVAT_WATCH_", "EXTRA_"))}
with open(sys.argv[1], "w", encoding="utf-8") as out:
    json.dump({"stdin": data.decode("utf-8"), "env": env, "cwd": os.getcwd()}, out)
"""


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def deliver_error(handler: CommandHandler) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        handler.deliver(sample_event())
    return caught.value


def test_is_a_handler() -> None:
    """CommandHandler satisfies the Handler protocol."""
    assert isinstance(CommandHandler(argv=["true"]), Handler)


def test_event_body_on_stdin_and_event_env(tmp_path: Path) -> None:
    """The child reads the canonical body on stdin and sees the event type and id in its env."""
    out = tmp_path / "out.json"
    event = sample_event(task={"id": "1", "name": "Tâche", "jobs": []})
    handler = CommandHandler(argv=python(RECORDER, str(out)), env={"EXTRA_TOKEN": "x"}, cwd=str(tmp_path))
    handler.deliver(event)
    seen = json.loads(out.read_text(encoding="utf-8"))
    assert seen["stdin"].encode("utf-8") == event_body(event)
    assert seen["env"] == {
        "CVAT_WATCH_EVENT_TYPE": "task.completed",
        "CVAT_WATCH_EVENT_ID": event["id"],
        "EXTRA_TOKEN": "x",
    }
    assert os.path.samefile(seen["cwd"], tmp_path)


def test_env_is_added_to_the_inherited_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Configured env adds to our environment rather than replacing it."""
    monkeypatch.setenv("EXTRA_INHERITED", "yes")
    out = tmp_path / "out.json"
    CommandHandler(argv=python(RECORDER, str(out)), env={"EXTRA_ADDED": "1"}).deliver(sample_event())
    env = json.loads(out.read_text(encoding="utf-8"))["env"]
    assert env["EXTRA_INHERITED"] == "yes"
    assert env["EXTRA_ADDED"] == "1"


def test_nonzero_exit_is_retried_with_status_and_stderr() -> None:
    """A non-zero exit raises DeliveryError(retry=True) naming the status and quoting stderr."""
    code = "import sys; sys.stdin.read(); print('first line', file=sys.stderr); sys.exit('disk is full')"
    error = deliver_error(CommandHandler(argv=python(code)))
    assert error.retry is True
    assert "exited with status 1" in str(error)
    assert "stderr: first line | disk is full" in str(error)


def test_long_stderr_is_cut_to_its_tail() -> None:
    """Only the last ~200 characters of stderr reach the message."""
    code = "import sys; sys.stderr.write('A' * 5000 + 'THE END'); sys.exit(4)"
    message = str(deliver_error(CommandHandler(argv=python(code))))
    assert message.endswith("THE END")
    assert "exited with status 4" in message
    assert len(message) < 300


def test_child_ignoring_stdin_is_fine() -> None:
    """A child that exits without reading stdin still counts as delivered."""
    big = sample_event(task={"id": "1", "jobs": [], "name": "x" * 200_000})  # more than a pipe holds
    CommandHandler(argv=python("pass")).deliver(big)


def test_killed_by_signal_is_named() -> None:
    """A child killed by a signal is reported by the signal's name."""
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    assert "killed by SIGTERM" in str(deliver_error(CommandHandler(argv=python(code))))


def test_timeout_kills_the_child_and_its_children(tmp_path: Path) -> None:
    """A child still running at the timeout is killed, grandchildren too, and the error says timeout."""
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open(sys.argv[1], 'w').write(str(g.pid))\n"
        "time.sleep(60)\n"
    )
    handler = CommandHandler(argv=python(code, str(pid_file)), timeout=0.5)
    started = time.monotonic()
    error = deliver_error(handler)
    assert time.monotonic() - started < 5
    assert error.retry is True
    assert "killed after the 0.5 s timeout" in str(error)
    grandchild = int(pid_file.read_text())
    assert wait_until_gone(grandchild, timeout=5.0)


def wait_until_gone(pid: int, *, timeout: float) -> bool:
    """Whether ``pid`` ends (or is only a zombie awaiting its reaper) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def test_program_not_found(tmp_path: Path) -> None:
    """A missing program raises DeliveryError(retry=True) saying it was not found."""
    error = deliver_error(CommandHandler(argv=[str(tmp_path / "no-such-program"), "--token", "SECRET"]))
    assert error.retry is True
    assert "program not found" in str(error)
    assert "SECRET" not in str(error)


def test_program_not_executable(tmp_path: Path) -> None:
    """A program without the execute bit raises DeliveryError(retry=True) saying so."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    error = deliver_error(CommandHandler(argv=[str(script)]))
    assert error.retry is True
    assert "not executable" in str(error)


def test_missing_working_directory(tmp_path: Path) -> None:
    """A cwd that does not exist is named in the error."""
    missing = str(tmp_path / "gone")
    error = deliver_error(CommandHandler(argv=[sys.executable, "-c", "pass"], cwd=missing))
    assert f"working directory {missing} does not exist" in str(error)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"argv": []}, "argv"),
        ({"argv": [""]}, "argv"),
        ({"argv": "notify-send hello"}, "argv"),
        ({"argv": ["a\0b"]}, "argv"),
        ({"argv": ["true"], "timeout": 0}, "timeout"),
        ({"argv": ["true"], "env": {"A=B": "x"}}, "env"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, object], key: str) -> None:
    """An empty or string command, a NUL, a bad env name or a non-positive timeout is a ConfigError."""
    with pytest.raises(ConfigError) as caught:
        CommandHandler(**options)  # type: ignore[arg-type]
    assert caught.value.key == key


def test_repr_hides_arguments_and_environment() -> None:
    """repr names the program but not its arguments or environment, which may hold tokens."""
    handler = CommandHandler(argv=["notify", "--token", "SECRET"], env={"API_KEY": "HIDDEN"})
    assert "notify" in repr(handler)
    assert "SECRET" not in repr(handler)
    assert "HIDDEN" not in repr(handler)
