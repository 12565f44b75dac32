"""Every error cvat-watch raises on purpose derives from one base class.

The tree::

    CvatWatchError
    ├── AnnotationsError   a CVAT XML export could not be read or written (path, line, column)
    ├── JobStatusError     a job-status file could not be read (path, where)
    ├── ConfigError        the configuration is invalid (path, key)
    ├── StateError         the state database could not be read or written (path)
    │   ├── StateLockedError   another process uses the state folder (holder)
    │   └── StateLostError     the state file was deleted or replaced while in use
    ├── QueryError         a question about an export its content cannot answer (also a LookupError)
    ├── DeliveryError      a handler failed to deliver an event (retry, retry_after)
    └── CvatServerError    a CVAT server refused or failed a request (server, status, retry, retry_after)
        └── CvatExportError   CVAT's export of the annotations failed or gave an unusable archive

Details travel as attributes so that callers can act on them; ``__str__`` formats them
into the one line the CLI prints. Messages never contain secrets.
"""

from __future__ import annotations

import os

__all__ = [
    "AnnotationsError",
    "ConfigError",
    "CvatExportError",
    "CvatServerError",
    "CvatWatchError",
    "DeliveryError",
    "JobStatusError",
    "QueryError",
    "StateError",
    "StateLockedError",
    "StateLostError",
]


def _where(path: str | os.PathLike[str] | None, *parts: str) -> str:
    """Join a path and location parts as ``path:line:column`` style prefix."""
    pieces = [os.fspath(path)] if path is not None else []
    pieces.extend(p for p in parts if p)
    return ":".join(pieces)


class CvatWatchError(Exception):
    """Base class of every error cvat-watch raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class AnnotationsError(CvatWatchError):
    """A CVAT XML export is malformed, not a CVAT export, or could not be written."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.column = column

    def __str__(self) -> str:
        where = _where(
            self.path,
            str(self.line) if self.line is not None else "",
            str(self.column) if self.column is not None and self.line is not None else "",
        )
        return f"{where}: {self.message}" if where else self.message


class JobStatusError(CvatWatchError):
    """A job-status file is malformed or holds a record we cannot use."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        where: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None
        self.where = where

    def __str__(self) -> str:
        prefix = _where(self.path, self.where or "")
        return f"{prefix}: {self.message}" if prefix else self.message


class ConfigError(CvatWatchError):
    """The configuration file is invalid: unknown key, wrong type, missing file..."""

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None
        self.key = key

    def __str__(self) -> str:
        prefix = _where(self.path, self.key or "")
        return f"{prefix}: {self.message}" if prefix else self.message


class QueryError(CvatWatchError, LookupError):
    """A question about an export that its content cannot answer, saying what is missing.

    For example the task of a job export without a job-status file naming its job, an image name
    that occurs in several tasks, or a task the export does not describe. A LookupError too, so
    code written against the plain LookupError these questions used to raise keeps working.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None


class StateError(CvatWatchError):
    """The state database could not be opened, read or written."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = os.fspath(path) if path is not None else None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class StateLockedError(StateError):
    """Another process holds the state folder's lock; ``holder`` is what it wrote there (pid, command)."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, holder: str = "") -> None:
        super().__init__(message, path=path)
        self.holder = holder


class StateLostError(StateError):
    """The state database was deleted or replaced under the running process."""


class DeliveryError(CvatWatchError):
    """A handler could not deliver an event.

    ``retry`` says whether another attempt may succeed (a 5xx, a timeout) or not (a 400);
    ``retry_after`` is the delay in seconds the receiver asked for, if it asked.
    ``gone`` marks a target that said it will never accept anything again (HTTP 410).
    """

    def __init__(
        self,
        message: str,
        *,
        retry: bool,
        retry_after: float | None = None,
        gone: bool = False,
    ) -> None:
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after
        self.gone = gone


class CvatServerError(CvatWatchError):
    """A CVAT server could not be reached, refused a request or answered something unusable.

    ``server`` is the server's URL (never with credentials), ``status`` the HTTP status when
    there was one. ``retry`` says whether the same request may succeed later without anyone
    changing anything (server down, 5xx, 429, timeouts); ``retry_after`` is the delay in
    seconds the server asked for. The message says what to fix when a person must act
    (401: the token; 403: the organization or the user's permissions).
    """

    def __init__(
        self,
        message: str,
        *,
        server: str,
        status: int | None = None,
        retry: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.server = server
        self.status = status
        self.retry = retry
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"CVAT server {self.server}: {self.message}"


class CvatExportError(CvatServerError):
    """CVAT's export failed on its side, timed out, or its archive holds no usable annotations.xml."""
