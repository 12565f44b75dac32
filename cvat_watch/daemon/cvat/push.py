"""CVAT's own webhooks as a push path: ``POST /cvat/webhook/<watch name>`` on the daemon's listener.

A delivery is accepted only when its ``X-Signature-256`` is ``sha256=`` + the hex HMAC-SHA256 of the
exact body bytes under the watch's secret (CVAT's scheme); anything else gets 401 and changes
nothing, and an unknown watch name is answered the same way so that names cannot be probed.
CVAT's ping is answered 200. A job or task event only wakes the watch's source for an immediate
poll: the payload is never trusted, the poll is the truth (and CVAT v2.23.1 never retries a
delivery, so the regular poll stays on as the safety net).
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable

import attrs

from cvat_watch.converter import Secret
from cvat_watch.daemon.http import HttpListener, Request, Response
from cvat_watch.handlers.webhook import cvat_signature

__all__ = ["WEBHOOK_PREFIX", "CvatWebhooks"]

log = logging.getLogger(__name__)

WEBHOOK_PREFIX = "/cvat/webhook/"
_POLL_EVENTS = ("create:job", "update:job", "delete:job", "create:task", "update:task", "delete:task")


@attrs.define
class CvatWebhooks:
    """The webhook route: watch name → (secret, what to call to poll now). Swappable on reload."""

    _targets: dict[str, tuple[Secret, Callable[[], None]]] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    #: Deliveries accepted and refused since start (for the status page and tests).
    accepted: int = 0
    refused: int = 0

    def install(self, listener: HttpListener) -> None:
        listener.add_prefix("POST", WEBHOOK_PREFIX, self.handle)

    def set_targets(self, targets: dict[str, tuple[Secret, Callable[[], None]]]) -> None:
        with self._lock:
            self._targets = dict(targets)

    def handle(self, request: Request) -> Response:
        name = request.tail
        with self._lock:
            target = self._targets.get(name)
        signature = request.header("X-Signature-256") or ""
        if target is None or not hmac.compare_digest(
            signature.encode(), cvat_signature(target[0].reveal(), request.body).encode()
        ):
            with self._lock:
                self.refused += 1
                first = self.refused == 1 or self.refused % 1000 == 0
            # Logged without the body or header (neither is trustworthy), and not for every request:
            # a flood of forged requests must not flood the journal.
            log.log(
                logging.WARNING if first else logging.DEBUG,
                "refused %d CVAT webhook(s) so far: unknown watch or bad signature (last for %r)",
                self.refused,
                name[:64],
            )
            return Response(401, b'{"error": "bad signature"}')
        poll_now = target[1]
        try:
            payload = json.loads(request.body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return Response(400, b'{"error": "body is not JSON"}')
        event = payload.get("event") if isinstance(payload, dict) else None
        with self._lock:
            self.accepted += 1
        if event == "ping":
            log.info("watch %s: CVAT webhook ping", name)
            return Response(200, b'{"received": true}')
        if event in _POLL_EVENTS:
            log.debug("watch %s: CVAT webhook %s: polling now", name, event)
            poll_now()
        return Response(200, b'{"received": true}')
