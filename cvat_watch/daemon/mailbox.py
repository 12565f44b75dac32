"""Requests from admin commands to the running daemon, as files in its state folder.

Only the process holding the state's lock writes the state (``store.StateLock``), yet an
operator's ``cvat-watch redeliver`` should go out at once while the service runs. So the
command, finding the lock held by ``run``, leaves a request file in ``<state>/requests/`` and
waits for the answer file; the daemon looks into that folder on every turn of its main loop
(one ``scandir`` of a nearly always empty folder), carries the request out itself and answers.
The folder inherits the state folder's privacy (0700): whoever may write it may write the state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["REQUESTS_DIR", "Mailbox"]

log = logging.getLogger(__name__)

REQUESTS_DIR = "requests"
#: Answers nobody collected (the command gave up waiting) are removed after this long.
_STALE_ANSWER = 3600.0


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(data, file)
    os.replace(temporary, path)


class Mailbox:
    """The ``requests`` folder of one state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / REQUESTS_DIR

    # -- the command's side -------------------------------------------------------------------

    def ask(self, request: dict[str, Any], *, timeout: float) -> dict[str, Any] | None:
        """Leave ``request`` for the daemon and wait up to ``timeout`` for its answer (None: no answer yet).

        Without an answer in time the request stays: the daemon carries it out when its current
        work (a long reload) ends.
        """
        self.folder.mkdir(mode=0o700, exist_ok=True)
        name = f"{time.time_ns()}-{secrets.token_hex(4)}"
        _write_atomically(self.folder / f"{name}.request", request)
        answer = self.folder / f"{name}.answer"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data: dict[str, Any] = json.loads(answer.read_text(encoding="utf-8"))
            except FileNotFoundError:
                time.sleep(0.05)
                continue
            answer.unlink(missing_ok=True)
            return data
        return None

    # -- the daemon's side --------------------------------------------------------------------

    def serve(self, handle: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
        """Carry out every waiting request with ``handle`` and leave its answer; how many there were."""
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return 0
        served = 0
        now = time.time()
        for entry in sorted(entries, key=lambda entry: entry.name):
            path = Path(entry.path)
            if entry.name.endswith(".answer"):
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > _STALE_ANSWER:
                        path.unlink()
                continue
            if not entry.name.endswith(".request"):
                continue
            try:
                request = json.loads(path.read_text(encoding="utf-8"))
                answer = (
                    handle(request) if isinstance(request, dict) else {"ok": False, "error": "bad request"}
                )
            except (OSError, ValueError) as error:
                answer = {"ok": False, "error": f"unreadable request: {error}"}
            with contextlib.suppress(OSError):
                _write_atomically(path.with_suffix(".answer"), answer)
                path.unlink()
            served += 1
        return served
