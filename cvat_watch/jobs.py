"""The job-status file beside an export → :class:`~cvat_watch.model.JobStatus` records.

Three shapes are accepted, told apart by content, never by the file name:

* the flat list next-cvat writes: ``[{"job_id": 34, "task_id": "12", "state": …, "assignee": …}]``;
* a page of CVAT's REST API (``GET /api/jobs``): ``{"count": N, "next": …, "results": [job, …]}``,
  or a list of such pages, whose results are concatenated;
* a plain list of CVAT job objects (``id`` instead of ``job_id``).

Ids become strings; an assignee becomes its username; every other value is kept as written,
including states and job types this version does not know: deciding what they mean is the
model's business. Any input that cannot be read raises :class:`~cvat_watch.errors.JobStatusError`
naming the file and the place in it, and nothing else.

The daemon re-reads this file on every change, so the loop over the records does as little as
it can: one cheap combined check per record, and the precise diagnosis only once a record fails it.
"""

from __future__ import annotations

import json
import logging
import operator
import os
import re
from collections.abc import Sequence
from pathlib import Path

import attrs

from cvat_watch.errors import JobStatusError
from cvat_watch.model import JobStatus

__all__ = ["job_records", "load_job_status", "parse_job_status"]

logger = logging.getLogger(__name__)

_PathArg = str | os.PathLike[str] | None

_SHAPE = "expected a list of jobs or a CVAT page with 'results'"
_EMPTY = "empty file: the exporter may be mid-write"


def load_job_status(path: str | os.PathLike[str]) -> tuple[JobStatus, ...]:
    """Read the job-status file at ``path``; JobStatusError when it is missing or unusable."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise JobStatusError("no such job-status file", path=path) from None
    except IsADirectoryError:
        raise JobStatusError("is a directory, not a job-status file", path=path) from None
    except PermissionError:
        raise JobStatusError("permission denied reading the job-status file", path=path) from None
    except OSError as error:
        raise JobStatusError(
            f"cannot read the job-status file: {error.strerror or error}", path=path
        ) from None
    except ValueError as error:  # a path with a NUL byte or one the file system cannot encode
        raise JobStatusError(f"unusable path: {error}", path=path) from None
    return parse_job_status(data, path=path)


def parse_job_status(
    data: bytes | str, *, path: str | os.PathLike[str] | None = None
) -> tuple[JobStatus, ...]:
    """Decode the JSON text of a job-status file; ``path`` only names the file in errors."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise JobStatusError(
                f"invalid UTF-8 at byte {error.start}: {error.reason}",
                path=path,
                where=f"byte {error.start}",
            ) from None
    else:
        text = data
    # Editors on Windows put a byte order mark in front; json refuses it in a str.
    text = text.removeprefix("\ufeff")
    if not text or text.isspace():
        raise JobStatusError(_EMPTY, path=path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise _json_error(error, text, path) from None
    except RecursionError:
        raise JobStatusError("invalid JSON: nested too deeply", path=path) from None
    except ValueError as error:  # e.g. an integer longer than Python's conversion limit
        raise JobStatusError(f"invalid JSON: {error}", path=path) from None
    return job_records(document, path=path)


def job_records(
    document: object, *, path: str | os.PathLike[str] | None = None
) -> tuple[JobStatus, ...]:
    """The records of an already-decoded job-status document, in file order, one per job id."""
    pages: list[dict[object, object]] = []
    groups: list[tuple[str, Sequence[object]]] = []  # (where prefix, records)
    if isinstance(document, dict):
        if "results" not in document:
            raise JobStatusError(f"{_SHAPE}; found an object without 'results'", path=path)
        pages.append(document)
        groups.append(("results", _results(document, "results", path)))
    elif isinstance(document, (list, tuple)):
        first = document[0] if document else None
        if isinstance(first, dict) and "results" in first:
            for index, page in enumerate(document):
                where = f"pages[{index}]"
                if not isinstance(page, dict) or "results" not in page:
                    raise JobStatusError(
                        f"expected a CVAT page with 'results' like pages[0], found {_kind(page)}",
                        path=path,
                        where=where,
                    )
                pages.append(page)
                groups.append((f"{where}.results", _results(page, f"{where}.results", path)))
        else:
            groups.append(("", document))
    else:
        raise JobStatusError(f"{_SHAPE}; found {_kind(document)}", path=path)
    jobs: list[JobStatus] = []
    for prefix, records in groups:
        _collect(records, prefix, jobs, path)
    # Repeated ids are rare; one set over all ids is cheaper than a lookup per record.
    if len(set(map(_JOB_ID, jobs))) != len(jobs):
        jobs = _without_repeats(jobs, groups, path)
    if pages:
        _warn_if_partial(pages[0], pages[-1], len(jobs), path)
    return tuple(jobs)


_JOB_ID = operator.attrgetter("job_id")


def _collect(records: Sequence[object], prefix: str, jobs: list[JobStatus], path: _PathArg) -> None:
    """Append one job per record, in order, or raise for the first record that is not usable."""
    append = jobs.append
    index = 0
    try:
        for index, raw in enumerate(records):
            if type(raw) is not dict:
                raise _diagnose(raw, f"{prefix}[{index}]", path)
            job_id = raw["job_id"] if "job_id" in raw else raw.get("id")
            task_id = raw.get("task_id")
            state = raw.get("state")
            stage = raw.get("stage")
            job_type = raw.get("type")
            assignee = raw.get("assignee")
            if type(assignee) is dict:
                assignee = assignee.get("username")
            updated = raw.get("updated_date")
            if updated is None:
                updated = raw.get("updated")
            task_name = raw.get("task_name")
            # One combined test keeps the common, valid record cheap; _diagnose says what is wrong.
            if not (
                (type(job_id) is int or (type(job_id) is str and job_id))
                and (type(task_id) is int or (type(task_id) is str and task_id))
                and type(state) is str
                and (stage is None or type(stage) is str)
                and (job_type is None or type(job_type) is str)
                and (assignee is None or type(assignee) is str)
                and (updated is None or type(updated) is str)
                and (task_name is None or type(task_name) is str)
            ):
                raise _diagnose(raw, f"{prefix}[{index}]", path)
            append(JobStatus(job_id, task_id, state, stage, job_type, assignee, updated, task_name))
    except ValueError as error:
        # str() of an integer id beyond Python's digit limit; only possible for a document
        # built in code, since json.loads refuses such a number first.
        raise JobStatusError(f"unusable id: {error}", path=path, where=f"{prefix}[{index}]") from None


def _without_repeats(
    jobs: list[JobStatus], groups: list[tuple[str, Sequence[object]]], path: _PathArg
) -> list[JobStatus]:
    """Drop identical repeats of a job; raise for a job id that comes with different content.

    An identical repeat is harmless (a job that moved from one page to the next while the pages
    were fetched); differing ones leave no way to know which is current.
    """
    # Every record produced exactly one job, so the n-th job comes from the n-th place.
    places = (f"{prefix}[{index}]" for prefix, records in groups for index in range(len(records)))
    first: dict[str, tuple[JobStatus, str]] = {}
    unique: list[JobStatus] = []
    for job, place in zip(jobs, places, strict=True):
        earlier, earlier_place = first.setdefault(job.job_id, (job, place))
        if earlier is job:
            unique.append(job)
        elif earlier != job:
            differing = ", ".join(
                field.name
                for field in attrs.fields(JobStatus)
                if getattr(earlier, field.name) != getattr(job, field.name)
            )
            raise JobStatusError(
                f"job {job.job_id} appears twice with different content ({differing}):"
                f" first at {earlier_place}, again here",
                path=path,
                where=place,
            )
    return unique


_TEXT_KEYS = ("stage", "type", "updated_date", "updated", "task_name")


def _diagnose(raw: object, where: str, path: _PathArg) -> JobStatusError:
    """The precise error for a record that failed the fast check."""
    if not isinstance(raw, dict):
        return JobStatusError(f"job record is {_kind(raw)}, not an object", path=path, where=where)
    # The same choice as the fast path: a "job_id" key, present, wins over "id".
    id_key = "job_id" if "job_id" in raw else "id"
    for key in (id_key, "task_id"):
        value = raw.get(key)
        if value is None:
            missing = "'id' (or 'job_id')" if key == "id" else repr(key)
            return JobStatusError(f"job record has no {missing}", path=path, where=where)
        if not (type(value) is int or (type(value) is str and value)):
            return JobStatusError(
                f"{key!r} must be a non-empty string or an integer, not {_kind(value)}",
                path=path,
                where=where,
            )
    state = raw.get("state")
    if state is None:
        return JobStatusError("job record has no 'state'", path=path, where=where)
    if type(state) is not str:
        return JobStatusError(f"'state' must be a string, not {_kind(state)}", path=path, where=where)
    assignee = raw.get("assignee")
    if isinstance(assignee, dict):
        username = assignee.get("username")
        if username is not None and type(username) is not str:
            return JobStatusError(
                f"'assignee.username' must be a string, not {_kind(username)}", path=path, where=where
            )
    elif assignee is not None and type(assignee) is not str:
        return JobStatusError(
            f"'assignee' must be null, a username or a user object, not {_kind(assignee)}",
            path=path,
            where=where,
        )
    for key in _TEXT_KEYS:
        value = raw.get(key)
        if value is not None and type(value) is not str:
            return JobStatusError(
                f"{key!r} must be a string or null, not {_kind(value)}", path=path, where=where
            )
    # The fast check and this diagnosis test the same things; reaching here means they drifted.
    return JobStatusError("job record is not usable", path=path, where=where)


def _results(page: dict[object, object], where: str, path: _PathArg) -> Sequence[object]:
    results = page["results"]
    if not isinstance(results, (list, tuple)):
        raise JobStatusError(
            f"'results' must be a list of jobs, not {_kind(results)}", path=path, where=where
        )
    return results


def _warn_if_partial(
    first: dict[object, object], last: dict[object, object], jobs: int, path: _PathArg
) -> None:
    # One page of a longer listing leaves whole jobs out: a task whose open jobs sit on a missing
    # page would look completed. Not an error (a filtered listing is legitimate), but loud.
    name = os.fspath(path) if path is not None else "job-status data"
    count = first.get("count")
    if type(count) is int and jobs < count:
        logger.warning(
            "%s holds %d of the %d jobs CVAT counted: pages of the listing are missing,"
            " so a task with jobs there may look completed",
            name, jobs, count,
        )
    elif last.get("next") is not None:
        logger.warning(
            "%s ends with a page that links to a next one: pages of the listing may be missing,"
            " so a task with jobs there may look completed",
            name,
        )


# What the parser stopped at when the text ends inside a literal, a number or a \u escape.
_PARTIAL_TOKEN = re.compile(r"-|\.|[eE][-+]?|t(?:ru?)?|f(?:a(?:ls?)?)?|n(?:ul?)?")
_PARTIAL_ESCAPE = re.compile(r"u[0-9a-fA-F]{0,4}")


def _json_error(error: json.JSONDecodeError, text: str, path: _PathArg) -> JobStatusError:
    where = f"line {error.lineno} column {error.colno}"
    # A writer that has not finished leaves a prefix of a document: the parser fails at the end
    # of the text, runs out of text inside a string, or stops at an unfinished token.
    tail = text[error.pos :].rstrip()
    truncated = (
        not tail
        or error.msg.startswith("Unterminated string")
        or _PARTIAL_TOKEN.fullmatch(tail) is not None
        or (error.msg.startswith("Invalid \\uXXXX") and _PARTIAL_ESCAPE.fullmatch(tail) is not None)
    )
    if truncated:
        return JobStatusError(
            f"truncated JSON ({error.msg}): the file ends mid-document; the exporter may be mid-write",
            path=path,
            where=where,
        )
    return JobStatusError(f"invalid JSON: {error.msg}", path=path, where=where)


def _kind(value: object) -> str:
    """How an error message names an unexpected JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"
