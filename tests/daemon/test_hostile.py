"""Hostile files: entity bombs, external entities, DTDs, deep nesting, huge values, wrong
encodings, and symlinks, FIFOs and directories in place of the watched files.

First the readers on their own (the export through ``cvatxml``, the job status through ``jobs``),
then the state machine of one watch (``WatchRunner`` on a real SQLite store), then the real
daemon in a subprocess with a real webhook receiver: every hostile file is refused with one
warning naming it, sends nothing, and the next valid change sends exactly the right event.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cvat_watch import cvatxml, jobstatus
from cvat_watch.config import WatchConfig
from cvat_watch.daemon.reload import WatchRunner
from cvat_watch.daemon.store import Store
from cvat_watch.errors import AnnotationsError, JobStatusError
from cvat_watch.testing.process import (
    EXAMPLE,
    DaemonProcess,
    NotifySocket,
    StateDatabase,
    Workspace,
    job_page,
    wait_until,
)
from cvat_watch.testing.receiver import Receiver, free_port

EXAMPLE_XML = (EXAMPLE / "annotations.xml").read_bytes()
EXAMPLE_JOBS = (EXAMPLE / "job_status.json").read_bytes()
DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>'
assert EXAMPLE_XML.startswith(DECLARATION)
BODY = EXAMPLE_XML[len(DECLARATION) :]

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE annotations [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotations><version>&lol9;</version></annotations>
"""
QUADRATIC = (
    b'<?xml version="1.0"?>\n<!DOCTYPE annotations [<!ENTITY a "'
    + b"x" * 50_000
    + b'">]>\n'
    + b"<annotations><version>"
    + b"&a;" * 50_000
    + b"</version></annotations>\n"
)
EXTERNAL_FILE = b"""<?xml version="1.0"?>
<!DOCTYPE annotations [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotations><version>1.1</version><meta><task><id>1</id><name>&xxe;</name></task></meta></annotations>
"""


def external_url(url: str) -> bytes:
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE annotations [<!ENTITY xxe SYSTEM "'
        + url.encode()
        + b'">]>\n<annotations><version>&xxe;</version></annotations>\n'
    )


def parameter_entity(url: str) -> bytes:
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE annotations [<!ENTITY % dtd SYSTEM "'
        + url.encode()
        + b'"> %dtd;]>\n<annotations/>\n'
    )


def dtd_alone(url: str) -> bytes:
    return b'<?xml version="1.0"?>\n<!DOCTYPE annotations SYSTEM "' + url.encode() + b'">\n'


def nested(depth: int) -> bytes:
    return b"<x>" * depth + b"</x>" * depth


def with_declaration(encoding: str) -> str:
    return f'<?xml version="1.0" encoding="{encoding}"?>' + BODY.decode()


UTF16 = with_declaration("utf-16").encode("utf-16")
UTF8_BOM = b"\xef\xbb\xbf" + EXAMPLE_XML
DEEP_IN_META = EXAMPLE_XML.replace(b"</meta>", nested(100_000) + b"</meta>", 1)
INVALID_UTF8 = EXAMPLE_XML.replace(b"drive-02", b"drive-\xff\xfe", 1)
# A UTF-16 file whose declaration still says UTF-8 (re-encoded without updating the header).
UTF16_STALE_DECLARATION = EXAMPLE_XML.decode().encode("utf-16")
UTF32 = with_declaration("utf-32").encode("utf-32")
NUL_BYTES = EXAMPLE_XML.replace(b"<version>", b"<version>\x00", 1)
UNKNOWN_ENCODING = with_declaration("x-no-such-codec").encode()
TASKLESS = b"<annotations>" + nested(200) + b"</annotations>"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def _refused(data: bytes, path: Path) -> AnnotationsError:
    """Both readers, from bytes and from the file, refuse ``data`` with the same error."""
    path.write_bytes(data)
    errors = []
    for read in (
        cvatxml.load,
        cvatxml.load_summary,
        lambda p: cvatxml.loads(data, path=p),
        lambda p: cvatxml.loads_summary(data, path=p),
    ):
        with pytest.raises(AnnotationsError) as caught:
            read(path)
        errors.append(caught.value)
    assert len({str(error) for error in errors}) == 1, [str(error) for error in errors]
    error = errors[0]
    assert error.path == str(path)
    assert str(error).startswith(f"{path}:")
    return error


def _parser_position(error: AnnotationsError) -> None:
    assert error.line is not None and error.line >= 1
    assert error.column is not None and error.column >= 1
    assert str(error).startswith(f"{error.path}:{error.line}:{error.column}: ")


# -- the export reader on its own ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "line"),
    [(BILLION_LAUGHS, 2), (QUADRATIC, 2), (EXTERNAL_FILE, 2)],
    ids=["billion-laughs", "quadratic-blowup", "external-file"],
)
def test_entity_declarations_are_refused_before_expansion(tmp_path: Path, data: bytes, line: int) -> None:
    """Entity bombs and a file:///etc/passwd entity are refused at the DTD, naming file, line and column."""
    error = _refused(data, tmp_path / "evil.xml")
    _parser_position(error)
    assert error.line == line
    assert "refused a DTD" in str(error)
    assert "root:" not in str(error) and "lol" not in str(error).replace("lolz", "")


@pytest.mark.parametrize(
    "make",
    [external_url, parameter_entity, dtd_alone],
    ids=["external-entity", "parameter-entity", "dtd-alone"],
)
def test_network_references_are_refused_and_never_fetched(
    tmp_path: Path, receiver: Receiver, make: Callable[[str], bytes]
) -> None:
    """An external entity, a parameter entity or a DTD pointing at a live loopback server is refused and never fetched."""
    error = _refused(make(receiver.url("/evil.dtd")), tmp_path / "evil.xml")
    _parser_position(error)
    assert "refused a DTD" in str(error)
    assert receiver.requests == []


def test_network_reference_to_a_closed_port_is_refused_the_same_way(tmp_path: Path) -> None:
    """An external entity to a closed loopback port is refused as a DTD, not reported as a connection error."""
    error = _refused(external_url(f"http://127.0.0.1:{free_port()}/x"), tmp_path / "evil.xml")
    assert "refused a DTD" in str(error)
    assert "connect" not in str(error).lower()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (INVALID_UTF8, "invalid UTF-8: byte 0xff"),
        (UTF16_STALE_DECLARATION, ""),
        (UTF32, ""),
        (NUL_BYTES, "malformed XML"),
        (UNKNOWN_ENCODING, "encoding"),
        (b"<annotations>" + b"<x>" * 200_000, "nested more than 256 levels deep"),
    ],
    ids=["invalid-utf8", "utf16-declared-utf8", "utf32", "nul-byte", "unknown-encoding", "deep-unclosed"],
)
def test_undecodable_or_broken_files_name_file_line_and_column(
    tmp_path: Path, data: bytes, message: str
) -> None:
    """Bad bytes and encodings are an AnnotationsError with file, line and column, and no traceback text."""
    error = _refused(data, tmp_path / "bad.xml")
    _parser_position(error)
    assert message in str(error)
    assert "\n" not in str(error)


@pytest.mark.parametrize("data", [UTF16, UTF8_BOM], ids=["utf16", "utf8-bom"])
def test_other_unicode_encodings_read_the_same_as_utf8(tmp_path: Path, data: bytes) -> None:
    """A UTF-16 export (declared as such) and a UTF-8 export with a byte order mark read like the original."""
    path = tmp_path / "export.xml"
    path.write_bytes(data)
    assert cvatxml.load(path) == cvatxml.loads(EXAMPLE_XML)
    assert cvatxml.load_summary(path) == cvatxml.loads_summary(EXAMPLE_XML)


def test_deep_nesting_in_a_valid_export_is_read_in_bounded_time(tmp_path: Path) -> None:
    """100,000 nested unknown elements inside <meta> give the same tasks, or an AnnotationsError naming the place."""
    path = tmp_path / "deep.xml"
    path.write_bytes(DEEP_IN_META)
    try:
        summary = cvatxml.load_summary(path)
    except AnnotationsError as error:
        _parser_position(error)
    else:
        assert summary.tasks == cvatxml.loads_summary(EXAMPLE_XML).tasks


def test_huge_attribute_value_is_kept_whole(tmp_path: Path) -> None:
    """A 5 MB image name is read as it is (the 50 MB case runs under a memory cap in test_fuzz)."""
    name = "n" * (5 << 20)
    data = EXAMPLE_XML.replace(b'name="drive-01/frame_000000.jpg"', f'name="{name}"'.encode(), 1)
    assert data != EXAMPLE_XML
    path = tmp_path / "huge.xml"
    path.write_bytes(data)
    assert max(len(image.name) for image in cvatxml.load(path).images) == len(name)


# -- the job-status reader on its own -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[" * 100_000, "nested too deeply"),
        (EXAMPLE_JOBS.replace(b'"completed"', b'"compl\xffeted"', 1), "invalid UTF-8"),
        (EXAMPLE_JOBS.decode().encode("utf-16"), "invalid UTF-8"),
        (b'[{"id": NaN, "task_id": 1, "state": "completed"}]', "'id' must be"),
        (b'[{"id": ' + b"9" * 5000 + b', "task_id": 1, "state": "completed"}]', "invalid JSON"),
        (b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', "invalid JSON"),
    ],
    ids=["deep-nesting", "invalid-utf8", "utf16", "nan-id", "huge-integer", "xml-instead"],
)
def test_hostile_job_status_is_a_job_status_error_naming_the_file(
    tmp_path: Path, data: bytes, message: str
) -> None:
    """Deep nesting, bad encodings, NaN and overlong numbers in a job-status file are a JobStatusError naming it."""
    path = tmp_path / "job_status.json"
    path.write_bytes(data)
    for read in (jobstatus.load_job_status, lambda p: jobstatus.parse_job_status(data, path=p)):
        with pytest.raises(JobStatusError) as caught:
            read(path)
        assert caught.value.path == str(path)
        assert str(caught.value).startswith(str(path))
        assert message in str(caught.value)


def test_job_status_with_a_byte_order_mark_reads_like_without(tmp_path: Path) -> None:
    """A UTF-8 byte order mark in front of a job-status file changes nothing."""
    path = tmp_path / "job_status.json"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE_JOBS)
    assert jobstatus.load_job_status(path) == jobstatus.parse_job_status(EXAMPLE_JOBS)


# -- one watch: the reload state machine on real files and a real store -------------------------------


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[WatchRunner]:
    workspace = Workspace(tmp_path)
    store = Store.open(tmp_path / "state" / "cvat-watch.db")
    config = WatchConfig(name="w", annotations=workspace.annotations, job_status=workspace.job_status)
    runner = WatchRunner(config=config, store=store, targets=lambda _event: ["hook"])
    assert runner.reload(force=True).status == "committed"
    try:
        yield runner
    finally:
        store.close()


def _warnings(caplog: pytest.LogCaptureFixture, needle: str) -> int:
    return sum(
        needle in record.getMessage() for record in caplog.records if record.levelno == logging.WARNING
    )


def test_the_same_bad_file_is_reported_again_after_the_good_one_came_back(
    runner: WatchRunner, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad, then the unchanged good file, then the same bad file again: two warnings, and the watch is ok in between."""
    good = runner.config.annotations.read_bytes()
    caplog.set_level(logging.INFO, logger="cvat_watch")
    for expected in (1, 2):
        runner.config.annotations.write_bytes(BILLION_LAUGHS)
        assert runner.reload().status == "failed"
        assert _warnings(caplog, "refused a DTD") == expected
        runner.config.annotations.write_bytes(good)
        assert runner.reload().status == "unchanged"
        assert runner.last_error is None
    assert sum("files are valid again" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize(
    ("which", "data", "message"),
    [
        ("annotations", TASKLESS, "holds no task"),
        ("annotations", b"<annotations/>", "holds no task"),
        ("job_status", b"[]", "holds no job"),
        (
            "job_status",
            json.dumps({"count": 0, "next": None, "previous": None, "results": []}).encode(),
            "holds no job",
        ),
    ],
    ids=["deep-nesting-only", "empty-root", "empty-list", "empty-page"],
)
def test_a_file_emptied_of_every_task_or_job_keeps_the_last_good_state(
    runner: WatchRunner, caplog: pytest.LogCaptureFixture, which: str, data: bytes, message: str
) -> None:
    """A well-formed export without tasks, or a job list without jobs, neither reopens nor re-announces anything."""
    path: Path = getattr(runner.config, which)
    good = path.read_bytes()
    path.write_bytes(data)
    outcome = runner.reload()
    assert (outcome.status, outcome.events) == ("failed", ())
    assert outcome.error is not None and outcome.error.startswith(f"{path}: {message}")
    path.write_bytes(good)
    assert runner.reload().events == ()
    assert runner.reload(force=True).events == ()


def test_an_export_missing_some_tasks_does_not_make_their_return_a_new_completion(
    runner: WatchRunner,
) -> None:
    """An export without task 13 (completed), then the full export again: task 13 is not announced a second time."""
    path = runner.config.annotations
    good = path.read_bytes()
    without_13 = re.sub(rb"\s*<task>\s*<id>13</id>.*?</task>", b"", good, count=1, flags=re.DOTALL)
    assert b"<id>13</id>" not in without_13
    path.write_bytes(without_13)
    assert runner.reload().events == ()
    path.write_bytes(good)
    assert runner.reload().events == ()


def test_a_first_start_on_an_export_without_tasks_is_not_an_error(tmp_path: Path) -> None:
    """Without a baseline to protect, an export that has no task yet is recorded as it is."""
    workspace = Workspace(tmp_path)
    workspace.write(workspace.annotations, b"<annotations><version>1.1</version><meta/></annotations>")
    store = Store.open(tmp_path / "state" / "cvat-watch.db")
    try:
        config = WatchConfig(name="w", annotations=workspace.annotations, job_status=workspace.job_status)
        runner = WatchRunner(config=config, store=store, targets=lambda _event: ["hook"])
        assert runner.reload(force=True).status == "committed"
    finally:
        store.close()


# -- the real daemon --------------------------------------------------------------------------------

KEEPING = "keeping the last good state"


class _Scenario:
    """One daemon, one receiver, and a running list of the events that must have been sent."""

    def __init__(
        self, workspace: Workspace, receiver: Receiver, notify: NotifySocket, daemon: DaemonProcess
    ) -> None:
        self.workspace = workspace
        self.receiver = receiver
        self.notify = notify
        self.daemon = daemon
        self.expected: list[tuple[str, str]] = []
        self.task12_completed = False

    def warnings_about(self, path: Path, since: int) -> list[str]:
        return [
            line for line in self.daemon.log[since:].splitlines() if KEEPING in line and str(path) in line
        ]

    def hostile(self, path: Path, put: Callable[[], None], needle: str, *, position: bool = False) -> None:
        """Put a hostile file in place; wait for its one warning; check nothing was sent."""
        since = len(self.daemon.log)
        sent = len(self.receiver.requests)
        put()
        found = wait_until(
            lambda: [line for line in self.warnings_about(path, since) if needle in line],
            what=f"a warning containing {needle!r} naming {path}",
        )
        assert len(found) == 1, found
        if position:
            assert re.search(re.escape(str(path)) + r":\d+:\d+: ", found[0]), found[0]
        assert self.daemon.process.poll() is None
        assert len(self.receiver.requests) == sent
        self.restore_and_change(path, since)

    def accepted(self, path: Path, data: bytes) -> None:
        """Put a file that is valid in another form in place; it is read, and sends nothing."""
        since = len(self.daemon.log)
        statuses = self.notify.count("STATUS=")
        Workspace.write(path, data)
        self.notify.wait_for("STATUS=", count=statuses + 1)
        assert self.warnings_about(path, since) == []
        self.restore_and_change(path, since)

    def restore_and_change(self, path: Path, since: int) -> None:
        """Valid files again, with task 12 flipped: exactly that one event is sent."""
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        if path == self.workspace.annotations:
            Workspace.write(path, EXAMPLE_XML)
        self.task12_completed = not self.task12_completed
        state = "completed" if self.task12_completed else "in progress"
        self.workspace.write_jobs({"21": "completed", "22": "completed", "23": state})
        self.expected.append(("task.completed" if self.task12_completed else "task.reopened", "12"))
        requests = self.receiver.wait_for(len(self.expected), timeout=10)
        assert [(e["type"], e["task"]["id"]) for e in map(_event, requests)] == self.expected
        assert "Traceback" not in self.daemon.log[since:]


# A job id that carries a whole log line: quoted in the error, it must not become a line of its own.
_FORGED_ID = "7\n2026-01-01 00:00:00,000 ERROR cvat_watch.daemon.service: FORGED entry"
FORGED_LOG_LINE = json.dumps(
    [
        {"id": _FORGED_ID, "task_id": 11, "state": "completed"},
        {"id": _FORGED_ID, "task_id": 11, "state": "rejected"},
    ]
).encode()


def _event(request: object) -> dict:
    return json.loads(request.body)  # type: ignore[attr-defined]


def _replace_with_symlink(path: Path, target: Path) -> None:
    link = path.with_name(path.name + ".link")
    link.symlink_to(target)
    os.replace(link, path)


def _replace_with_fifo(path: Path) -> None:
    fifo = path.with_name(path.name + ".fifo")
    os.mkfifo(fifo)
    os.replace(fifo, path)


def _replace_with_directory(path: Path) -> None:
    # A directory cannot be renamed over a file: the file goes first (a "missing" warning may come).
    path.unlink()
    path.mkdir()


@pytest.fixture
def scenario(tmp_path: Path, receiver: Receiver) -> Iterator[_Scenario]:
    workspace = Workspace(tmp_path)
    workspace.write_jobs({"21": "completed", "22": "completed", "23": "in progress"})
    workspace.write_config(handlers=[workspace.webhook(receiver.url())])
    with (
        NotifySocket(tmp_path / "notify.sock") as notify,
        DaemonProcess(workspace.config, env={"NOTIFY_SOCKET": str(notify.path)}) as daemon,
    ):
        notify.wait_for("READY=1")
        running = _Scenario(workspace, receiver, notify, daemon)
        yield running
        assert daemon.process.poll() is None, daemon.log
        assert daemon.stop() == 0
    # Nothing else was ever committed to the outbox, not even an event that was never sent.
    database = StateDatabase(workspace.state_dir / "cvat-watch.db")
    assert [(kind, task) for _id, kind, _watch, task in database.events()] == running.expected


def test_daemon_refuses_hostile_exports_and_then_sends_exactly_the_next_change(
    scenario: _Scenario, tmp_path: Path
) -> None:
    """Entity bombs, external entities, a DTD, bad encodings, deep nesting, a taskless export, symlinks, a FIFO and a directory in place of the export: one warning each, nothing sent, the next change sent once."""
    path = scenario.workspace.annotations
    dtd_server = Receiver().start()
    elsewhere = tmp_path / "elsewhere.xml"
    elsewhere.write_bytes(EXAMPLE_XML.replace(b"drive-02", b"drive-XX"))
    try:
        for data, needle in [
            (BILLION_LAUGHS, "refused a DTD"),
            (QUADRATIC, "refused a DTD"),
            (EXTERNAL_FILE, "refused a DTD"),
            (external_url(dtd_server.url("/entity")), "refused a DTD"),
            (dtd_alone(dtd_server.url("/cvat.dtd")), "refused a DTD"),
            (INVALID_UTF8, "invalid UTF-8"),
            (UTF32, ""),
            (NUL_BYTES, "malformed XML"),
        ]:
            scenario.hostile(path, lambda data=data: Workspace.write(path, data), needle, position=True)
        scenario.hostile(path, lambda: Workspace.write(path, TASKLESS), "holds no task")
        scenario.hostile(path, lambda: _replace_with_symlink(path, elsewhere), "is a symbolic link")
        scenario.hostile(path, lambda: _replace_with_symlink(path, Path("/etc/passwd")), "is a symbolic link")
        scenario.hostile(path, lambda: _replace_with_fifo(path), "is not a regular file")
        scenario.hostile(path, lambda: _replace_with_directory(path), "is not a regular file")
        scenario.hostile(path, lambda: Workspace.write(path, DEEP_IN_META), "nested more than", position=True)
        for data in (UTF16, UTF8_BOM):
            scenario.accepted(path, data)
        assert dtd_server.requests == []
        assert "root:x:0" not in scenario.daemon.log
    finally:
        dtd_server.stop()


def test_daemon_refuses_hostile_job_status_files_and_then_sends_exactly_the_next_change(
    scenario: _Scenario, tmp_path: Path
) -> None:
    """Deep nesting, bad encodings, an emptied job list, a job id forging a log line, symlinks (even to a valid file), a FIFO and a directory in place of the job status: one one-line warning each, nothing sent, the next change sent once."""
    path = scenario.workspace.job_status
    # A valid job-status file elsewhere that completes task 12: following the link would send an event.
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps(job_page({"21": "completed", "22": "completed", "23": "completed"})))
    for data, needle in [
        (b"[" * 100_000, "nested too deeply"),
        (EXAMPLE_JOBS.replace(b'"completed"', b'"compl\xffeted"', 1), "invalid UTF-8"),
        (EXAMPLE_JOBS.decode().encode("utf-16"), "invalid UTF-8"),
        (b'[{"id": NaN, "task_id": 11, "state": "completed"}]', "'id' must be"),
        (b"[]", "holds no job"),
    ]:
        scenario.hostile(path, lambda data=data: Workspace.write(path, data), needle)
    scenario.hostile(path, lambda: Workspace.write(path, FORGED_LOG_LINE), "appears twice")
    forged = [line for line in scenario.daemon.log.splitlines() if "FORGED" in line]
    assert len(forged) == 1 and KEEPING in forged[0] and "\\n2026-01-01 00:00:00,000 ERROR" in forged[0]
    scenario.hostile(path, lambda: _replace_with_symlink(path, elsewhere), "is a symbolic link")
    scenario.hostile(path, lambda: _replace_with_symlink(path, Path("/etc/passwd")), "is a symbolic link")
    scenario.hostile(path, lambda: _replace_with_fifo(path), "is not a regular file")
    scenario.hostile(path, lambda: _replace_with_directory(path), "is not a regular file")
    bom = (
        b"\xef\xbb\xbf"
        + json.dumps(
            job_page(
                {
                    "21": "completed",
                    "22": "completed",
                    "23": ("completed" if scenario.task12_completed else "in progress"),
                }
            )
        ).encode()
    )
    scenario.accepted(path, bom)
    assert "root:x:0" not in scenario.daemon.log
