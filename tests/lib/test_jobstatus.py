"""The job-status reader: every accepted shape, every refusal as a JobStatusError naming file and place."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from cvat_watch import jobstatus
from cvat_watch.errors import JobStatusError
from cvat_watch.jobstatus import JobStatusParser, job_records, load_job_status, parse_job_status
from cvat_watch.model import JobStatus
from defusedxml import ElementTree
from hypothesis import given, settings
from hypothesis import strategies as st

CORPUS_JOBS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "cvat-api-jobs.json"
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "example" / "job_status.json"
EXAMPLE_EXPORT = EXAMPLE.with_name("annotations.xml")


def _rest_job(job_id: Any, task_id: Any, state: Any = "completed", **extra: Any) -> dict[str, Any]:
    """A job as CVAT's ``GET /api/jobs`` returns it (the fields that matter plus some that do not)."""
    job: dict[str, Any] = {
        "id": job_id,
        "task_id": task_id,
        "project_id": None,
        "state": state,
        "stage": "annotation",
        "type": "annotation",
        "assignee": None,
        "updated_date": "2024-07-15T15:34:53.594000Z",
        "url": f"http://localhost:8080/api/jobs/{job_id}",
        "issues": {"count": 0, "url": f"http://localhost:8080/api/issues?job_id={job_id}"},
    }
    job.update(extra)
    return job


def _page(*jobs: object, count: int | None = None, next: str | None = None) -> dict[str, Any]:
    return {
        "count": len(jobs) if count is None else count,
        "next": next,
        "previous": None,
        "results": list(jobs),
    }


def _write(tmp_path: Path, document: object, name: str = "job_status.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")
    return path


def _error(data: bytes | str, path: str = "/data/job_status.json") -> JobStatusError:
    with pytest.raises(JobStatusError) as caught:
        parse_job_status(data, path=path)
    return caught.value


# -- the accepted shapes -------------------------------------------------------------------------


def test_flat_next_cvat_list(tmp_path: Path) -> None:
    """next-cvat's flat list gives string ids, its task names, and a username for every assignee form."""
    path = _write(
        tmp_path,
        [
            {
                "task_id": "12",
                "job_id": 34,
                "task_name": "cars",
                "stage": "annotation",
                "state": "completed",
                "assignee": None,
            },
            {
                "task_id": 12,
                "job_id": "35",
                "task_name": "cars",
                "stage": "validation",
                "state": "in progress",
                "assignee": "alice",
                "updated": "2024-05-01T10:00:00Z",
            },
            {
                "task_id": "13",
                "job_id": 36,
                "task_name": "bikes",
                "stage": "acceptance",
                "state": "completed",
                "assignee": {"username": "bob", "id": 7},
            },
        ],
    )
    assert load_job_status(path) == (
        JobStatus("34", "12", "completed", stage="annotation", task_name="cars"),
        JobStatus(
            "35",
            "12",
            "in progress",
            stage="validation",
            assignee="alice",
            updated="2024-05-01T10:00:00Z",
            task_name="cars",
        ),
        JobStatus("36", "13", "completed", stage="acceptance", assignee="bob", task_name="bikes"),
    )


def test_rest_page(tmp_path: Path) -> None:
    """A CVAT REST page gives one record per result, with updated from updated_date and the type kept."""
    path = _write(
        tmp_path,
        _page(
            _rest_job(5, 2, assignee={"id": 3, "username": "worker2", "first_name": "W"}),
            _rest_job(6, 2, "new", type="ground_truth", stage="acceptance", updated_date=None),
        ),
    )
    assert load_job_status(path) == (
        JobStatus(
            "5",
            "2",
            "completed",
            stage="annotation",
            type="annotation",
            assignee="worker2",
            updated="2024-07-15T15:34:53.594000Z",
        ),
        JobStatus("6", "2", "new", stage="acceptance", type="ground_truth"),
    )


def test_list_of_pages_concatenates_results(tmp_path: Path) -> None:
    """A list of REST pages gives the results of every page, in order."""
    path = _write(
        tmp_path,
        [
            _page(_rest_job(1, 1), _rest_job(2, 1), count=3, next="http://localhost:8080/api/jobs?page=2"),
            _page(_rest_job(3, 2, "in progress"), count=3),
        ],
    )
    records = load_job_status(path)
    assert [(job.job_id, job.task_id, job.state) for job in records] == [
        ("1", "1", "completed"),
        ("2", "1", "completed"),
        ("3", "2", "in progress"),
    ]


def test_plain_list_of_cvat_jobs(tmp_path: Path) -> None:
    """A bare list of CVAT job objects (``id``, not ``job_id``) is read like a page's results."""
    path = _write(tmp_path, [_rest_job(8, 4, "rejected"), _rest_job(9, 4)])
    assert [(job.job_id, job.task_id, job.state) for job in load_job_status(path)] == [
        ("8", "4", "rejected"),
        ("9", "4", "completed"),
    ]


@pytest.mark.parametrize("name", ["status.txt", "jobs", "job_status.xml", "page.json"])
@pytest.mark.parametrize(
    "document",
    [_page(_rest_job(1, 1)), [_rest_job(1, 1)], [{"job_id": 1, "task_id": 1, "state": "completed"}]],
)
def test_shape_is_told_by_content_not_name(tmp_path: Path, name: str, document: object) -> None:
    """The shape comes from the content: any file name reads the same."""
    assert [(job.job_id, job.task_id) for job in load_job_status(_write(tmp_path, document, name))] == [
        ("1", "1")
    ]


def test_unfamiliar_values_are_kept() -> None:
    """A state, stage or job type this version does not know passes through untouched."""
    (job,) = job_records([_rest_job(1, 1, "archived", stage="review", type="consensus_replica")])
    assert (job.state, job.stage, job.type) == ("archived", "review", "consensus_replica")
    assert job.counts is False


def test_job_id_wins_over_id_and_updated_date_over_updated() -> None:
    """When a record has both, ``job_id`` is the id and ``updated_date`` the update time."""
    (job,) = job_records(
        [{"job_id": 7, "id": 99, "task_id": 1, "state": "new", "updated_date": "B", "updated": "A"}]
    )
    assert (job.job_id, job.updated) == ("7", "B")


def test_assignee_object_without_username_is_none() -> None:
    """A user object without a username leaves the assignee unknown rather than failing."""
    (job,) = job_records([_rest_job(1, 1, assignee={"id": 4})])
    assert job.assignee is None


def test_empty_list_and_empty_page_have_no_jobs() -> None:
    """An empty list or a page without results is a valid file with no jobs."""
    assert parse_job_status("[]") == ()
    assert parse_job_status(json.dumps(_page())) == ()


def test_byte_order_mark_is_accepted() -> None:
    """A UTF-8 byte order mark in front of the JSON is ignored."""
    data = "\ufeff" + json.dumps([_rest_job(1, 1)])
    assert parse_job_status(data.encode("utf-8")) == parse_job_status(data)
    assert len(parse_job_status(data)) == 1


def test_identical_repeat_is_read_once() -> None:
    """A job listed twice with the same content (pages that overlap) appears once, first place kept."""
    records = job_records([_page(_rest_job(1, 1), _rest_job(2, 1)), _page(_rest_job(2, 1), _rest_job(3, 2))])
    assert [job.job_id for job in records] == ["1", "2", "3"]


def test_conflicting_repeat_names_the_job_and_both_places() -> None:
    """The same job id with different content is refused, naming the id, the fields and both places."""
    with pytest.raises(JobStatusError) as caught:
        job_records(
            [_page(_rest_job(1, 1), _rest_job(2, 1)), _page(_rest_job(3, 2), _rest_job(2, 1, "new"))],
            path="/data/jobs.json",
        )
    error = caught.value
    assert error.where == "pages[1].results[1]"
    assert "job 2 appears twice" in error.message
    assert "(state)" in error.message
    assert "first at pages[0].results[1]" in error.message
    assert str(error).startswith("/data/jobs.json:pages[1].results[1]: ")


_PAGE_2 = "http://x/api/jobs?page=2&page_size=2"


def _paged(page: dict[str, Any], *, previous: str | None) -> dict[str, Any]:
    return {**page, "previous": previous}


@pytest.mark.parametrize(
    ("document", "where", "message"),
    [
        # One page of a longer listing: CVAT counted 40 jobs, the page holds one and links on.
        (_page(_rest_job(1, 1), count=40, next=_PAGE_2), "next", "links to a next one"),
        # The count alone gives it away (a fetcher that dropped the link).
        (_page(_rest_job(1, 1), count=40), "count", "holds 1 of the 40 jobs CVAT counted"),
        # The link alone (a fetcher that dropped the count).
        ({"next": _PAGE_2, "results": [_rest_job(1, 1)]}, "next", "links to a next one"),
        # A list of pages that stops before the end.
        (
            [_page(_rest_job(1, 1), _rest_job(2, 1), count=5, next=_PAGE_2)],
            "next",
            "links to a next one",
        ),
        # A list of pages with page 2 missing: page 1 links to 2, the next one follows page 2.
        (
            [
                _page(_rest_job(1, 1), _rest_job(2, 1), count=6, next=_PAGE_2),
                _paged(_page(_rest_job(5, 3), _rest_job(6, 3), count=6), previous=_PAGE_2),
            ],
            "pages[1]",
            "links to page 2, but the page after it follows page 2",
        ),
        # Pages whose counts do not add up: fewer unique jobs than counted, no link to tell.
        (
            [_page(_rest_job(1, 1), count=4), _page(_rest_job(2, 1), count=4)],
            "pages[0].count",
            "holds 2 of the 4 jobs",
        ),
        # Pages fetched while the listing changed.
        (
            [_page(_rest_job(1, 1), count=2, next=_PAGE_2), _page(_rest_job(2, 1), count=3)],
            "pages",
            "disagree on the job count (2, 3)",
        ),
    ],
)
def test_a_visibly_partial_listing_is_refused_naming_file_and_place(
    document: object, where: str, message: str
) -> None:
    """A REST listing that shows it is not whole (count above its jobs, a next link on the last
    page, a gap between pages, pages that disagree) is a JobStatusError naming file and place."""
    with pytest.raises(JobStatusError) as caught:
        job_records(document, path="/data/j.json")
    assert caught.value.where == where
    assert "partial listing" in caught.value.message
    assert message in caught.value.message
    assert str(caught.value).startswith(f"/data/j.json:{where}: ")


def test_whole_paged_listings_with_links_are_read() -> None:
    """Consecutive pages whose links follow each other (CVAT leaves page=1 out of the link back to
    the first page) and whose count is their jobs are whole."""
    first = "http://x/api/jobs?page_size=2"
    pages = [
        _page(_rest_job(1, 1), _rest_job(2, 1), count=5, next=_PAGE_2),
        _paged(
            _page(_rest_job(3, 2), _rest_job(4, 2), count=5, next="http://x/api/jobs?page=3&page_size=2"),
            previous=first,
        ),
        _paged(_page(_rest_job(5, 3), count=5), previous=_PAGE_2),
    ]
    assert [job.job_id for job in job_records(pages)] == ["1", "2", "3", "4", "5"]


def test_a_parser_keeps_its_memory_over_a_partial_listing() -> None:
    """A partial listing read by the daemon's parser leaves the last good records as they were."""
    parser = JobStatusParser()
    good = parser.records(_page(_rest_job(1, 1), _rest_job(2, 1)))
    with pytest.raises(JobStatusError):
        parser.records(_page(_rest_job(1, 1, "new"), count=2, next=_PAGE_2))
    again = parser.records(_page(_rest_job(1, 1), _rest_job(2, 1)))
    assert all(map(lambda a, b: a is b, good, again))


@pytest.mark.parametrize(
    ("state", "stage", "read"),
    [
        ("Completed", "annotation", ("completed", "annotation")),
        ("completed ", "annotation", ("completed", "annotation")),
        ("IN  Progress", "annotation", ("in progress", "annotation")),
        ("completed", "Acceptance", ("completed", "acceptance")),
    ],
)
def test_a_known_state_in_other_spelling_is_read_as_cvat_spells_it_with_a_warning(
    caplog: pytest.LogCaptureFixture, state: str, stage: str, read: tuple[str, str]
) -> None:
    """``"Completed"`` or ``"completed "`` is not silently "not done" (a reopen out of nowhere): it is
    read as ``completed``, with a warning naming the file, the record and the job."""
    with caplog.at_level(logging.WARNING, logger="cvat_watch.jobstatus"):
        (job,) = job_records(_page(_rest_job(7, 1, state, stage=stage)), path="/data/j.json")
    assert (job.state, job.stage) == read
    (record,) = caplog.records
    assert record.getMessage().startswith("/data/j.json:results[0]: job 7: reading ")
    assert repr(state if state != read[0] else stage) in record.getMessage()


def test_a_respelled_state_is_reported_once_per_parser(caplog: pytest.LogCaptureFixture) -> None:
    """The daemon re-reads the file on every change: the same oddly spelled record warns once."""
    parser = JobStatusParser()
    with caplog.at_level(logging.WARNING, logger="cvat_watch.jobstatus"):
        for other in ("new", "in progress", "completed"):
            document = _page(_rest_job(7, 1, "Completed"), _rest_job(8, 2, other))
            records = parser.parse(json.dumps(document), path="j.json")
            assert records[0].state == "completed"
    assert len(caplog.records) == 1


def test_an_unknown_state_is_kept_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A state no spelling of a known one (a future CVAT's) passes through for the model to judge."""
    with caplog.at_level(logging.WARNING, logger="cvat_watch.jobstatus"):
        (job,) = job_records([_rest_job(1, 1, "Archived")])
    assert job.state == "Archived"
    assert caplog.records == []


def test_control_characters_in_a_respelled_record_are_escaped_in_the_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job id or file name with a newline or bidi override cannot forge a log line."""
    with caplog.at_level(logging.WARNING, logger="cvat_watch.jobstatus"):
        job_records([_rest_job("7\nforged\u202e", 1, "Completed")], path="/data/j\x85.json")
    message = caplog.records[0].getMessage()
    assert "\n" not in message and "\u202e" not in message and "\x85" not in message
    assert "7\\nforged\\u202e" in message and "j\\x85.json" in message


def test_complete_listing_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """A page whose results are the whole listing is read silently."""
    with caplog.at_level(logging.DEBUG, logger="cvat_watch.jobstatus"):
        job_records(_page(_rest_job(1, 1), _rest_job(2, 1)))
    assert caplog.records == []


# -- refusals --------------------------------------------------------------------------------------


def test_invalid_json_gives_line_and_column() -> None:
    """Malformed JSON is refused with json's line and column as the place."""
    error = _error('[\n  {"id": 1,\n    oops: 2}\n]\n')
    assert error.where == "line 3 column 5"
    assert error.path == "/data/job_status.json"
    assert "invalid JSON" in error.message
    assert str(error).startswith("/data/job_status.json:line 3 column 5: invalid JSON")


def test_half_written_file_is_called_truncated() -> None:
    """A file cut off by a writer that has not finished is reported as truncated JSON."""
    full = json.dumps(_page(_rest_job(1, 1), _rest_job(2, 1)), indent=2)
    error = _error(full[: len(full) // 2])
    assert "truncated JSON" in error.message
    assert error.where is not None and error.where.startswith("line ")


def test_every_prefix_of_a_document_is_truncated_or_empty() -> None:
    """Cut anywhere, a job-status document reads as truncated (or empty), never as some other error."""
    full = json.dumps(
        [_rest_job(1, 1, assignee={"username": 'a\u00e9\\"\ud83d\ude00'}, stage=None), {"job_id": -12.5e3}],
        ensure_ascii=True,
    )
    for end in range(len(full)):
        error = _error(full[:end])
        assert "truncated JSON" in error.message or "empty file" in error.message, (end, full[:end])


@pytest.mark.parametrize("data", [b"", b"   \n\t ", "", "\ufeff"])
def test_empty_file(data: bytes | str) -> None:
    """An empty (or blank) file is refused as possibly mid-write."""
    error = _error(data)
    assert error.message == "empty file: the exporter may be mid-write"
    assert error.path == "/data/job_status.json"


def test_invalid_utf8_names_the_byte() -> None:
    """Bytes that are not UTF-8 are refused with the offset of the first bad byte."""
    error = _error(b'[{"id": 1, "task_id": 2, "state": "caf\xe9"}]')
    assert "invalid UTF-8" in error.message
    assert error.where == "byte 38"


@pytest.mark.parametrize(
    ("document", "found"),
    [
        ({"count": 1, "jobs": []}, "an object without 'results'"),
        (12, "a number"),
        ("jobs", "a string"),
        (None, "null"),
        (True, "a boolean"),
    ],
)
def test_wrong_top_level_shape(document: object, found: str) -> None:
    """Anything but a list or a page is refused, saying what was found instead."""
    error = _error(json.dumps(document))
    assert error.message == f"expected a list of jobs or a CVAT page with 'results'; found {found}"
    assert error.where is None


@pytest.mark.parametrize(
    ("document", "where", "message"),
    [
        (_page(_rest_job(1, 1), 5), "results[1]", "job record is a number, not an object"),
        ([_rest_job(1, 1), [1, 2]], "[1]", "job record is a list, not an object"),
        (
            [_page(_rest_job(1, 1)), _page(_rest_job(2, 1), "x")],
            "pages[1].results[1]",
            "job record is a string, not an object",
        ),
        ({"results": {"id": 1}}, "results", "'results' must be a list of jobs, not an object"),
        (
            [_page(), {"id": 1}],
            "pages[1]",
            "expected a CVAT page with 'results' like pages[0], found an object",
        ),
    ],
)
def test_records_that_are_not_jobs(document: object, where: str, message: str) -> None:
    """A record or a results value of the wrong kind is refused at its place."""
    error = _error(json.dumps(document))
    assert (error.where, error.message) == (where, message)


def _without(key: str, **extra: Any) -> dict[str, Any]:
    job = _rest_job(3, 1, **extra)
    del job[key]
    return job


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (_without("id"), "job record has no 'id' (or 'job_id')"),
        (_rest_job(3, 1, id=None), "job record has no 'id' (or 'job_id')"),
        ({"job_id": None, "task_id": 1, "state": "new"}, "job record has no 'job_id'"),
        (_without("task_id"), "job record has no 'task_id'"),
        (_without("state"), "job record has no 'state'"),
        (_rest_job(3, 1, state=None), "job record has no 'state'"),
        (_rest_job(3, 1, id=""), "'id' must be a non-empty string or an integer, not a string"),
        (_rest_job(3, 1, id=3.0), "'id' must be a non-empty string or an integer, not a number"),
        (_rest_job(3, True), "'task_id' must be a non-empty string or an integer, not a boolean"),
        (_rest_job(3, 1, state=2), "'state' must be a string, not a number"),
        (_rest_job(3, 1, stage=["a"]), "'stage' must be a string or null, not a list"),
        (_rest_job(3, 1, type={}), "'type' must be a string or null, not an object"),
        (_rest_job(3, 1, updated_date=17), "'updated_date' must be a string or null, not a number"),
        (
            {"job_id": 3, "task_id": 1, "state": "new", "updated": False},
            "'updated' must be a string or null, not a boolean",
        ),
        (
            {"job_id": 3, "task_id": 1, "state": "new", "task_name": 5},
            "'task_name' must be a string or null, not a number",
        ),
        (_rest_job(3, 1, assignee=7), "'assignee' must be null, a username or a user object, not a number"),
        (_rest_job(3, 1, assignee={"username": 7}), "'assignee.username' must be a string, not a number"),
    ],
)
@pytest.mark.parametrize(
    ("wrap", "where"),
    [
        (lambda record: _page(_rest_job(1, 1), _rest_job(2, 1), _rest_job(4, 2), record), "results[3]"),
        (lambda record: [_rest_job(1, 1)] * 5 + [record], "[5]"),
        (
            lambda record: [_page(_rest_job(1, 1)), _page(_rest_job(2, 1), _rest_job(4, 1), record)],
            "pages[1].results[2]",
        ),
    ],
)
def test_unusable_record_names_key_and_place(
    record: dict[str, Any], message: str, wrap: Any, where: str
) -> None:
    """A record without a usable id, task id or state (or with a mistyped field) is refused at its place."""
    error = _error(json.dumps(wrap(record)))
    assert (error.where, error.message) == (where, message)
    assert str(error) == f"/data/job_status.json:{where}: {message}"


def test_deeply_nested_json_is_refused() -> None:
    """JSON nested deeper than the parser allows is a JobStatusError, not a RecursionError."""
    error = _error("[" * 200_000 + "]" * 200_000)
    assert "nested too deeply" in error.message


@pytest.mark.parametrize(
    "text",
    [
        "[" * 200_000 + "]" * 200_000,
        '{"results": ' + "[" * 200_000 + "]" * 200_000 + "}",
        '[{"job_id": 1, "task_id": 1, "state": ' + "[" * 200_000 + "]" * 200_000 + "}]",
    ],
)
def test_deeply_nested_bytes_are_refused_by_the_daemons_parser(text: str) -> None:
    """The daemon's parser, given bytes (its raw-record path), refuses deep nesting as a JobStatusError too,
    also after a good version, so the daemon keeps its last good state instead of dying."""
    parser = JobStatusParser()
    parser.parse(b'[{"job_id": 1, "task_id": 1, "state": "new"}]')
    with pytest.raises(JobStatusError, match="nested too deeply"):
        parser.parse(text.encode())


def test_overlong_integer_is_refused() -> None:
    """An integer beyond Python's digit limit is a JobStatusError, not a bare ValueError."""
    error = _error('[{"id": ' + "9" * 5000 + ', "task_id": 1, "state": "new"}]')
    assert "invalid JSON" in error.message


def test_overlong_integer_in_a_built_document_is_refused() -> None:
    """A document built in code with an id too long to print is a JobStatusError at the record."""
    with pytest.raises(JobStatusError) as caught:
        job_records([{"id": 10**5000, "task_id": 1, "state": "new"}])
    assert caught.value.where == "[0]"


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is a JobStatusError naming the path."""
    with pytest.raises(JobStatusError) as caught:
        load_job_status(tmp_path / "nope.json")
    assert caught.value.path == str(tmp_path / "nope.json")
    assert "no such job-status file" in str(caught.value)


def test_directory(tmp_path: Path) -> None:
    """A directory where the file should be is a JobStatusError naming the path."""
    with pytest.raises(JobStatusError) as caught:
        load_job_status(tmp_path)
    assert caught.value.path == str(tmp_path)
    assert "is a directory" in caught.value.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    """A file we may not read is a JobStatusError naming the path."""
    path = _write(tmp_path, [])
    path.chmod(0)
    with pytest.raises(JobStatusError) as caught:
        load_job_status(path)
    assert caught.value.path == str(path)


def test_unreadable_path_for_any_user(tmp_path: Path) -> None:
    """A path through a regular file (ENOTDIR) is a JobStatusError naming it, even for root."""
    path = _write(tmp_path, []) / "job_status.json"
    with pytest.raises(JobStatusError) as caught:
        load_job_status(path)
    assert caught.value.path == str(path)
    assert "cannot read" in caught.value.message


def test_path_with_nul_byte() -> None:
    """A path the operating system cannot take is a JobStatusError, not a ValueError."""
    with pytest.raises(JobStatusError):
        load_job_status("job\0status.json")


# -- any input at all ------------------------------------------------------------------------------

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json_values = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten, any JSON scalar otherwise, so that records often get through."""
    return st.integers(0, 9).flatmap(lambda n: _json_scalars if n == 0 else valid)


_ids = _mostly(st.integers(1, 6) | st.sampled_from(["1", "2", "7"]))
_texts = _mostly(st.none() | st.sampled_from(["new", "completed", "in progress", "annotation", "acceptance"]))
_users = _mostly(st.none() | st.just("alice") | st.fixed_dictionaries({"username": _texts}))
# Records built from the keys the reader looks at: some valid, some repeated, some broken.
_near_jobs = st.fixed_dictionaries(
    {"id": _ids, "task_id": _ids, "state": _mostly(st.sampled_from(["new", "completed", "rejected"]))},
    optional={
        "job_id": _ids,
        "stage": _texts,
        "type": _texts,
        "assignee": _users,
        "updated": _texts,
        "updated_date": _texts,
        "task_name": _texts,
    },
)
_near_documents = (
    st.lists(_near_jobs, max_size=5)
    | st.builds(lambda results: {"results": results}, _mostly(st.lists(_near_jobs, max_size=5)))
    | st.lists(st.builds(lambda results: {"results": results}, st.lists(_near_jobs, max_size=3)), max_size=3)
)


def _only_records_or_refusal(read: Any, *args: Any) -> None:
    try:
        records = read(*args)
    except JobStatusError as error:
        assert error.message
        # The cheap check and the diagnosis must agree on what is wrong with a record.
        assert error.message != "job record is not usable"
    else:
        assert isinstance(records, tuple)
        assert all(isinstance(job, JobStatus) for job in records)
        assert all(type(job.job_id) is str and type(job.task_id) is str for job in records)
        assert len({job.job_id for job in records}) == len(records)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_records_or_job_status_error(data: bytes) -> None:
    """Any bytes at all give a tuple of records or a JobStatusError, never another exception."""
    _only_records_or_refusal(parse_job_status, data)


@settings(max_examples=300, deadline=None)
@given(_json_values | _near_documents)
def test_arbitrary_json_gives_records_or_job_status_error(document: object) -> None:
    """Any JSON value, decoded or as text, gives a tuple of records or a JobStatusError."""
    _only_records_or_refusal(job_records, document)
    _only_records_or_refusal(parse_job_status, json.dumps(document))


@settings(max_examples=200, deadline=None)
@given(st.lists(_near_jobs, max_size=6))
def test_near_job_records_read_consistently(records: list[dict[str, Any]]) -> None:
    """Decoded and serialised forms of the same records give the same outcome."""

    def outcome(read: Any, arg: Any) -> object:
        try:
            return read(arg)
        except JobStatusError as error:
            return (error.where, error.message)

    assert outcome(job_records, records) == outcome(parse_job_status, json.dumps(records))


# -- real files ------------------------------------------------------------------------------------


@pytest.mark.skipif(not CORPUS_JOBS.exists(), reason="shared CVAT corpus not present")
def test_cvat_api_jobs_corpus() -> None:
    """CVAT's own GET /api/jobs sample reads as 27 jobs, 2 of them ground truth, ids as strings."""
    records = load_job_status(CORPUS_JOBS)
    raw = json.loads(CORPUS_JOBS.read_bytes())["results"]
    assert len(records) == 27
    assert sum(job.type == "ground_truth" for job in records) == 2
    assert [job.job_id for job in records] == [str(job["id"]) for job in raw]
    assert all(isinstance(job.job_id, str) and isinstance(job.task_id, str) for job in records)
    assert {job.assignee for job in records} <= {None} | {
        job["assignee"]["username"] for job in raw if job["assignee"]
    }
    first = records[0]
    assert (first.job_id, first.task_id, first.state, first.stage, first.updated) == (
        "34",
        "25",
        "new",
        "annotation",
        "2024-07-15T15:34:53.594000Z",
    )


def test_example_job_status() -> None:
    """The bundled example is a CVAT page: tasks 11 and 13 completed, task 12 in progress."""
    records = load_job_status(EXAMPLE)
    assert [(job.job_id, job.task_id, job.state, job.assignee) for job in records] == [
        ("21", "11", "completed", "maria"),
        ("22", "11", "completed", "maria"),
        ("23", "12", "in progress", None),
        ("24", "13", "completed", "jonas"),
    ]
    document = json.loads(EXAMPLE.read_bytes())
    assert document["count"] == len(document["results"]) == 4


@pytest.mark.skipif(not EXAMPLE_EXPORT.exists(), reason="the example export is not there yet")
def test_example_job_status_matches_the_example_export() -> None:
    """Every job of the example export's segments has a record for the same task, and nothing else does."""
    tree = ElementTree.parse(EXAMPLE_EXPORT)
    segments = {
        (segment.findtext("url") or "").rsplit("/", 1)[-1]: task.findtext("id")
        for task in tree.iter("task")
        for segment in task.iter("segment")
    }
    assert {job.job_id: job.task_id for job in load_job_status(EXAMPLE)} == segments


# -- one file, version after version ---------------------------------------------------------------


def _fresh(data: str) -> object:
    """What parse_job_status makes of ``data``: the records, or the error's place and message."""
    try:
        return parse_job_status(data)
    except JobStatusError as error:
        return (error.where, error.message)


def _parsed(parser: JobStatusParser, data: str | bytes) -> object:
    try:
        return parser.parse(data)
    except JobStatusError as error:
        return (error.where, error.message)


# Values a record of next-cvat's flat list may hold, mostly valid ones, sometimes ones that equal a
# valid id without being one (true == 1, 1.0 == 1) or that are refused.
def _rarely(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.integers(0, 19).flatmap(lambda n: invalid if n == 0 else valid)


_flat_ids = _rarely(st.sampled_from([1, 2, 3, "1", "2", "x"]), st.sampled_from([True, 1.0, None, ""]))
_flat_texts = _rarely(st.sampled_from([None, "new", "completed", "annotation", "acceptance"]), st.just(3))
_flat_fields = {
    "job_id": _flat_ids,
    "id": _flat_ids,
    "task_id": _flat_ids,
    "stage": _flat_texts,
    "task_name": _flat_texts,
    "state": _rarely(st.sampled_from(["new", "completed"]), st.sampled_from([None, 3])),
    "type": st.sampled_from([None, "annotation", "ground_truth"]),
    "assignee": _rarely(st.sampled_from([None, "ann", {"username": "bob"}]), st.just({"username": 5})),
    "updated": _flat_texts,
    "updated_date": _flat_texts,
    "unread": st.integers(0, 2),
}


@st.composite
def _versions(draw: st.DrawFn) -> list[str]:
    """Successive texts of one job-status file: records with one set of keys, then edits of them."""
    keys = ["job_id" if draw(st.booleans()) else "id", "task_id", "state"]
    keys += draw(st.lists(st.sampled_from(sorted(set(_flat_fields) - set(keys))), unique=True, max_size=3))

    def record() -> dict[str, Any]:
        return {key: draw(_flat_fields[key]) for key in keys}

    records = [record() for _ in range(draw(st.integers(1, 6)))]
    page = draw(st.booleans())
    texts = [json.dumps({"results": records} if page else records)]
    for _ in range(draw(st.integers(1, 5))):
        edit = draw(st.sampled_from(["value", "value", "key", "key", "unkey", "insert", "remove", "same"]))
        place = draw(st.integers(0, len(records) - 1))
        if edit == "value":
            key = draw(st.sampled_from(keys))
            records[place][key] = draw(_flat_fields[key])
        elif edit == "key":
            key = draw(st.sampled_from(sorted(_flat_fields)))
            records[place][key] = draw(_flat_fields[key])
        elif edit == "unkey" and records[place]:
            del records[place][draw(st.sampled_from(sorted(records[place])))]
        elif edit == "insert":
            records.insert(place, record())
        elif edit == "remove" and len(records) > 1:
            del records[place]
        texts.append(json.dumps({"results": records} if page else records))
    return texts


@settings(max_examples=300, deadline=None)
@given(_versions())
def test_a_parser_reads_every_version_as_a_fresh_parse_would(texts: list[str]) -> None:
    """Version after version, a JobStatusParser gives the records (or the error) of parse_job_status,
    whether it is given text or bytes (which take the path that compares raw records)."""
    parser = JobStatusParser()
    of_bytes = JobStatusParser()
    for text in texts:
        expected = _fresh(text)
        assert _parsed(parser, text) == expected
        assert _parsed(of_bytes, text.encode()) == expected


@settings(max_examples=100, deadline=None)
@given(_versions())
def test_a_parser_of_decoded_documents_reads_like_job_records(texts: list[str]) -> None:
    """JobStatusParser.records on decoded documents agrees with job_records, version after version."""
    parser = JobStatusParser()
    for text in texts:
        document = json.loads(text)
        try:
            expected: object = job_records(document)
        except JobStatusError as error:
            expected = (error.where, error.message)
        try:
            got: object = parser.records(document)
        except JobStatusError as error:
            got = (error.where, error.message)
        assert got == expected


@pytest.mark.parametrize("given", ["text", "bytes"])
@pytest.mark.parametrize("shape", ["flat", "rest"])
def test_unchanged_records_come_back_as_the_same_objects(shape: str, given: str) -> None:
    """A record whose values did not change gives the same JobStatus object, also after records were
    added or removed before it; a changed record gives a new one."""
    if shape == "flat":
        records = [{"job_id": n, "task_id": "1", "state": "new", "assignee": None} for n in range(100)]
    else:
        records = [_rest_job(n, 1, "new") for n in range(100)]
    parser = JobStatusParser()

    def parse() -> tuple[JobStatus, ...]:
        text = json.dumps(records)
        return parser.parse(text.encode() if given == "bytes" else text)

    first = parse()
    records[2]["state"] = "completed"
    if shape == "rest":
        records[4]["url"] = "http://elsewhere/"  # not read: the job stays the same
    second = parse()
    assert second == parse_job_status(json.dumps(records))
    assert [index for index, (a, b) in enumerate(zip(first, second, strict=True)) if a is not b] == [2]
    assert parse() is second or given == "text"  # unchanged bytes: the same result, nothing decoded
    del records[0]
    third = parse()
    assert third == parse_job_status(json.dumps(records))
    assert all(job is second[index + 1] for index, job in enumerate(third))
    records.insert(50, records[0] | {"job_id" if shape == "flat" else "id": 100})
    fourth = parse()
    assert fourth == parse_job_status(json.dumps(records))
    assert all(job is third[index] for index, job in enumerate(fourth[:50]))
    assert all(job is third[index + 50] for index, job in enumerate(fourth[51:]))
    assert fourth[50] not in third


@pytest.mark.parametrize("shape", ["flat", "rest"])
def test_identical_repeats_are_read_once_after_records_moved(shape: str) -> None:
    """Records matched by their values after a shift still give one job per id when a job is repeated."""
    if shape == "flat":
        records = [{"job_id": n, "task_id": "1", "state": "new"} for n in range(100)]
    else:
        records = [_rest_job(n, 1, "new") for n in range(100)]
    parser = JobStatusParser()
    parser.parse(json.dumps(records))
    records = [*records[50:], *records[:50], dict(records[0]), dict(records[1])]
    assert parser.parse(json.dumps(records)) == parse_job_status(json.dumps(records))
    records = [*records[1:], records[0]]  # the same count, every place shifted
    assert parser.parse(json.dumps(records)) == parse_job_status(json.dumps(records))


@pytest.mark.parametrize("value", [True, 1.0])
@pytest.mark.parametrize("key", ["job_id", "task_id"])
def test_a_value_equal_to_an_id_is_still_refused(key: str, value: object) -> None:
    """true and 1.0 equal the id 1 they replace, yet are refused as ids, as a fresh parse refuses them."""
    records = [{"job_id": 1, "task_id": 1, "state": "new"}, {"job_id": 2, "task_id": 1, "state": "new"}]
    parser = JobStatusParser()
    parser.parse(json.dumps(records))
    records[0][key] = value
    with pytest.raises(JobStatusError, match=f"'{key}' must be a non-empty string or an integer") as caught:
        parser.parse(json.dumps(records))
    assert caught.value.where == "[0]"


def test_a_failed_parse_keeps_the_memory_of_the_last_good_one() -> None:
    """After a file that fails, the next good one still gets the unchanged jobs of the last good one back."""
    records = [{"job_id": n, "task_id": "1", "state": "new"} for n in range(1, 4)]
    parser = JobStatusParser()
    first = parser.parse(json.dumps(records))
    with pytest.raises(JobStatusError, match="truncated"):
        parser.parse(json.dumps(records)[:-5])
    records[1]["state"] = "completed"
    second = parser.parse(json.dumps(records))
    assert (second[0] is first[0], second[1] is first[1], second[2] is first[2]) == (True, False, True)
    parser.forget()
    assert all(a is not b for a, b in zip(parser.parse(json.dumps(records)), second, strict=True))


@settings(max_examples=200, deadline=None)
@given(_versions())
def test_a_first_parse_in_small_batches_reads_as_a_fresh_parse_would(texts: list[str]) -> None:
    """The first parse of split bytes decodes a batch of records at a time; with batches of two, a
    document whose records are uniform in one batch and not in another, or fail in a later batch,
    still gives the records (or the error) of parse_job_status, and so do the versions after it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobstatus, "_BATCH", 2)
        parser = JobStatusParser()
        for text in texts:
            assert _parsed(parser, text.encode()) == _fresh(text)


def test_a_first_parse_keeps_each_repeated_string_once() -> None:
    """next-cvat's flat list repeats task ids and names, states and stages in every job of a task:
    the first parse keeps one object per distinct value (its memory at 500,000 jobs), in any batch."""
    records = [
        {
            "task_id": str(task),
            "job_id": job,
            "task_name": f"task {task}",
            "state": "new",
            "stage": "annotation",
        }
        for task in range(1, 4)
        for job in range(task * 10, task * 10 + 3)
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jobstatus, "_BATCH", 2)
        jobs = JobStatusParser().parse(json.dumps(records).encode())
    assert jobs == parse_job_status(json.dumps(records))
    assert len({id(job.task_name) for job in jobs}) == 3
    assert len({id(job.task_id) for job in jobs}) == 3
    assert len({id(job.state) for job in jobs}) == len({id(job.stage) for job in jobs}) == 1
