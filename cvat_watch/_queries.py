"""The questions asked of an export: tasks, jobs, completion, images and CVAT links.

:class:`ExportQueries` holds the methods of :class:`cvat_watch.model.Annotations` (which inherits
them), apart from the values of model.py; the functions here are re-exported by the model, their
public home. Nothing here imports the model at run time: the methods work on the attributes of the
Annotations they are called on.

A job export (``kind == "job"``) holds one job: its ``<job>`` meta is read into the one Task of
``tasks``, whose ``id`` is therefore the JOB's id (that is what CVAT writes there), and no task id
appears anywhere in the file. The task is found through the job-status records (job → task);
without a record naming the job, questions that need the task raise QueryError.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from cvat_watch.errors import QueryError

if typing.TYPE_CHECKING:
    from cvat_watch.model import CompletionRule, ExportKind, ImageAnnotation, JobStatus, Task, TaskBrief

__all__ = [
    "ExportQueries",
    "base_url_of",
    "is_task_complete",
    "job_id_from_url",
    "job_url",
    "project_url",
    "task_of_job",
    "task_url",
]


# -- CVAT's link rules ---------------------------------------------------------------------------

_JOB_ID_PATTERNS = (
    re.compile(r"/api/jobs/(\d+)"),  # CVAT 2.x
    re.compile(r"[?&]id=(\d+)"),  # CVAT 1.x ``/?id=N``
    re.compile(r"/jobs/(\d+)"),  # UI links ``/tasks/T/jobs/N``
)


def job_id_from_url(url: str | None) -> str | None:
    """The job id in a segment URL (``…/api/jobs/12`` or the old ``…/?id=12``), or None."""
    if not url:
        return None
    for pattern in _JOB_ID_PATTERNS:
        match = pattern.search(url)
        if match:
            return match.group(1)
    return None


def base_url_of(tasks: Iterable[Task]) -> str | None:
    """Scheme and host of the first job URL among ``tasks`` (``http://localhost:8080``), or None."""
    for task in tasks:
        for segment in task.segments:
            if segment.url:
                parts = urlsplit(segment.url)
                if parts.scheme and parts.netloc:
                    return f"{parts.scheme}://{parts.netloc}"
    return None


def task_url(base_url: str | None, task_id: str | int) -> str | None:
    """``{base}/tasks/{id}``: where CVAT opens the task; None without a base URL."""
    return f"{base_url.rstrip('/')}/tasks/{task_id}" if base_url else None


def project_url(base_url: str | None, project_id: str | int) -> str | None:
    """``{base}/projects/{id}``: where CVAT opens the project; None without a base URL."""
    return f"{base_url.rstrip('/')}/projects/{project_id}" if base_url else None


def job_url(base_url: str | None, task_id: str | int, job_id: str | int) -> str | None:
    """``{base}/tasks/{task}/jobs/{job}``; None without a base URL."""
    return f"{base_url.rstrip('/')}/tasks/{task_id}/jobs/{job_id}" if base_url else None


# -- the completion rule and a job's task ----------------------------------------------------------


def is_task_complete(jobs: Sequence[JobStatus], rule: CompletionRule = "completed") -> bool:
    """The one rule for a task: at least one counting job, and every one done under ``rule``.

    ``jobs`` are the task's counting jobs (ground-truth and consensus jobs already left out).
    The library's queries, the daemon's snapshot and the CLI's report all ask this function.
    """
    return bool(jobs) and all(job.is_done(rule) for job in jobs)


def _job_id_of(kind: str, tasks: Sequence[Task | TaskBrief]) -> str | None:
    if kind != "job" or not tasks:
        return None
    return tasks[0].id


def _single_task_id(kind: str | None, tasks: Sequence[Task]) -> str | None:
    """The id of the export's only task, which images and tracks without ``task_id`` belong to.

    None with several tasks, and for a job export: its ``<job><id>`` is the job's id, and its
    images belong to a task the file never names.
    """
    return tasks[0].id if len(tasks) == 1 and kind != "job" else None


def task_of_job(job_id: str | None, jobs: Iterable[JobStatus]) -> str | None:
    """The task of job ``job_id`` as the job-status records say (the last record naming it wins)."""
    task_id = None
    if job_id is not None:
        for job in jobs:
            if job.job_id == job_id:
                task_id = job.task_id
    return task_id


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class ExportQueries:
    """The questions of :class:`~cvat_watch.model.Annotations` (its fields are declared below for
    the type checker only: the class adds no slot and no state)."""

    __slots__ = ()

    if typing.TYPE_CHECKING:
        tasks: tuple[Task, ...]
        images: tuple[ImageAnnotation, ...]
        job_status: tuple[JobStatus, ...]
        kind: ExportKind
        path: Path | None

    # -- tasks and jobs -----------------------------------------------------------------------

    @property
    def job_id(self) -> str | None:
        """The job a job export holds (``<job><id>``); None for task and project exports."""
        return _job_id_of(self.kind, self.tasks)

    def task_id_of(self, task: Task) -> str | None:
        """The CVAT id of ``task`` (one of :attr:`tasks`): its own id, or, in a job export, the id of
        the job's task as the job-status records give it; None when that is unknown."""
        if self.kind == "job":
            return task_of_job(self.job_id, self.job_status)
        return task.id

    def get_task(self, task_id: str | int) -> Task:
        """The task with this id (in a job export: the job's meta, when ``task_id`` is its task)."""
        wanted = str(task_id)
        for task in self.tasks:
            if self.task_id_of(task) == wanted:
                return task
        raise QueryError(
            f"no task with id {wanted!r} in {self._describe()}{self._job_hint()}", path=self.path
        )

    def jobs_of_task(self, task_id: str | int) -> list[JobStatus]:
        """The counting jobs of a task (ground-truth and consensus jobs left out), in file order."""
        wanted = str(task_id)
        return [job for job in self.job_status if job.task_id == wanted and job.counts]

    def jobs_by_task(self) -> dict[str, list[JobStatus]]:
        """Task id → its counting jobs in file order, in one pass (for questions about every task)."""
        grouped: dict[str, list[JobStatus]] = {}
        for job in self.job_status:
            if job.counts:
                grouped.setdefault(job.task_id, []).append(job)
        return grouped

    def get_task_status(self, task_id: str | int) -> dict[str, str]:
        """Job id → state for the task's counting jobs, e.g. ``{"5678": "completed", "5679": "new"}``."""
        return {job.job_id: job.state for job in self.jobs_of_task(task_id)}

    def is_task_completed(self, task_id: str | int, *, rule: CompletionRule = "completed") -> bool:
        """At least one counting job, and every one completed (and, for ``accepted``, at acceptance)."""
        return is_task_complete(self.jobs_of_task(task_id), rule)

    def get_completed_task_ids(self, *, rule: CompletionRule = "completed") -> list[str]:
        """The ids of the export's tasks that are completed, in file order (a job export: its task)."""
        return [task_id for _, task_id in self._completed(rule)]

    def get_completed_tasks(self, *, rule: CompletionRule = "completed") -> list[Task]:
        return [task for task, _ in self._completed(rule)]

    def _completed(self, rule: CompletionRule) -> list[tuple[Task, str]]:
        done = {task_id for task_id, jobs in self.jobs_by_task().items() if is_task_complete(jobs, rule)}
        pairs = []
        for task in self.tasks:
            task_id = self.task_id_of(task)
            if task_id is not None and task_id in done:
                pairs.append((task, task_id))
        return pairs

    # -- images -------------------------------------------------------------------------------

    def task_id_of_image(self, image: ImageAnnotation) -> str | None:
        """The CVAT id of the image's task: its ``task_id``, the export's only task's id, or (job
        export) the job's task from the job-status records; None when unknown."""
        if image.task_id is not None and self.kind != "job":
            return image.task_id
        if self.kind == "job":
            return task_of_job(self.job_id, self.job_status)
        return _single_task_id(self.kind, self.tasks)

    def images_of_task(self, task_id: str | int) -> list[ImageAnnotation]:
        wanted = str(task_id)
        if self.kind == "job":
            return list(self.images) if task_of_job(self.job_id, self.job_status) == wanted else []
        return [image for image in self.images if image.task_id == wanted]

    def get_images_from_completed_tasks(self, *, rule: CompletionRule = "completed") -> list[ImageAnnotation]:
        """The images whose task is completed, in file order."""
        done = set(self.get_completed_task_ids(rule=rule))
        if self.kind == "job":
            return list(self.images) if done else []
        return [image for image in self.images if image.task_id in done]

    def get_image(
        self,
        image_name: str | None = None,
        *,
        task: str | int | None = None,
        image_id: str | int | None = None,
    ) -> ImageAnnotation:
        """The image with this name (or ``image_id``), among the images of ``task`` if given.

        QueryError when there is none, and when several images match (a project export often
        repeats names such as ``frame_000001.png`` in every task): the message names the
        candidate tasks, so the caller can pass ``task=``.
        """
        if (image_name is None) == (image_id is None):
            raise TypeError("get_image() takes an image name or image_id=, one of them")
        wanted_task = None if task is None else str(task)
        if image_name is not None:
            what = f"image named {image_name!r}"
            found = [image for image in self.images if image.name == image_name]
        else:
            what = f"image with id {str(image_id)!r}"
            found = [image for image in self.images if image.id == str(image_id)]
        if wanted_task is not None:
            found = [image for image in found if self.task_id_of_image(image) == wanted_task]
            what += f" in task {wanted_task}"
        if not found:
            raise QueryError(f"no {what} in {self._describe()}", path=self.path)
        if len(found) > 1:
            places = sorted(
                {(self.task_id_of_image(image) or "?", image.subset or "") for image in found},
                key=lambda place: (_int_or_none(place[0]) or 0, place),
            )
            tasks = list(dict.fromkeys(task_id for task_id, _ in places))
            if len(tasks) > 1:
                raise QueryError(
                    f"{what} is ambiguous: it occurs in tasks {', '.join(tasks)} of {self._describe()}; "
                    "say which with task=",
                    path=self.path,
                )
            if len({image.id for image in found}) > 1 and image_id is None:
                ids = ", ".join(
                    sorted({image.id for image in found}, key=lambda i: (_int_or_none(i) or 0, i))
                )
                raise QueryError(
                    f"{what} is ambiguous: images {ids} of {self._describe()} have it; "
                    + "say which with image_id=",
                    path=self.path,
                )
            subsets = ", ".join(repr(subset) for _, subset in places)
            raise QueryError(
                f"{what} is ambiguous: it occurs in subsets {subsets} of {self._describe()}; "
                "pass the ImageAnnotation itself (image=)",
                path=self.path,
            )
        return found[0]

    def frame_of_image(self, image: ImageAnnotation) -> int:
        """The image's task-relative frame number: the numbering of segment start/stop, and of
        the ``frame`` of CVAT's links."""
        task = self._task_of_image(image)
        frame = self._frame_from_meta(image, task)
        if frame is not None:
            return frame
        # The meta cannot explain the id (old or hand-made export): use the image's rank among
        # the images of its task (and subset) ordered by id.
        siblings = sorted(
            {
                _int_or_none(other.id) or 0
                for other in self.images
                if other.task_id == image.task_id and other.subset == image.subset
            }
        )
        return siblings.index(_int_or_none(image.id) or 0)

    def create_cvat_link(
        self,
        image_name: str | None = None,
        base_url: str | None = None,
        *,
        task: str | int | None = None,
        image_id: str | int | None = None,
        image: ImageAnnotation | None = None,
    ) -> str:
        """``{base}/tasks/{task_id}/jobs/{job_id}?frame={frame}``: where CVAT opens this image.

        The image is named (``image_name``, with ``task=`` where the name occurs in several
        tasks), given by id (``image_id=``, with ``task=`` in a project export) or given itself
        (``image=``, one of :attr:`images`). ``base`` defaults to the scheme and host of the
        export's own job URLs. QueryError says what is missing when the export cannot answer.
        """
        if image is None:
            image = self.get_image(image_name, task=task, image_id=image_id)
        label = f"image {image.name!r}"
        meta = self._task_of_image(image)
        task_id = self.task_id_of_image(image)
        if task_id is None:
            raise QueryError(f"cannot link {label}: {self._unknown_task(meta)}", path=self.path)
        frame = self.frame_of_image(image)
        if self.kind == "job":
            job_id = self.job_id
        else:
            if not meta.segments:
                raise QueryError(
                    f"cannot link {label}: task {task_id} lists no jobs in {self._describe()} (its "
                    "<segments> is missing or empty; CVAT writes one <segment> with a <url> per job)",
                    path=self.path,
                )
            segment = meta.segment_for_frame(frame)
            if segment is None:
                raise QueryError(
                    f"no job of task {task_id} covers frame {frame} of {label} in {self._describe()}",
                    path=self.path,
                )
            job_id = segment.job_id
        base = self._base_url(base_url, label)
        return f"{base}/tasks/{task_id}/jobs/{job_id}?frame={frame}"

    def task_url(self, task_id: str | int, base_url: str | None = None) -> str | None:
        """``{base}/tasks/{task_id}``, or None where no base URL is known."""
        return task_url(base_url or self.default_base_url(), task_id)

    def job_url(self, task_id: str | int, job_id: str | int, base_url: str | None = None) -> str | None:
        return job_url(base_url or self.default_base_url(), task_id, job_id)

    def default_base_url(self) -> str | None:
        """Scheme and host of the export's job URLs (``http://localhost:8080``), if it has any."""
        return base_url_of(self.tasks)

    def _base_url(self, base_url: str | None, label: str) -> str:
        if base_url:
            return base_url.rstrip("/")
        base = self.default_base_url()
        if base is None:
            raise ValueError(f"cannot link {label}: {self._describe()} has no job URLs; pass base_url")
        return base

    def _unknown_task(self, meta: Task) -> str:
        """Why the task id of ``meta`` (one of :attr:`tasks`) is unknown."""
        if self.kind == "job":
            return f"{self._describe()} is a job export (job {self.job_id}) whose task is unknown: " + (
                f"the job-status records do not name job {self.job_id}"
                if self.job_status
                else f"load it with a job-status file that lists job {self.job_id}"
            )
        return f"its task has no <id> in {self._describe()}"

    def _job_hint(self) -> str:
        if self.kind == "job" and task_of_job(self.job_id, self.job_status) is None:
            return f" ({self._unknown_task(self.tasks[0])})"
        return ""

    def _task_of_image(self, image: ImageAnnotation) -> Task:
        """The meta (one of :attr:`tasks`) describing the image's task."""
        if image.task_id is not None and self.kind != "job":
            for task in self.tasks:
                if task.id == image.task_id:
                    return task
        if len(self.tasks) == 1:
            return self.tasks[0]
        if not self.tasks:
            problem = "describes no task (its <meta> has no <task>), so there is no job to link to"
        elif image.task_id is None:
            problem = f"describes {len(self.tasks)} tasks and the image has no task_id to say which is its"
        else:
            problem = f"does not describe task {image.task_id!r}, which the image names"
        raise QueryError(f"image {image.name!r}: {self._describe()} {problem}", path=self.path)

    def _frame_from_meta(self, image: ImageAnnotation, task: Task) -> int | None:
        image_id = _int_or_none(image.id)
        if image_id is None or task.start_frame is None or task.size is None:
            return None
        first = 0  # the task-relative frame that start_frame stands for
        offset: int | None = 0
        if self.kind == "project":
            offset = self._subset_offsets().get(task.id)
        elif self.kind == "job":
            # A job's start_frame is the absolute frame of its segment's start; its images' ids
            # are absolute frame numbers like a task's (not numbered from the job's start).
            if not task.segments:
                return None
            first = task.segments[0].start
        if offset is None:
            return None
        frame, remainder = divmod(image_id - offset - task.start_frame, task.step)
        if remainder or not 0 <= frame < task.size:
            return None
        return first + frame

    def _subset_offsets(self) -> dict[str | None, int | None]:
        # CVAT numbers a project export's frames per subset: tasks ordered by (subset, id), each
        # task's frames shifted by start_frame + step * size of the earlier tasks of its subset.
        # After a task whose meta lacks those numbers, the offsets of its subset are unknown (None).
        offsets: dict[str | None, int | None] = {}
        running: dict[str | None, int | None] = {}
        ordered = sorted(self.tasks, key=lambda t: (t.subset or "", _int_or_none(t.id) or 0))
        for task in ordered:
            offset = running.get(task.subset, 0)
            offsets[task.id] = offset
            if offset is None or task.start_frame is None or task.size is None:
                running[task.subset] = None
            else:
                running[task.subset] = offset + task.start_frame + task.step * task.size
        return offsets

    def _describe(self) -> str:
        return str(self.path) if self.path else "the export"
