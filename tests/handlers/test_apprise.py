"""The Apprise handler against a real HTTP receiver on 127.0.0.1 (Apprise's json:// scheme)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.handlers import AppriseHandler, Handler
from cvat_watch.handlers.apprise import DEFAULT_BODY, DEFAULT_TITLE, TEMPLATE_FIELDS, validate_template
from cvat_watch.handlers.base import event_fields
from cvat_watch.testing.receiver import Receiver, Reply, free_port, sample_event


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def json_url(port: int, path: str = "/notify/TOKENPATH") -> str:
    return f"json://127.0.0.1:{port}{path}"


def test_is_a_handler(receiver: Receiver) -> None:
    """AppriseHandler satisfies the Handler protocol."""
    assert isinstance(AppriseHandler(url=json_url(receiver.port)), Handler)


def test_default_title_and_body_arrive(receiver: Receiver) -> None:
    """The default title and body, filled from the event, reach the json:// receiver."""
    handler = AppriseHandler(url=json_url(receiver.port))
    handler.deliver(sample_event())
    (request,) = receiver.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/notify/TOKENPATH"
    payload = json.loads(request.body)
    assert payload["title"] == "CVAT task completed: Test"
    assert payload["message"] == (
        "Task: Test (#39)\nProject: p\nWatch: street\nImages: 2, jobs completed: 1/1\n"
        "https://cvat.example.com/tasks/39"
    )
    assert payload["type"] == "success"


def test_custom_templates_use_every_field(receiver: Receiver) -> None:
    """Custom templates may use every template field; values the event lacks render empty."""
    body = " ".join(f"{name}=<{{{name}}}>" for name in TEMPLATE_FIELDS)
    handler = AppriseHandler(url=json_url(receiver.port), title="{watch}/{task_id}", body=body)
    job = {"id": "6", "state": "completed"}
    event = sample_event(type="job.state_changed", job=job, previous_state="annotation", project=None)
    handler.deliver(event)
    payload = json.loads(receiver.wait_for(1)[0].body)
    assert payload["title"] == "street/39"
    assert "job_id=<6> job_state=<completed> previous_state=<annotation>" in payload["message"]
    assert "project_id=<> project_name=<>" in payload["message"]
    assert "summary=<job state changed>" in payload["message"]
    assert payload["type"] == "info"


def test_failing_receiver_is_retried_without_leaking_the_url(receiver: Receiver) -> None:
    """A 500 from the service gives DeliveryError(retry=True) whose message hides the URL."""
    receiver.script(Reply(500))
    handler = AppriseHandler(url=json_url(receiver.port, "/notify/TOKENPATH?x=QUERYTOKEN"))
    with pytest.raises(DeliveryError) as caught:
        handler.deliver(sample_event())
    assert caught.value.retry is True
    text = str(caught.value)
    assert text.startswith("apprise json://")
    for secret in ("TOKENPATH", "QUERYTOKEN", "127.0.0.1"):
        assert secret not in text
        assert secret not in repr(handler)


def test_unreachable_service_is_retried() -> None:
    """A refused connection gives DeliveryError(retry=True)."""
    handler = AppriseHandler(url=json_url(free_port()))
    with pytest.raises(DeliveryError) as caught:
        handler.deliver(sample_event())
    assert caught.value.retry is True


@pytest.mark.parametrize(
    "url",
    ["nosuchservice://abc/def", "not a url", "json://127.0.0.1:1/a json://127.0.0.1:2/b"],
)
def test_unusable_urls_are_config_errors(url: str) -> None:
    """A URL Apprise refuses, or more than one URL, is a ConfigError on key url."""
    with pytest.raises(ConfigError) as caught:
        AppriseHandler(url=url)
    assert caught.value.key == "url"
    assert "abc/def" not in str(caught.value)


def test_missing_apprise_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the apprise package, building the handler says which extra to install."""
    monkeypatch.setitem(sys.modules, "apprise", None)
    with pytest.raises(ConfigError, match=r"pip install 'cvat-watch\[chat\]'"):
        AppriseHandler(url="json://127.0.0.1:1/")


def test_importing_handlers_does_not_import_apprise() -> None:
    """Importing cvat_watch.handlers (and its apprise module) leaves apprise unimported."""
    code = "import sys, cvat_watch.handlers, cvat_watch.handlers.apprise; print('apprise' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "False"


@pytest.mark.parametrize("text", [DEFAULT_TITLE, DEFAULT_BODY, "plain", "{{literal}} {task_name!r:>10}", ""])
def test_valid_templates_pass(text: str) -> None:
    """Templates over the known fields, with escapes, conversions and specs, validate."""
    validate_template(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{task_nme}", "{task_nme}"),
        ("{}", "positional"),
        ("{0}", "positional"),
        ("{task_name.upper}", "attribute"),
        ("{task_name[0]}", "attribute"),
        ("{task_name", "invalid template"),
        ("{image_count:d}", "invalid template"),
        ("{task_name:>{bogus}}", "{bogus}"),
    ],
)
def test_invalid_templates_raise_config_error(text: str, fragment: str) -> None:
    """Unknown fields, positional fields, attribute access and bad specs are ConfigErrors."""
    with pytest.raises(ConfigError) as caught:
        validate_template(text, key="body")
    assert fragment in str(caught.value)
    assert caught.value.key == "body"


def test_bad_template_fails_at_construction() -> None:
    """The handler validates its templates before touching Apprise."""
    with pytest.raises(ConfigError) as caught:
        AppriseHandler(url="json://127.0.0.1:1/", title="{nope}")
    assert caught.value.key == "title"


def test_template_fields_match_event_fields() -> None:
    """TEMPLATE_FIELDS names exactly the keys of the flat event view."""
    assert tuple(event_fields(sample_event())) == TEMPLATE_FIELDS
    assert all(isinstance(value, str) for value in event_fields({}).values())
