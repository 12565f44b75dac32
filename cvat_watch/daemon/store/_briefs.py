"""The export brief stored beside a watch's baseline, under the digest of the export it was read from.

Reading the brief of a 240 MB export (100,000 tasks) takes about 15 s, most of a start; the same
bytes always give the same brief. A restart whose export is unchanged reads the stored one (10 MB of
JSON, a fraction of a second) instead. The key names the reader too, so that another version of
cvat-watch never takes a brief an older reader made. Anything unexpected in a stored brief makes it
unusable (None): the export is parsed again, as without one.
"""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

from cvat_watch.model import ExportBrief, TaskBrief

#: Raise when what the reader makes of the same bytes changes within one version.
_FORMAT = 1
_KINDS = frozenset(("project", "task", "job"))
_TEXT_OR_NONE = frozenset((str, type(None)))


def _reader() -> str:
    try:
        version = metadata.version("cvat-watch")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"cvat-watch {version} brief {_FORMAT}"


_READER = _reader()


def brief_key(digest: str) -> str:
    """The key of the brief of an export whose content has SHA-256 ``digest``, for this reader."""
    return f"{digest} {_READER}"


def brief_text(brief: ExportBrief) -> str:
    """The brief as compact JSON; counts as pairs, since a count's task id can be None."""
    return json.dumps(
        {
            "kind": brief.kind,
            "project_id": brief.project_id,
            "project_name": brief.project_name,
            "tasks": [[task.id, task.name, task.subset, task.base_url] for task in brief.tasks],
            "image_counts": list(brief.image_counts.items()),
            "shape_counts": list(brief.shape_counts.items()),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def brief_of_text(text: str) -> ExportBrief | None:
    """The brief :func:`brief_text` wrote, or None for anything else."""
    try:
        data = json.loads(text)
        if type(data) is not dict or data.get("kind") not in _KINDS:
            return None
        project_id, project_name = data["project_id"], data["project_name"]
        if type(project_id) not in _TEXT_OR_NONE or type(project_name) not in _TEXT_OR_NONE:
            return None
        # Subsets and base URLs repeat in every task: one str object for each distinct value.
        shared: dict[Any, Any] = {}
        share = shared.setdefault
        tasks = []
        for task in data["tasks"]:
            if type(task) is not list or len(task) != 4 or not set(map(type, task)) <= _TEXT_OR_NONE:
                return None
            task_id, name, subset, base_url = task
            tasks.append(TaskBrief(task_id, name, share(subset, subset), share(base_url, base_url)))
        counts = []
        for pairs in (data["image_counts"], data["shape_counts"]):
            found: dict[str | None, int] = {}
            for key, count in pairs:
                if type(key) not in _TEXT_OR_NONE or type(count) is not int:
                    return None
                found[key] = count
            counts.append(found)
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    return ExportBrief(
        kind=data["kind"],
        project_id=project_id,
        project_name=project_name,
        tasks=tuple(tasks),
        image_counts=counts[0],
        shape_counts=counts[1],
    )
