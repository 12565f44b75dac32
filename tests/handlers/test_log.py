"""The log handler: one line per event on a text stream."""

from __future__ import annotations

import io
import json
import os
import sys

import pytest
from cvat_watch.errors import DeliveryError
from cvat_watch.handlers import Handler, LogHandler, event_body
from cvat_watch.testing.receiver import sample_event


def test_is_a_handler() -> None:
    """LogHandler satisfies the Handler protocol."""
    assert isinstance(LogHandler(), Handler)


def test_human_line_for_a_completed_task() -> None:
    """A completed task becomes one readable line with project, watch, counts and link."""
    stream = io.StringIO()
    LogHandler(stream=stream).deliver(sample_event())
    assert stream.getvalue() == (
        'task.completed: task 39 "Test" (project "p", watch street) — 2 images, 1/1 jobs completed'
        " — https://cvat.example.com/tasks/39\n"
    )


def test_human_line_without_project_or_url() -> None:
    """A task outside any project and without a link still gets a complete line."""
    event = sample_event(
        type="task.reopened",
        project=None,
        task={
            "id": "7",
            "name": "solo",
            "url": None,
            "image_count": 1,
            "jobs": [{"id": "1", "state": "annotation"}, {"id": "2", "state": "completed"}],
        },
    )
    stream = io.StringIO()
    LogHandler(stream=stream).deliver(event)
    assert stream.getvalue() == 'task.reopened: task 7 "solo" (watch street) — 1 image, 1/2 jobs completed\n'


def test_human_line_for_a_job_state_change() -> None:
    """A job state change names the job, its task, the transition and the job's link."""
    job = {"id": "6", "state": "completed", "url": "https://cvat.example.com/tasks/39/jobs/6"}
    event = sample_event(type="job.state_changed", job=job, previous_state="annotation")
    stream = io.StringIO()
    LogHandler(stream=stream).deliver(event)
    assert stream.getvalue() == (
        'job.state_changed: job 6 of task 39 "Test" (project "p", watch street) — annotation → completed'
        " — https://cvat.example.com/tasks/39/jobs/6\n"
    )


def test_names_with_newlines_stay_on_one_line() -> None:
    """Control characters in names, watch or link are escaped so one event is one line."""
    event = sample_event(watch="a\nb", task={"id": "1", "name": 'x\n"y"', "url": "http://h/\r\n", "jobs": []})
    stream = io.StringIO()
    LogHandler(stream=stream).deliver(event)
    assert stream.getvalue().count("\n") == 1
    assert '"x\\n\\"y\\""' in stream.getvalue()


def test_json_lines_writes_the_canonical_body() -> None:
    """With json_lines the line is exactly the canonical event body."""
    event = sample_event(task={"id": "1", "name": "Tâche", "jobs": []})
    stream = io.StringIO()
    handler = LogHandler(stream=stream, json_lines=True)
    handler.deliver(event)
    handler.deliver(event)
    lines = stream.getvalue().splitlines()
    assert lines == [event_body(event).decode("utf-8")] * 2
    assert json.loads(lines[0]) == event


def test_default_stream_is_stderr_at_delivery_time(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a stream the line goes to whatever sys.stderr is when delivering."""
    handler = LogHandler(json_lines=True)
    handler.deliver(sample_event())
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == event_body(sample_event()).decode("utf-8") + "\n"
    assert sys.stderr is not None


def test_narrow_encoding_stream_gets_escapes() -> None:
    """A stream that cannot encode the line still gets it, with backslash escapes."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    LogHandler(stream=stream).deliver(sample_event())
    expected = 'task.completed: task 39 "Test" (project "p", watch street) \\u2014 2 images'
    assert raw.getvalue().decode("ascii").startswith(expected)


def test_closed_stream_raises_retryable_delivery_error() -> None:
    """A closed stream raises DeliveryError(retry=True)."""
    stream = io.StringIO()
    stream.close()
    with pytest.raises(DeliveryError) as caught:
        LogHandler(stream=stream).deliver(sample_event())
    assert caught.value.retry is True


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_device_raises_retryable_delivery_error() -> None:
    """An OSError from the stream (no space left) raises DeliveryError(retry=True)."""
    stream = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115 -- closing it fails too, by design
    try:
        with pytest.raises(DeliveryError) as caught:
            LogHandler(stream=stream).deliver(sample_event())
        assert caught.value.retry is True
    finally:
        try:
            stream.close()  # flushes the stuck line again, which fails again
        except OSError:
            pass


def test_close_leaves_the_stream_open() -> None:
    """close() does not close a stream the handler only borrowed."""
    stream = io.StringIO()
    LogHandler(stream=stream).close()
    assert not stream.closed
