"""Per-task status rows: what ``cvat-watch status`` shows, as values and as a text table."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import attrs

from cvat_watch._escape import printable
from cvat_watch.model import Annotations, CompletionRule, is_task_complete

__all__ = ["TaskReport", "format_table", "task_reports", "unreported_tasks"]


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
    """One report per task of the export whose id is known, in file order (a job export: its task,
    when the job-status records name the job; :func:`unreported_tasks` says why others are left out)."""
    summary = annotations.summary()
    jobs_by_task = annotations.jobs_by_task()
    reports = []
    for task in annotations.tasks:
        task_id = annotations.task_id_of(task)
        if task_id is None:
            continue
        jobs = jobs_by_task.get(task_id, [])
        name = task.name
        if name is None and annotations.kind == "job":  # <job> has no name; the records may
            name = next((job.task_name for job in jobs if job.task_name), None)
        reports.append(
            TaskReport(
                id=task_id,
                name=name,
                subset=task.subset,
                # a job export's counts are under None: the file names no task
                images=summary.image_counts.get(task.id if annotations.kind != "job" else None, 0),
                jobs_completed=sum(job.is_done(rule) for job in jobs),
                jobs_total=len(jobs),
                completed=is_task_complete(jobs, rule),
                link=annotations.task_url(task_id, base_url),
            )
        )
    return reports


def unreported_tasks(annotations: Annotations) -> list[str]:
    """Why each task :func:`task_reports` leaves out is left out: what the export is missing."""
    notes = []
    for place, task in enumerate(annotations.tasks, start=1):
        if annotations.task_id_of(task) is not None:
            continue
        if annotations.kind == "job":
            if annotations.job_id is None:
                notes.append("a job export whose <job> has no <id>: its task cannot be found")
            elif annotations.job_status:
                notes.append(
                    f"a job export of job {annotations.job_id}, whose task is unknown: "
                    f"no record of the job-status file names job {annotations.job_id}"
                )
            else:
                notes.append(
                    f"a job export of job {annotations.job_id}, whose task is unknown: "
                    f"pass --jobs with a job-status file that lists job {annotations.job_id}"
                )
        else:
            label = f"task {task.name!r}" if task.name else f"task #{place} of <meta>"
            notes.append(f"{label} has no <id> in the export: its jobs cannot be matched with the job status")
    if not annotations.tasks:
        notes.append("the export's <meta> describes no task")
    return notes


def format_table(reports: Sequence[TaskReport]) -> str:
    """A plain-text table with aligned columns, one row per task."""
    header = ("ID", "NAME", "SUBSET", "IMAGES", "JOBS DONE", "COMPLETED", "LINK")
    table: list[tuple[str, ...]] = [header]
    table += [
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
    # Names come from the export: a newline in one would forge a row, a bidi override reorder one.
    return "\n".join(align([tuple(map(printable, row)) for row in table], right={3, 4}))


def align(table: Sequence[Sequence[str]], *, right: Collection[int]) -> list[str]:
    """The rows as lines of columns two spaces apart; the columns in ``right`` right-aligned."""
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    return [
        "  ".join(
            cell.rjust(width) if column in right else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]
