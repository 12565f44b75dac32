"""The command handler: run a program with the event's JSON on stdin.

No shell is involved: ``argv`` is executed as given. The child inherits our environment,
plus ``env`` on top, plus ``CVAT_WATCH_EVENT_TYPE`` and ``CVAT_WATCH_EVENT_ID``. It runs in
a session of its own so that a timeout kills whatever it started, not just itself.
Exit status 0 is delivered; anything else is worth another attempt later. The command is judged
by its own exit status, not by when its output pipes close: a background process it leaves
behind keeps running, and its output after the command's exit is not read.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import attrs

from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.handlers.base import event_body

__all__ = ["CommandHandler"]

_STDERR_TAIL = 200
#: How much of the child's stderr is kept for the error message (its end matters).
_STDERR_KEEP = 4096
#: After the command exited, how long its pipes may stay open: a background process it started
#: (``cmd &``, a daemon that forgot to close stdout) can hold them for ever.
_DRAIN_SECONDS = 0.5
#: How often the child's exit is looked for where no pidfd tells it.
_POLL_SECONDS = 0.05
#: After a kill, how long to wait for the command to be reaped.
_REAP_SECONDS = 2.0
#: The most written to the child's stdin at once (a pipe holds 64 KiB by default).
_PIPE_CHUNK = 65536


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


def _communicate(proc: subprocess.Popen[bytes], body: bytes, timeout: float) -> tuple[int | None, bytes]:
    """Feed ``body`` to the child's stdin and drain its stdout and stderr until it exits.

    Returns its exit status (None when it was still running after ``timeout`` seconds) and the
    last :data:`_STDERR_KEEP` bytes of its stderr. After the exit, the pipes are drained for at most
    :data:`_DRAIN_SECONDS` more, then closed on our side, whoever else holds them. One thread, one
    selector: nothing is left running when this returns.
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    stderr = bytearray()
    pending = memoryview(body)
    # The child's exit wakes the selector too, where the kernel can say so (pidfd, Linux 5.3);
    # elsewhere it is noticed by polling, a few times a second.
    exit_fd = _pidfd(proc.pid)
    exited_at: float | None = None
    selector = selectors.DefaultSelector()
    try:
        selector.register(proc.stdout, selectors.EVENT_READ, "out")
        selector.register(proc.stderr, selectors.EVENT_READ, "err")
        if pending:
            os.set_blocking(proc.stdin.fileno(), False)
            selector.register(proc.stdin, selectors.EVENT_WRITE, "in")
        else:
            proc.stdin.close()
        if exit_fd is not None:
            selector.register(exit_fd, selectors.EVENT_READ, "exit")
        while True:
            now = time.monotonic()
            if exited_at is None and proc.poll() is not None:
                exited_at = now
                if exit_fd is not None:
                    selector.unregister(exit_fd)
            pipes = [key for key in selector.get_map().values() if key.data != "exit"]
            if exited_at is not None and not pipes:
                break
            limit = deadline if exited_at is None else exited_at + _DRAIN_SECONDS
            if now >= limit:
                break
            wait = limit - now
            if exited_at is None and exit_fd is None:
                wait = min(wait, _POLL_SECONDS)
            for key, _mask in selector.select(wait):
                if key.data == "in":
                    pending = _feed(proc.stdin, pending, selector)
                elif key.data in ("out", "err"):
                    data = os.read(key.fd, 65536)
                    if not data:
                        selector.unregister(key.fileobj)
                    elif key.data == "err":
                        stderr += data
                        del stderr[:-_STDERR_KEEP]
    finally:
        selector.close()
        if exit_fd is not None:
            os.close(exit_fd)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass
    return proc.poll(), bytes(stderr)


def _feed(stdin: IO[bytes], pending: memoryview, selector: selectors.BaseSelector) -> memoryview:
    """Write what the pipe takes now; close stdin once all is written or the child stopped reading."""
    try:
        written = os.write(stdin.fileno(), pending[:_PIPE_CHUNK])
    except BlockingIOError:
        return pending
    except (BrokenPipeError, ConnectionResetError):
        written = len(pending)  # the child does not want the rest: that is its business
    pending = pending[written:]
    if not pending:
        selector.unregister(stdin)
        stdin.close()
    return pending


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # an older kernel, or the child is already reaped
        return None


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
        """Run the command once; exit 0 returns, anything else raises ``DeliveryError``.

        The command is judged by its own exit status: a background process it started may hold
        its stdout or stderr open long after it exited 0, and waiting for those pipes to close
        would count a delivered event as failed (and run it again). Once the command has exited,
        its pipes get :data:`_DRAIN_SECONDS` to close; then they are closed on our side and
        whatever still holds them is left alone.
        """
        proc = self._spawn(event)
        returncode, stderr = _communicate(proc, event_body(event), self._timeout)
        if returncode is None:
            _kill_session(proc)
            try:
                proc.wait(timeout=_REAP_SECONDS)
            except subprocess.TimeoutExpired:  # unkillable (uninterruptible sleep): not ours to wait for
                pass
            how = f"was killed after the {self._timeout:g} s timeout"
        elif returncode == 0:
            return
        else:
            how = _exit_reason(returncode)
        tail = _stderr_tail(stderr)
        raise DeliveryError(f"{self._name} {how}" + (f"; stderr: {tail}" if tail else ""), retry=True)

    def close(self) -> None:
        """Nothing to release: each delivery's process is gone when ``deliver`` returns."""
