"""The state folder's lock: one process at a time delivers from one state."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path
from typing import Self

import attrs

from cvat_watch.daemon.store._schema import _describe, _make_private_dirs
from cvat_watch.errors import StateError, StateLockedError

log = logging.getLogger("cvat_watch.daemon.store")  # the package's name: log lines keep the name they had


#: The lock file in the state folder; its content says who holds it.
LOCK_FILE_NAME = "cvat-watch.lock"


@attrs.define(eq=False)
class StateLock:
    """An exclusive ``flock`` on the state folder's lock file, held while a process delivers or commits.

    Two processes on one state would both deliver every event (``run`` twice, ``once`` from
    cron beside the service). The kernel drops the lock when the process dies, however it dies,
    so a stale lock file never blocks a restart. The descriptor is close-on-exec: a command
    handler's child, or a grandchild it leaves running, must not inherit the lock.
    """

    path: Path
    _descriptor: int | None = attrs.field(alias="descriptor", repr=False)

    @classmethod
    def acquire(cls, folder: Path, *, command: str) -> StateLock:
        """Take the lock of ``folder`` at once, or StateLockedError naming the process holding it."""
        path = folder / LOCK_FILE_NAME
        try:
            _make_private_dirs(folder)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open the lock file: {_describe(exc)}", path=path) from exc
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError):
                holder = os.pread(descriptor, 4096, 0).decode("utf-8", "replace").strip()
            os.close(descriptor)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateError(f"cannot lock the state folder: {_describe(exc)}", path=path) from exc
            raise StateLockedError(
                f"the state folder is in use by {holder or 'another process'}; one process at a time"
                " may deliver from one state (stop it first, or give this configuration its own"
                " state_dir)",
                path=path,
                holder=holder,
            ) from None
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"pid {os.getpid()}: {command}\n".encode(), 0)
        except OSError:
            log.debug("cannot write the lock file %s", path, exc_info=True)  # the lock still holds
        return cls(path=path, descriptor=descriptor)

    def release(self) -> None:
        """Give the lock up; idempotent. The file stays: removing it would race the next holder."""
        if self._descriptor is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._descriptor, 0)
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
