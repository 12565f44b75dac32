"""Event ids as the documentation defines them, written out here rather than imported.

Tests and benchmarks that check the ids the daemon sends compare them with this function, not
with :func:`cvat_watch.daemon.events.event_id`: an expected value computed by the code under test
would agree with any change to it. The formula: ``evt_`` and the first 32 hexadecimal digits of
the SHA-256 of the UTF-8 JSON array ``[epoch, watch, task id, transition, generation, job id]``
(``json.dumps`` defaults, non-ASCII kept), where the transition is the event type for task events
and ``job:<job id>:<new state>`` for job events, the job id is null for task events, and the epoch
(the state database's own, once it has one) comes first.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["documented_event_id"]


def documented_event_id(
    watch: str,
    task_id: str,
    transition: str,
    generation: int,
    job_id: str | None = None,
    *,
    epoch: str | None = None,
) -> str:
    """The id of the event about ``task_id`` of ``watch``, by the documented formula.

    ``epoch`` None is the formula without an epoch (state databases from before it had one).
    """
    parts: list[object] = [watch, task_id, transition, generation, job_id]
    if epoch is not None:
        parts.insert(0, epoch)
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()
    return "evt_" + digest[:32]
