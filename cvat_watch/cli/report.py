"""Per-task status rows: what ``cvat-watch status`` shows, as values and as a text table."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from cvat_watch.model import Annotations, CompletionRule, is_task_complete

__all__ = ["TaskReport", "format_table", "task_reports"]


@attrs.frozen
class TaskReport:
    """One task's line of the status report."""

    id: str
    name: str | None
    subset: str | None
    images: int
    jobs_completed: int
    jobs_total: int
    completed: bool
    link: str | None


def task_reports(
    annotations: Annotations,
    *,
    base_url: str | None = None,
    rule: CompletionRule = "completed",
) -> list[TaskReport]:
    """One report per task of the export that has an id, in file order."""
    summary = annotations.summary()
    jobs_by_task = annotations.jobs_by_task()
    reports = []
    for task in annotations.tasks:
        if task.id is None:
            continue
        jobs = jobs_by_task.get(task.id, [])
        reports.append(
            TaskReport(
                id=task.id,
                name=task.name,
                subset=task.subset,
                images=summary.image_counts.get(task.id, 0),
                jobs_completed=sum(job.is_done(rule) for job in jobs),
                jobs_total=len(jobs),
                completed=is_task_complete(jobs, rule),
                link=annotations.task_url(task.id, base_url),
            )
        )
    return reports


def format_table(reports: Sequence[TaskReport]) -> str:
    """A plain-text table with aligned columns, one row per task."""
    header = ("ID", "NAME", "SUBSET", "IMAGES", "JOBS DONE", "COMPLETED", "LINK")
    rows = [header] + [
        (
            report.id,
            report.name or "",
            report.subset or "",
            str(report.images),
            f"{report.jobs_completed}/{report.jobs_total}",
            "yes" if report.completed else "no",
            report.link or "",
        )
        for report in reports
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    numeric = {3, 4}
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in numeric else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
