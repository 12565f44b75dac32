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
The daemon's :class:`JobStatusParser` also remembers the last version, so that a record that did
not change costs a comparison, not a new object. Its fastest path does not decode unchanged
records at all: msgspec splits the document into each record's raw bytes (a C scan that checks
the JSON syntax, 5–7× faster than ``json.loads`` building every dict), the bytes are compared
with the last version's at the same place, and only the records whose bytes differ are decoded
and checked, by the same code as everywhere else, so errors read the same.
"""

from __future__ import annotations

import itertools
import json
import logging
import operator
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import msgspec

from cvat_watch._escape import printable
from cvat_watch.errors import JobStatusError
from cvat_watch.model import ACCEPTANCE, COMPLETED, JobStatus

__all__ = ["JobStatusParser", "job_records", "load_job_status", "parse_job_status"]

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
    return _records(_decode(data, path), path, None)


def job_records(document: object, *, path: str | os.PathLike[str] | None = None) -> tuple[JobStatus, ...]:
    """The records of an already-decoded job-status document, in file order, one per job id."""
    return _records(document, path, None)


@attrs.define
class JobStatusParser:
    """Reads one job-status file version after version, reusing the records that did not change.

    The result is always what :func:`parse_job_status` returns for the same input. A record whose
    values are those of the record at the same place last time gives back the same
    :class:`~cvat_watch.model.JobStatus` object, so that a
    :class:`~cvat_watch.daemon.snapshot.SnapshotBuilder` can tell the changed records by identity; when
    records were added or removed, they are matched by their values instead. A new or changed
    record is checked as :func:`parse_job_status` checks it; an unchanged one was checked when it
    was read first. A file that fails to parse leaves the memory of the last good one.
    """

    # Per record of the last good parse, in file order (repeats included): its values as read and its job.
    _values: list[tuple[object, ...]] = attrs.field(factory=list, repr=False)
    _jobs: list[JobStatus] = attrs.field(factory=list, repr=False)
    # The keys every record had, when all records had the same ones and only keys this module
    # reads (then _values holds each record's values of those keys, in this order); else None.
    _layout: tuple[str, ...] | None = attrs.field(default=None, repr=False)
    # The oddly spelled (job, state, stage) already warned about: one warning each, not one per reload.
    _warned: set[tuple[object, ...]] = attrs.field(factory=set, repr=False)
    # The last good parse as raw pieces: where the records were ("results" or ""), each record's
    # bytes and the job made of it, in file order, and the result; None when it was not split.
    _raw: _RawMemory | None = attrs.field(default=None, repr=False)

    def parse(
        self, data: bytes | str, *, path: str | os.PathLike[str] | None = None
    ) -> tuple[JobStatus, ...]:
        """Like :func:`parse_job_status`."""
        split = _split(data)
        if split is not None and self._raw is not None:
            jobs = _from_raw(self, split, path)
            if jobs is not None:
                return jobs
        if split is not None and not self._jobs:
            first = _first_from_raw(self, split, path)
            if first is not None:
                return first
        jobs = _records(_decode(data, path), path, self, decoded=True)
        # Remember the pieces only once the whole document proved good.
        self._raw = _RawMemory(split.prefix, split.records, self._jobs, jobs) if split is not None else None
        return jobs

    def records(
        self, document: object, *, path: str | os.PathLike[str] | None = None
    ) -> tuple[JobStatus, ...]:
        """Like :func:`job_records`."""
        return _records(document, path, self)

    def forget(self) -> None:
        """Drop the memory of the last parse."""
        self._values = []
        self._jobs = []
        self._layout = None
        self._raw = None


class _RawPage(msgspec.Struct, gc=False):
    """A CVAT page with its records left as bytes; its other fields are skipped (their syntax checked)."""

    results: list[msgspec.Raw]
    count: msgspec.Raw = msgspec.Raw(b"null")
    next: msgspec.Raw = msgspec.Raw(b"null")


_RAW_DECODER = msgspec.json.Decoder(list[msgspec.Raw] | _RawPage)


@attrs.frozen
class _RawMemory:
    prefix: str
    records: list[msgspec.Raw]
    every_record: list[JobStatus]
    result: tuple[JobStatus, ...]


@attrs.frozen
class _Split:
    prefix: str
    records: list[msgspec.Raw]
    page: dict[object, object] | None


def _split(data: bytes | str) -> _Split | None:
    """The document's records as raw bytes, for a flat list or one CVAT page; None for anything else.

    None also for whatever the full decoder should judge: a document msgspec refuses (bad syntax,
    a byte order mark, NaN), bytes that are not UTF-8 (msgspec does not check skipped strings),
    a list of pages. Then the caller takes the path that explains the problem precisely.
    """
    if not isinstance(data, bytes) or not (data.isascii() or _is_utf8(data)):
        return None
    try:
        document = _RAW_DECODER.decode(data)
    except (msgspec.DecodeError, ValueError, RecursionError):  # msgspec: RecursionError when nested deeply
        return None
    if isinstance(document, _RawPage):
        try:
            page: dict[object, object] = {
                "count": json.loads(bytes(document.count)),
                "next": json.loads(bytes(document.next)),
            }
        except (ValueError, RecursionError):
            return None
        return _Split("results", document.results, page)
    # A list of pages: their results are concatenated, with places of their own; rare, not split.
    if document and bytes(document[0]).lstrip()[:1] == b"{":
        try:
            first = json.loads(bytes(document[0]))
        except (ValueError, RecursionError):
            return None
        if isinstance(first, dict) and "results" in first:
            return None
    return _Split("", document, None)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _from_raw(parser: JobStatusParser, split: _Split, path: _PathArg) -> tuple[JobStatus, ...] | None:
    """The jobs of ``split`` from the last parse's, decoding only the records whose bytes changed.

    None (take the full path) when records were added or removed, many changed, the layout
    changed, or a changed record is not valid JSON on its own terms (the full path then says
    where in the file). A changed record is checked exactly as the full path checks it.
    """
    last = parser._raw
    assert last is not None
    prefix, records, old_jobs = split.prefix, split.records, last.every_record
    if prefix != last.prefix or len(records) != len(last.records):
        return None
    changed = list(itertools.compress(itertools.count(), map(operator.ne, records, last.records)))
    if len(changed) > _MATCH_AFTER:
        return None
    every_record = old_jobs.copy()
    # The full path's memory (values per record, see _collect and _uniform) is kept in step, so
    # that a later version with records added or removed still gets the unchanged jobs back.
    layout = parser._layout
    values: list[Any] | None = parser._values.copy() if len(parser._values) == len(old_jobs) else None
    for index in changed:
        try:
            record = json.loads(bytes(records[index]))
        except (ValueError, RecursionError):
            return None
        one: list[JobStatus] = []
        key: list[tuple[object, ...]] = []
        _collect((record,), prefix, one, key, None, path, first=index, warned=parser._warned)
        # Bytes can change without the values read here changing (a field this module skips).
        if one[0] != old_jobs[index]:
            every_record[index] = one[0]
        if values is None:
            continue
        if layout is None:
            values[index] = key[0]
        elif type(record) is dict and len(record) == len(layout) and record.keys() >= set(layout):
            values[index] = operator.itemgetter(*layout)(record)
        else:
            values = None  # a record with other keys: the layout no longer holds
    if all(every_record[index] is old_jobs[index] for index in changed):
        result = last.result
    elif len(last.result) == len(old_jobs) and all(
        every_record[index].job_id == old_jobs[index].job_id for index in changed
    ):
        # The last version had no repeated job, and every changed record kept its job id: none now.
        result = tuple(every_record)
    else:
        jobs = every_record
        if len(set(map(_JOB_ID, jobs))) != len(jobs):
            jobs = _without_repeats(jobs, [(prefix, records)], path)
        result = tuple(jobs)
    if split.page is not None:
        _refuse_partial([split.page], len(result), path)
    if values is None:  # the full path starts afresh next time
        parser._values, parser._jobs, parser._layout = [], [], None
    else:
        parser._values, parser._jobs = values, every_record
    parser._raw = _RawMemory(prefix, records, every_record, result)
    return result


#: Records decoded at a time by a first parse: the dicts of one batch are freed before the next.
_BATCH = 4096


def _first_from_raw(parser: JobStatusParser, split: _Split, path: _PathArg) -> tuple[JobStatus, ...] | None:
    """A first parse of a split document, decoded a batch of records at a time.

    ``json.loads`` of a whole 85 MB list builds 500,000 dicts at once; they are freed, but their
    pages stay with the process, between the strings that live on (0.3 GB). Here the dicts of
    one batch die before the next batch is decoded, and the string values of next-cvat's flat
    list, which repeat from record to record (task ids and names, states, stages, assignees),
    are kept once each. The result and the parser's memory are what the full path gives; None
    (take the full path) for any problem, so that errors are reported as before and in the same order.
    """
    records, prefix = split.records, split.prefix
    jobs: list[JobStatus] = []
    values: list[Any] = []
    layout: tuple[str, ...] | None = None
    uniform: bool | None = None
    shared: dict[str, dict[object, object]] = {}
    try:
        for start in range(0, len(records), _BATCH):
            batch = json.loads(b"[" + b",".join(records[start : start + _BATCH]) + b"]")
            found = _uniform([(prefix, batch)])
            if uniform is None:
                uniform = found is not None
                layout = found[0] if found is not None else None
            if uniform:
                if found is None or found[0] != layout:
                    return None  # uniform so far, not as a whole: the full path knows what to keep
                batch, rows = _shared_values(found[0], found[1], shared)
                values.extend(rows)
                _collect(batch, prefix, jobs, [], None, path, first=start, warned=parser._warned)
            else:
                _collect(batch, prefix, jobs, values, None, path, first=start, warned=parser._warned)
    except (JobStatusError, ValueError, RecursionError):  # the full path says it, in its order
        return None
    every_record = jobs
    if len(set(map(_JOB_ID, jobs))) != len(jobs):
        try:
            jobs = _without_repeats(jobs, [(prefix, records)], path)
        except JobStatusError:
            return None
    if split.page is not None:
        _refuse_partial([split.page], len(jobs), path)
    result = tuple(jobs)
    parser._values, parser._jobs, parser._layout = values, every_record, layout
    parser._raw = _RawMemory(prefix, records, every_record, result)
    return result


def _shared_values(
    layout: tuple[str, ...], rows: list[Any], shared: dict[str, dict[object, object]]
) -> tuple[list[dict[str, object]], list[Any]]:
    """The records of a uniform batch rebuilt with one object per distinct string value, and their rows.

    Only a column of strings and nulls is shared (by value, in C): an int, a float and a bool
    can be equal without being the same value, and must stay what the file said.
    """
    # A uniform layout has a job id and a task id, so each row is a tuple (itemgetter of 2+ keys).
    columns = list(zip(*rows, strict=True))
    for index, key in enumerate(layout):
        column = columns[index]
        if set(map(type, column)) <= _SHAREABLE:
            memo = shared.setdefault(key, {})
            columns[index] = tuple(map(memo.setdefault, column, column))
    rows = list(zip(*columns, strict=True))
    return list(map(dict, map(zip, itertools.repeat(layout), rows))), rows


_SHAREABLE = frozenset((str, type(None)))


def _decode(data: bytes | str, path: _PathArg) -> object:
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
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise _json_error(error, text, path) from None
    except RecursionError:
        raise JobStatusError("invalid JSON: nested too deeply", path=path) from None
    except ValueError as error:  # e.g. an integer longer than Python's conversion limit
        raise JobStatusError(f"invalid JSON: {error}", path=path) from None


def _records(
    document: object, path: _PathArg, parser: JobStatusParser | None, *, decoded: bool = False
) -> tuple[JobStatus, ...]:
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
    values: list[tuple[object, ...]] = []
    layout = None
    uniform = _uniform(groups) if parser is not None and decoded else None
    if uniform is not None:
        assert parser is not None
        layout, values = uniform
        prefix, records = groups[0]
        if parser._layout != layout or not _plain_ids(values, layout):
            _collect(records, prefix, jobs, [], None, path, warned=parser._warned)
        elif len(parser._values) == len(values):
            jobs = _patched(records, prefix, values, parser, path)
        else:
            jobs = _matched(records, prefix, values, parser, path)
    else:
        reuse = _Reuse.of(parser, sum(len(records) for _, records in groups))
        warned = parser._warned if parser is not None else None
        for prefix, records in groups:
            _collect(records, prefix, jobs, values, reuse, path, warned=warned)
    every_record = jobs
    # Repeated ids are rare; one set over all ids is cheaper than a lookup per record.
    if len(set(map(_JOB_ID, jobs))) != len(jobs):
        jobs = _without_repeats(jobs, groups, path)
    if pages:
        _refuse_partial(pages, len(jobs), path)
    if parser is not None:
        parser._values = values
        parser._jobs = every_record
        parser._layout = layout
    return tuple(jobs)


# The keys _collect reads from a record, the job id's first and the task id's next.
_READ_KEYS = (
    "job_id",
    "id",
    "task_id",
    "state",
    "stage",
    "type",
    "assignee",
    "updated_date",
    "updated",
    "task_name",
)
_READ_KEY_SET = frozenset(_READ_KEYS)


def _uniform(groups: list[tuple[str, Sequence[object]]]) -> tuple[tuple[str, ...], list[Any]] | None:
    """For one decoded list of records that all have the same keys, all read here: those keys and
    every record's values of them (from C, in one pass); None for any other document.

    next-cvat's flat list is like this. Then a record whose values equal the last parse's at the
    same place needs no look in Python; a CVAT page has keys not read here, whose absence proves
    nothing about the keys that are.
    """
    if len(groups) != 1 or not groups[0][1]:
        return None
    records: Sequence[Any] = groups[0][1]
    first = records[0]
    if type(first) is not dict or not first.keys() <= _READ_KEY_SET or "task_id" not in first:
        return None
    layout = tuple(key for key in _READ_KEYS if key in first)
    if layout[0] not in ("job_id", "id"):
        return None
    try:
        # Decoded JSON: only objects take string subscripts, so this fails for anything else.
        values = list(map(operator.itemgetter(*layout), records))
        if set(map(len, records)) != {len(layout)}:
            return None  # a record with a key more: one not read here, or one that changes what is
    except (KeyError, TypeError):
        return None
    return layout, values


def _plain_ids(values: list[Any], layout: tuple[str, ...]) -> bool:
    """Whether every job and task id is an int or a str: 1.0 and true equal 1, yet are not ids."""
    return all(
        set(map(type, map(operator.itemgetter(layout.index(key)), values))) <= {int, str}
        for key in (layout[0], "task_id")
    )


def _patched(
    records: Sequence[object], prefix: str, values: list[Any], parser: JobStatusParser, path: _PathArg
) -> list[JobStatus]:
    """The last parse's jobs with those of records whose values changed built again (and checked).

    A record with the last parse's values at the same place was checked then; with the ids'
    types checked by _plain_ids, equal values are values of the same types.
    """
    changed = list(itertools.compress(itertools.count(), map(operator.ne, values, parser._values)))
    if len(changed) > _MATCH_AFTER:  # probably shifted places
        return _matched(records, prefix, values, parser, path)
    jobs = parser._jobs.copy()
    for index in changed:
        jobs[index] = _one(records, index, prefix, path, parser._warned)
    return jobs


def _matched(
    records: Sequence[object], prefix: str, values: list[Any], parser: JobStatusParser, path: _PathArg
) -> list[JobStatus]:
    """The jobs when records were added or removed: a record with the values of one of the last
    parse's gets that record's job, the others are built (and checked)."""
    try:
        known = dict(zip(parser._values, parser._jobs, strict=True))
    except TypeError:  # values that are objects (an assignee as a user object): nothing to match by
        known = {}
    jobs = []
    for index, key in enumerate(values):
        try:
            job = known.get(key)
        except TypeError:
            job = None
        jobs.append(job if job is not None else _one(records, index, prefix, path, parser._warned))
    return jobs


def _one(
    records: Sequence[object], index: int, prefix: str, path: _PathArg, warned: set[tuple[object, ...]]
) -> JobStatus:
    one: list[JobStatus] = []
    _collect((records[index],), prefix, one, [], None, path, first=index, warned=warned)
    return one[0]


# Past this many records that differ from the one at their place last time, records were probably
# added, removed or reordered (every later place shifts): then they are matched by their values.
_MATCH_AFTER = 64


@attrs.define
class _Reuse:
    """The last parse's jobs to hand out again: by place, or by values once many places differ."""

    values: list[tuple[object, ...]]
    jobs: list[JobStatus]
    misses: int = 0
    _by_values: dict[tuple[object, ...], JobStatus] | None = None

    @classmethod
    def of(cls, parser: JobStatusParser | None, count: int) -> _Reuse | None:
        # After a parse on the fast path, the values are in another layout: nothing to compare with.
        if parser is None or not parser._jobs or parser._layout is not None:
            return None
        # With records added or removed, places shift from the first change on: match by values at once.
        misses = 0 if count == len(parser._jobs) else _MATCH_AFTER
        return cls(parser._values, parser._jobs, misses)

    def by_values(self) -> dict[tuple[object, ...], JobStatus]:
        if self._by_values is None:
            self._by_values = dict(zip(self.values, self.jobs, strict=True))
        return self._by_values


_JOB_ID = operator.attrgetter("job_id")


def _collect(
    records: Sequence[object],
    prefix: str,
    jobs: list[JobStatus],
    values: list[tuple[object, ...]],
    reuse: _Reuse | None,
    path: _PathArg,
    *,
    first: int = 0,
    warned: set[tuple[object, ...]] | None = None,
) -> None:
    """Append one job and its values per record, in order; raise for the first unusable record."""
    append = jobs.append
    append_values = values.append
    start = len(jobs) - first  # the place in the whole document of the record at index 0
    old_values = reuse.values if reuse is not None else []
    old_jobs = reuse.jobs if reuse is not None else []
    known = len(old_values)
    index = 0
    try:
        for index, raw in enumerate(records, first):
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
            # Checked values equal to the last parse's (ints equal only ints, strings only
            # strings) make an equal job: hand out the same object instead of building one.
            key = (job_id, task_id, state, stage, job_type, assignee, updated, task_name)
            place = start + index
            job = None
            if place < known and key == old_values[place]:
                job = old_jobs[place]
            elif reuse is not None:
                reuse.misses += 1
                if reuse.misses > _MATCH_AFTER:
                    job = reuse.by_values().get(key)
            if job is None:
                if state not in _STATES or (stage is not None and stage not in _STAGES):
                    state, stage = _respelled(state, stage, job_id, f"{prefix}[{index}]", path, warned)
                job = JobStatus(job_id, task_id, state, stage, job_type, assignee, updated, task_name)
            append(job)
            append_values(key)
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
        # By place, not identity: a JobStatusParser may hand out one object for two identical records.
        seen = first.get(job.job_id)
        if seen is None:
            first[job.job_id] = (job, place)
            unique.append(job)
            continue
        earlier, earlier_place = seen
        if earlier != job:
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


#: The states and stages CVAT writes, all in lower case; what the model compares with.
_STATES = frozenset({"new", "in progress", COMPLETED, "rejected"})
_STAGES = frozenset({"annotation", "validation", ACCEPTANCE})


def _respelled(
    state: str,
    stage: str | None,
    job_id: object,
    where: str,
    path: _PathArg,
    warned: set[tuple[object, ...]] | None,
) -> tuple[str, str | None]:
    """A known state or stage in other case or spacing (``"Completed"``, ``"completed "``), as
    CVAT spells it, with a warning naming the file and the record; any other value unchanged.

    Read literally, ``"Completed"`` is not done and would reopen a completed task without a
    word; refusing the file would stop every other task's events over a matter of spelling.
    The value means one thing only, so it is read as that, loudly.
    """
    new_state = _known(state, _STATES)
    new_stage = _known(stage, _STAGES) if stage is not None else None
    if new_state == state and new_stage == stage:
        return state, stage  # a value this version does not know: kept for the model to judge
    key = (path, job_id, state, stage)
    if warned is None or key not in warned:
        if warned is not None:
            warned.add(key)
        name = printable(os.fspath(path)) if path is not None else "job-status data"
        changes = [
            f"{what} {printable(repr(old))} as {new!r}"
            for what, old, new in (("state", state, new_state), ("stage", stage, new_stage))
            if old != new
        ]
        logger.warning(
            "%s:%s: job %s: reading %s (CVAT writes them in lower case, single-spaced)",
            name,
            where,
            printable(str(job_id)),
            " and ".join(changes),
        )
    return new_state, new_stage


def _known(value: str, known: frozenset[str]) -> str:
    spelled = " ".join(value.split()).lower()
    return spelled if spelled in known else value


_TEXT_KEYS = ("stage", "type", "updated_date", "updated", "task_name")


def _diagnose(raw: object, where: str, path: _PathArg) -> JobStatusError:
    """The precise error for a record that failed the fast check."""
    if not isinstance(raw, dict):
        return JobStatusError(f"job record is {_kind(raw)}, not an object", path=path, where=where)
    if "task_id" not in raw and ("segment_size" in raw or isinstance(raw.get("jobs"), dict)):
        # A task of GET /api/tasks: it has an id, a name and a jobs summary, but is no job.
        return JobStatusError(
            "this looks like a CVAT tasks listing (GET /api/tasks), not a job status: "
            "give a jobs listing (GET /api/jobs, or a list of job records with task_id and state)",
            path=path,
            where=where,
        )
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


def _refuse_partial(pages: list[dict[object, object]], jobs: int, path: _PathArg) -> None:
    """Raise for a REST listing that shows it is not whole: reading it would invent events.

    A page or list of pages leaves jobs out when CVAT counted more jobs than it holds, when its
    last page links to a further one, when its pages disagree on the count (the listing changed
    while it was fetched) or when the page numbers in consecutive pages' links leave a gap. A
    task whose open jobs sit on a missing page would look completed, and one whose jobs all
    sit there would look reopened; both reverse when the whole listing returns. A filtered
    listing (``?task_id=``) is whole: its count is that of the filter.
    """
    counts: set[int] = {count for page in pages if type(count := page.get("count")) is int}
    if len(counts) > 1:
        raise JobStatusError(
            f"partial listing: its pages disagree on the job count ({', '.join(map(str, sorted(counts)))});"
            " the listing changed while it was fetched",
            path=path,
            where="pages",
        )
    for index in range(len(pages) - 1):
        expected = _page_number(pages[index].get("next"))
        found = _page_number(pages[index + 1].get("previous"), default=1)
        if expected is not None and found is not None and expected != found + 1:
            raise JobStatusError(
                f"partial listing: pages[{index}] links to page {expected}, but the page after it"
                f" follows page {found}; pages are missing",
                path=path,
                where=f"pages[{index + 1}]",
            )
    last = f"pages[{len(pages) - 1}]" if len(pages) > 1 else None
    if pages[-1].get("next") is not None:
        raise JobStatusError(
            "partial listing: the last page links to a next one; pages are missing",
            path=path,
            where=f"{last}.next" if last else "next",
        )
    if counts:
        (count,) = counts
        if jobs < count:
            raise JobStatusError(
                f"partial listing: holds {jobs} of the {count} jobs CVAT counted; pages are missing",
                path=path,
                where="pages[0].count" if last else "count",
            )


def _page_number(link: object, *, default: int | None = None) -> int | None:
    """The ``page`` query parameter of a REST page link; ``default`` for a link without one
    (CVAT's link to the first page leaves it out); None when there is no usable link."""
    if not isinstance(link, str) or not link:
        return None
    try:
        values = parse_qs(urlsplit(link).query).get("page")
    except ValueError:
        return None
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError:
        return None


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
