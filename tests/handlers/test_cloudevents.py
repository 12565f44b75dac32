"""CloudEvents 1.0 from the webhook handler, parsed by the ``cloudevents`` SDK from what a real receiver got."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cvat_watch.config import WebhookHandlerConfig, load_config
from cvat_watch.errors import ConfigError
from cvat_watch.handlers.base import event_body
from cvat_watch.handlers.cloudevents import binary_headers, cloudevent_attributes
from cvat_watch.handlers.webhook import WebhookHandler
from cvat_watch.testing.receiver import Receiver, Recorded, sample_event
from standardwebhooks.webhooks import Webhook

cloudevents_http = pytest.importorskip("cloudevents.core.bindings.http")

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def send(receiver: Receiver, event: dict[str, Any], **options: Any) -> Recorded:
    handler = WebhookHandler(url=receiver.url(), **options)
    try:
        handler.deliver(event)
    finally:
        handler.close()
    return receiver.wait_for(1)[-1]


def parse(request: Recorded) -> Any:
    return cloudevents_http.from_http_event(cloudevents_http.HTTPMessage(request.headers, request.body))


def test_binary_mode_is_parsed_by_the_sdk(receiver: Receiver) -> None:
    """format = "cloudevents": ce-* headers the SDK reads back; the body is the event JSON, unchanged."""
    event = sample_event()
    request = send(receiver, event, format="cloudevents")
    assert request.body == event_body(event)
    assert request.headers["content-type"] == "application/json"
    parsed = parse(request)
    assert parsed.get_specversion() == "1.0"
    assert parsed.get_id() == event["id"]
    assert parsed.get_source() == "https://cvat.example.com/tasks/39"
    assert parsed.get_type() == "ai.cvat.watch.task.completed"
    assert parsed.get_time().isoformat().startswith("2026-11-25T15:30:00")
    assert parsed.get_data() == event


def test_structured_mode_is_parsed_by_the_sdk(receiver: Receiver) -> None:
    """format = "cloudevents-structured": one application/cloudevents+json document with the event as data."""
    event = sample_event()
    request = send(receiver, event, format="cloudevents-structured")
    assert request.headers["content-type"].startswith("application/cloudevents+json")
    assert not any(name.startswith("ce-") for name in request.headers)
    parsed = parse(request)
    assert (parsed.get_id(), parsed.get_type()) == (event["id"], "ai.cvat.watch.task.completed")
    assert parsed.get_source() == "https://cvat.example.com/tasks/39"
    assert parsed.get_datacontenttype() == "application/json"
    assert parsed.get_data() == event


@pytest.mark.parametrize("mode", ["cloudevents", "cloudevents-structured"])
def test_standard_webhooks_signature_stays_on_top(receiver: Receiver, mode: str) -> None:
    """The Standard Webhooks signature covers the bytes sent in either mode and verifies."""
    event = sample_event()
    request = send(receiver, event, format=mode, secret=WHSEC)
    verified = Webhook(WHSEC).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == event["id"] == parse(request).get_id()
    assert (verified if mode == "cloudevents" else verified["data"]) == event


def test_job_events_have_a_subject_and_non_ascii_survives_the_headers(receiver: Receiver) -> None:
    """A job event carries subject jobs/<id>; a non-ASCII source is percent-encoded and decoded by the SDK."""
    event = sample_event(
        type="job.state_changed",
        job={"id": "6", "state": "completed"},
        task={"id": "39", "url": "https://cvat.example.com/tâches/39"},
    )
    headers = binary_headers(event)
    assert headers["ce-source"] == "https://cvat.example.com/t%C3%A2ches/39"
    parsed = parse(send(receiver, event, format="cloudevents"))
    assert parsed.get_subject() == "jobs/6"
    assert parsed.get_type() == "ai.cvat.watch.job.state_changed"
    assert parsed.get_source() == "https://cvat.example.com/tâches/39"


def test_source_without_a_base_url_is_a_relative_reference() -> None:
    """Without a CVAT link in the event, the source names the watch and the task (a URI reference)."""
    event = sample_event(task={"id": "7", "url": None})
    assert cloudevent_attributes(event)["source"] == "/cvat-watch/street/tasks/7"
    project_event = sample_event(type="project.completed", project={"id": "3", "url": "https://c/projects/3"})
    assert cloudevent_attributes(project_event)["source"] == "https://c/projects/3"


def test_format_is_validated() -> None:
    """An unknown format is a ConfigError at construction."""
    with pytest.raises(ConfigError, match="format must be one of: json, cloudevents, cloudevents-structured"):
        WebhookHandler(url="http://127.0.0.1:1/x", format="xml")


def test_format_in_the_config_file(tmp_path: Path) -> None:
    """`format` is read from the handler table and checked against the known envelopes."""
    base = '[[watch]]\nname = "w"\nannotations = "a.xml"\n[[handler]]\ntype = "webhook"\nurl = "http://127.0.0.1:1/x"\n'
    path = tmp_path / "c.toml"
    path.write_text(base + 'format = "cloudevents-structured"\n')
    [handler] = load_config(path, environ={}).handlers
    assert isinstance(handler, WebhookHandlerConfig) and handler.format == "cloudevents-structured"
    path.write_text(base + 'format = "avro"\n')
    with pytest.raises(ConfigError, match="must be one of") as caught:
        load_config(path, environ={})
    assert caught.value.key == "handler[0].format"
