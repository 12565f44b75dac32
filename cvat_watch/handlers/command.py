"""The command handler: run a program with the event's JSON on stdin.

No shell is involved: ``argv`` is executed as given. The child inherits our environment,
plus ``env`` on top, plus ``CVAT_WATCH_EVENT_TYPE`` and ``CVAT_WATCH_EVENT_ID``. It runs in
a session of its own so that a timeout kills whatever it started, not just itself.
Exit status 0 is delivered; anything else is worth another attempt later.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.handlers.base import event_body

__all__ = ["CommandHandler"]

_STDERR_TAIL = 200
# After a kill, how long to wait for the pipes to close: a grandchild that left our session
# can hold them open forever.
_REAP_SECONDS = 2.0


def _stderr_tail(stderr: bytes | None) -> str:
    text = (stderr or b"").decode("utf-8", "replace").strip()
    if not text:
        return ""
    if len(text) > _STDERR_TAIL:
        text = "…" + text[-_STDERR_TAIL:]
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


def _exit_reason(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    try:
        # The child leads its own session (start_new_session), so its pid is the group id.
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _argv_tuple(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str):
        # A string would be split into characters; a shell line is not what we run.
        raise ConfigError("the command must be a list of arguments, not one string", key="argv")
    return tuple(argv)


@attrs.define(kw_only=True, eq=False, repr=False)
class CommandHandler:
    """Runs ``argv`` once per event, the canonical event body on its stdin."""

    _argv: tuple[str, ...] = attrs.field(alias="argv", converter=_argv_tuple)
    _timeout: float = attrs.field(default=60.0, alias="timeout")
    _env: Mapping[str, str] | None = attrs.field(default=None, alias="env")
    _cwd: str | None = attrs.field(default=None, alias="cwd")

    def __attrs_post_init__(self) -> None:
        if not self._argv or not self._argv[0]:
            raise ConfigError("the command is empty", key="argv")
        if not all(isinstance(a, str) and "\0" not in a for a in self._argv):
            raise ConfigError("the command must be a list of strings without NUL", key="argv")
        if self._env and not all(
            isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
            for k, v in self._env.items()
        ):
            raise ConfigError("env must map names to strings (no '=' in names, no NUL)", key="env")
        if not self._timeout > 0:
            raise ConfigError("timeout must be a positive number of seconds", key="timeout")

    def __repr__(self) -> str:
        # Arguments and environment may carry tokens; the program name is enough to recognise it.
        return f"CommandHandler(program={self._argv[0]!r}, timeout={self._timeout!r})"

    @property
    def _name(self) -> str:
        return f"command {self._argv[0]}"

    def _child_env(self, event: Mapping[str, Any]) -> dict[str, str]:
        env = dict(os.environ)
        # The child must not speak to systemd in our name (READY=, WATCHDOG=...).
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        if self._env:
            env.update(self._env)
        env["CVAT_WATCH_EVENT_TYPE"] = str(event.get("type", ""))
        env["CVAT_WATCH_EVENT_ID"] = str(event.get("id", ""))
        return env

    def _spawn(self, event: Mapping[str, Any]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._child_env(event),
                cwd=self._cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            if self._cwd is not None and exc.filename == self._cwd:
                message = f"{self._name}: working directory {self._cwd} does not exist"
            else:
                message = f"{self._name}: program not found"
            raise DeliveryError(message, retry=True) from None
        except PermissionError:
            raise DeliveryError(f"{self._name}: program is not executable", retry=True) from None
        except OSError as exc:
            raise DeliveryError(f"{self._name}: could not start: {exc.strerror or exc}", retry=True) from None

    def deliver(self, event: Mapping[str, Any]) -> None:
        """Run the command once; exit 0 returns, anything else raises ``DeliveryError``."""
        proc = self._spawn(event)
        try:
            # stdout is read only so that a chatty program never blocks on a full pipe.
            _stdout, stderr = proc.communicate(event_body(event), timeout=self._timeout)
        except subprocess.TimeoutExpired:
            _kill_session(proc)
            try:
                _stdout, stderr = proc.communicate(timeout=_REAP_SECONDS)
            except subprocess.TimeoutExpired:
                stderr = b""
                for pipe in (proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
                proc.wait()
            how = f"was killed after the {self._timeout:g} s timeout"
        else:
            if proc.returncode == 0:
                return
            how = _exit_reason(proc.returncode)
        tail = _stderr_tail(stderr)
        raise DeliveryError(f"{self._name} {how}" + (f"; stderr: {tail}" if tail else ""), retry=True)

    def close(self) -> None:
        """Nothing to release: each delivery's process is gone when ``deliver`` returns."""
