"""The summary readers: the meta and per-task image and shape counts, without building shapes.

:class:`SummaryReader` keeps every task's full meta; :class:`BriefReader`, the daemon's, reads
and checks the same but keeps only a :class:`~cvat_watch.model.TaskBrief` per task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from cvat_watch.cvatxml._base import ReaderBase
from cvat_watch.cvatxml._vocab import IMAGE_SHAPE_KINDS, MAX_DEPTH, TRACK_SHAPE_KINDS
from cvat_watch.model import ExportBrief, ExportSummary, Task, TaskBrief, base_url_of


class SummaryReader(ReaderBase):
    """Counts images and shapes per task without building them."""

    def __init__(self, path: Path | None) -> None:
        super().__init__(path)
        self.depth = 1  # inside <annotations>
        self.counting: frozenset[str] = frozenset()
        self.key: str | None = None
        self.count = 0
        self.image_counts: dict[str | None, int] = {}
        self.shape_counts: dict[str | None, int] = {}

    def body_handlers(self) -> None:
        self.install(self.start, self.end, None)

    def start(self, name: str, attrs: list[str]) -> None:
        depth = self.depth = self.depth + 1
        if depth > 3 and depth >= MAX_DEPTH:
            raise self.error(f"elements nested more than {MAX_DEPTH} levels deep")
        if depth == 3:
            if name in self.counting:
                self.count += 1
        elif depth == 2:
            if name == "image" or name == "track":
                task_id = None
                for index in range(0, len(attrs), 2):
                    if attrs[index] == "task_id":
                        task_id = attrs[index + 1]
                        break
                # Without task_id: the only task's (default_task_id is that or None).
                key = task_id if task_id is not None else self.single_task_id
                if name == "image":
                    self.image_counts[key] = self.image_counts.get(key, 0) + 1
                    self.counting = IMAGE_SHAPE_KINDS
                else:
                    self.counting = TRACK_SHAPE_KINDS
                self.key = key
                self.count = 0
            else:
                self.depth = 1  # the capture consumes this element's end
                self.root_child(name, attrs)

    def end(self, name: str) -> None:
        depth = self.depth
        self.depth = depth - 1
        if depth == 2:
            key = self.key
            self.shape_counts[key] = self.shape_counts.get(key, 0) + self.count
            self.counting = frozenset()
        elif depth == 1:
            self.finished = True

    def counts(self) -> tuple[dict[str | None, int], dict[str | None, int]]:
        """The image and shape counts per task, once the whole document was read."""
        if not self.finished:
            raise self.error("the XML ended before </annotations>")
        return self.image_counts, self.shape_counts

    def result(self) -> ExportSummary:
        image_counts, shape_counts = self.counts()
        return ExportSummary(
            kind=self.kind or "task",
            project=self.project,
            tasks=tuple(self.tasks),
            image_counts=image_counts,
            shape_counts=shape_counts,
        )


class BriefReader(SummaryReader):
    """A summary whose tasks are TaskBriefs: the same checks and errors, a fraction of the memory."""

    def __init__(self, path: Path | None) -> None:
        super().__init__(path)
        # Subsets and base URLs repeat in every task: one str object for each distinct value.
        self.shared: dict[str | None, str | None] = {}

    def keep_task(self, task: Task) -> Any:
        share = self.shared.setdefault
        base_url = base_url_of((task,))
        return TaskBrief(task.id, task.name, share(task.subset, task.subset), share(base_url, base_url))

    def result(self) -> ExportBrief:  # type: ignore[override]
        image_counts, shape_counts = self.counts()
        project = self.project
        return ExportBrief(
            kind=self.kind or "task",
            project_id=project.id if project is not None else None,
            project_name=project.name if project is not None else None,
            tasks=tuple(cast(list[TaskBrief], self.tasks)),  # keep_task made each one a brief
            image_counts=image_counts,
            shape_counts=shape_counts,
        )
