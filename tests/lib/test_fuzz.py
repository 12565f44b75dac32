"""Fuzzing the two readers of untrusted files: whatever the bytes, a model or our own error.

``cvatxml.loads``/``loads_summary`` may only return a model or raise ``AnnotationsError``;
``jobstatus.parse_job_status`` may only return records or raise ``JobStatusError``. Inputs are raw
bytes, and mutations of the real example files: flipped, inserted and deleted bytes, cuts at
random points, and spliced-in hostile tokens (``<!DOCTYPE``, entities, deep nesting, bad
UTF-8). Two big adversarial inputs run in a child process under a memory cap and a timeout.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from cvat_watch import cvatxml, jobstatus
from cvat_watch.errors import AnnotationsError, JobStatusError
from cvat_watch.model import Annotations, ExportSummary, JobStatus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_XML = (ROOT / "config" / "example" / "annotations.xml").read_bytes()
EXAMPLE_JOBS = (ROOT / "config" / "example" / "job_status.json").read_bytes()
XML_PATH = "/exports/street/annotations.xml"
JOBS_PATH = "/exports/street/job_status.json"

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

XML_TOKENS = [
    b'<!DOCTYPE annotations [<!ENTITY a "aaaaaaaaaa">]>',
    b'<!DOCTYPE annotations [<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>',
    b'<!DOCTYPE annotations SYSTEM "http://127.0.0.1:9/cvat.dtd">',
    b'<!DOCTYPE x [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>',
    b'<!ENTITY e SYSTEM "file:///etc/passwd">',
    b"<!DOCTYPE",
    b"&",
    b"&a;",
    b"&b;",
    b"&e;",
    b"&amp;",
    b"&#0;",
    b"&#x110000;",
    b"&#65;",
    b"&#xD800;",
    b"<![CDATA[",
    b"]]>",
    b"<!--",
    b"-->",
    b"<?pi data?>",
    b"<?xml version='1.0'?>",
    b"<",
    b">",
    b"/>",
    b"</",
    b'"',
    b"'",
    b"=",
    b" ",
    b"\n",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xe2\x82",
    b"\xef\xbb\xbf",
    b"\xfe\xff",
    b"\xed\xa0\x80",
    b'xmlns:x="urn:x"',
    b"<x:y/>",
    b"<a:b xmlns:a='u'/>",
    b"<image/>",
    b"<track/>",
    b"<box/>",
    b"<meta/>",
    b"<task/>",
    b"<segment/>",
    b"</annotations>",
    b' id=""',
    b' id="x"',
    b' width="-1"',
    b' frame="1e400"',
    b' points="nan,inf;1"',
    b' label=""',
    b' occluded="2"',
    b' rle="1, 2, x"',
    b"99999999999999999999999999999999999999",
    b"-0",
    b"1e309",
    b"NaN",
]


def nested(depth: int) -> bytes:
    return b"<x>" * depth + b"</x>" * depth


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, tokens: list[bytes]) -> bytes:
    """``seed`` with 1 to 8 random edits: byte flips, hostile splices, deletions, cuts, nesting."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data)))
        operation = draw(
            st.sampled_from(["flip", "set", "token", "bytes", "delete", "truncate", "duplicate", "nest"])
        )
        if operation == "flip" and position < len(data):
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif operation == "token":
            data[position:position] = draw(st.sampled_from(tokens))
        elif operation == "bytes":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 64))]
        elif operation == "truncate":
            del data[position:]
        elif operation == "duplicate":
            length = draw(st.integers(1, 256))
            data[position:position] = data[position : position + length]
        elif operation == "nest":
            data[position:position] = nested(draw(st.integers(1, 3000)))
    return bytes(data)


xml_inputs = st.one_of(
    mutated(EXAMPLE_XML, XML_TOKENS),
    st.binary(max_size=512),
    st.lists(st.sampled_from(XML_TOKENS), max_size=40).map(b"".join),
    # A truncated prefix of the real export: what a reader sees while CVAT is still writing.
    st.integers(0, len(EXAMPLE_XML)).map(lambda cut: EXAMPLE_XML[:cut]),
)


def _check_xml(reader_result: object, expected: type) -> None:
    assert isinstance(reader_result, expected)


def _assert_annotations_error(error: AnnotationsError) -> None:
    assert error.path == XML_PATH
    text = str(error)
    assert text.startswith(XML_PATH)
    assert error.line is None or error.line >= 1
    assert "Traceback" not in text


@FUZZ
@given(xml_inputs)
def test_loads_gives_a_model_or_an_annotations_error(data: bytes) -> None:
    """cvatxml.loads on any bytes returns Annotations or raises AnnotationsError naming the file."""
    try:
        result = cvatxml.loads(data, path=XML_PATH)
    except AnnotationsError as error:
        _assert_annotations_error(error)
    else:
        _check_xml(result, Annotations)


@FUZZ
@given(xml_inputs)
def test_loads_summary_gives_a_summary_or_an_annotations_error(data: bytes) -> None:
    """cvatxml.loads_summary (the daemon's reader) on any bytes returns a summary or raises AnnotationsError."""
    try:
        result = cvatxml.loads_summary(data, path=XML_PATH)
    except AnnotationsError as error:
        _assert_annotations_error(error)
    else:
        _check_xml(result, ExportSummary)


@FUZZ
@given(mutated(EXAMPLE_XML, XML_TOKENS))
def test_summary_and_full_reader_agree_on_what_is_valid(data: bytes) -> None:
    """For mutated exports, the summary reader refuses exactly what the full reader refuses (or less)."""
    try:
        cvatxml.loads_summary(data, path=XML_PATH)
    except AnnotationsError:
        summary_ok = False
    else:
        summary_ok = True
    try:
        cvatxml.loads(data, path=XML_PATH)
    except AnnotationsError:
        full_ok = False
    else:
        full_ok = True
    # The summary skips shape values, so it may accept more; it must never refuse a valid file.
    assert summary_ok or not full_ok


JSON_TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"\\u",
    b"\\ud800",
    b"null",
    b"true",
    b"-",
    b"1e400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"9" * 5000,
    b'"results"',
    b'"id"',
    b'"task_id"',
    b'"state"',
    b'"assignee"',
    b'{"username": 5}',
    b"[" * 3000,
    b"{" * 50,
    b"\xff",
    b"\xef\xbb\xbf",
    b"\x00",
    b"\xc3",
    b'"\xed\xa0\x80"',
    b"[{}]",
    b'{"results": {}}',
    b'[{"results": []}, 1]',
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "job_id",
                    "task_id",
                    "state",
                    "stage",
                    "type",
                    "assignee",
                    "username",
                    "results",
                    "count",
                    "next",
                    "updated_date",
                    "x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=30,
)

jobs_inputs = st.one_of(
    mutated(EXAMPLE_JOBS, JSON_TOKENS),
    st.binary(max_size=512),
    st.lists(st.sampled_from(JSON_TOKENS), max_size=30).map(b"".join),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(0, len(EXAMPLE_JOBS)).map(lambda cut: EXAMPLE_JOBS[:cut]),
)


@FUZZ
@given(jobs_inputs)
def test_parse_job_status_gives_records_or_a_job_status_error(data: bytes) -> None:
    """jobstatus.parse_job_status on any bytes returns JobStatus records or raises JobStatusError naming the file."""
    try:
        records = jobstatus.parse_job_status(data, path=JOBS_PATH)
    except JobStatusError as error:
        assert error.path == JOBS_PATH
        assert str(error).startswith(JOBS_PATH)
    else:
        assert isinstance(records, tuple)
        assert all(isinstance(record, JobStatus) for record in records)


@FUZZ
@given(st.text(max_size=300) | json_values.map(json.dumps))
def test_parse_job_status_of_any_text_gives_records_or_a_job_status_error(text: str) -> None:
    """jobstatus.parse_job_status also accepts str: any text gives records or JobStatusError."""
    try:
        records = jobstatus.parse_job_status(text, path=JOBS_PATH)
    except JobStatusError as error:
        assert error.path == JOBS_PATH
    else:
        assert all(isinstance(record, JobStatus) for record in records)


# -- hang and memory guard ------------------------------------------------------------------------

# Address space for the child: the interpreter with cvat_watch imported takes a few hundred MB of
# it; a reader that copied a 50 MB value a dozen times, or blew up a nesting, would hit the cap.
MEMORY_CAP = 1536 * 1024 * 1024
CHILD = r"""
import json, resource, sys, time
from cvat_watch import cvatxml
from cvat_watch.errors import AnnotationsError

kind = sys.argv[1]
if kind == "nested-root":
    data = b"<annotations><version>1.1</version>" + b"<x>" * 100_000 + b"</x>" * 100_000 + b"</annotations>"
elif kind == "nested-meta":
    data = b"<annotations><meta>" + b"<x>" * 100_000 + b"</x>" * 100_000 + b"</meta></annotations>"
elif kind == "nested-image":
    data = (b'<annotations><image id="0" name="a" width="1" height="1">'
            + b"<x>" * 100_000 + b"</x>" * 100_000 + b"</image></annotations>")
elif kind == "nested-unclosed":
    data = b"<annotations>" + b"<x>" * 300_000
elif kind == "attribute":
    data = (b'<annotations><version>1.1</version><image id="0" name="' + b"a" * (50 << 20)
            + b'" width="1" height="1"/></annotations>')
elif kind == "text":
    data = b"<annotations><meta><task><name>" + b"\xc3\xa9" * (25 << 20) + b"</name></task></meta></annotations>"
else:
    raise SystemExit("unknown kind " + kind)
outcomes = {}
for reader in (cvatxml.loads_summary, cvatxml.loads):
    started = time.perf_counter()
    try:
        model = reader(data, path="/exports/big.xml")
        outcome = "model:" + type(model).__name__
    except AnnotationsError as error:
        outcome = "error:" + str(error)[:300]
    outcomes[reader.__name__] = [outcome, round(time.perf_counter() - started, 2)]
outcomes["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
outcomes["input_mib"] = len(data) >> 20
print(json.dumps(outcomes))
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _run_children(kinds: list[str], *, parallel: int = 2) -> dict[str, dict[str, object]]:
    """Run CHILD once per kind, ``parallel`` at a time, each under the memory cap; their reports."""
    results: dict[str, dict[str, object]] = {}
    running: dict[str, subprocess.Popen[bytes]] = {}
    waiting = list(kinds)
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                kind = waiting.pop(0)
                running[kind] = subprocess.Popen(
                    [sys.executable, "-c", CHILD, kind],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    # Only setrlimit runs between fork and exec; no thread of this test holds a lock it needs.
                    preexec_fn=_limit_memory,
                    cwd=ROOT,
                )
            kind, child = next(iter(running.items()))
            stdout, stderr = child.communicate(timeout=90)
            del running[kind]
            assert child.returncode == 0, f"{kind}: exit {child.returncode}\n{stderr.decode()[-2000:]}"
            results[kind] = json.loads(stdout)
    finally:
        for child in running.values():
            child.kill()
            child.wait(timeout=10)
    return results


def test_big_adversarial_inputs_end_cleanly_under_a_memory_cap() -> None:
    """100k-deep nesting, 300k unclosed elements, a 50 MB attribute and 50 MB of text end in a model or an AnnotationsError, in bounded time and memory."""
    results = _run_children(
        ["attribute", "nested-unclosed", "nested-root", "nested-meta", "nested-image", "text"]
    )
    for kind, report in results.items():
        for reader in ("loads_summary", "loads"):
            outcome, seconds = report[reader]  # type: ignore[misc]
            assert outcome.startswith(("model:", "error:/exports/big.xml")), (kind, reader, outcome)
            # ~2 s each with expat fed 1 MiB at a time; a long token costs expat 2.5 O(token² / chunk).
            assert seconds < 15, (kind, reader, seconds)
    assert str(results["nested-unclosed"]["loads_summary"]).startswith("['error:")


def test_unclosed_nesting_costs_memory_in_proportion_to_the_file() -> None:
    """300k unclosed elements (0.9 MB) must not need more than 50 times their size in memory."""
    (report,) = _run_children(["nested-unclosed"]).values()
    baseline = _run_children(["nested-image"])["nested-image"]["peak_rss_mib"]
    grown = int(report["peak_rss_mib"]) - int(baseline)  # type: ignore[call-overload]
    assert grown < 50, f"{grown} MiB for a 0.9 MB file"


@pytest.mark.parametrize("depth", [500, 100_000])
def test_deep_nesting_is_refused_or_gives_a_model_that_compares_hashes_and_converts(depth: int) -> None:
    """An export whose <meta> holds deeply nested unknown elements is refused, or its model supports ==, hash, to_dict and dumps."""
    data = b"<annotations><version>1.1</version><meta>" + nested(depth) + b"</meta></annotations>"
    try:
        annotations = cvatxml.loads(data, path=XML_PATH)
    except AnnotationsError as error:
        assert error.line == 1 and error.column is not None
        return
    assert annotations == cvatxml.loads(data, path=XML_PATH)
    assert isinstance(hash(annotations), int)
    assert annotations.to_dict()["version"] == "1.1"
    assert cvatxml.loads(cvatxml.dumps(annotations)) == annotations
