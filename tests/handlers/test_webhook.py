"""The webhook handler against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.handlers import Handler, WebhookHandler, event_body, redact_url
from cvat_watch.handlers.webhook import parse_retry_after, signing_key
from cvat_watch.testing.receiver import Receiver, Reply, free_port, sample_event
from standardwebhooks.webhooks import Webhook

RAW_KEY = b"0123456789abcdef0123456789abcdef"
WHSEC = "whsec_" + base64.b64encode(RAW_KEY).decode()

MakeWebhook = Callable[..., WebhookHandler]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def make_webhook(receiver: Receiver) -> Iterator[MakeWebhook]:
    handlers: list[WebhookHandler] = []

    def make(**options: Any) -> WebhookHandler:
        options.setdefault("url", receiver.url())
        handler = WebhookHandler(**options)
        handlers.append(handler)
        return handler

    yield make
    for handler in handlers:
        handler.close()


def deliver_error(handler: WebhookHandler, event: dict[str, Any] | None = None) -> DeliveryError:
    with pytest.raises(DeliveryError) as caught:
        handler.deliver(event or sample_event())
    return caught.value


def test_is_a_handler(make_webhook: MakeWebhook) -> None:
    """WebhookHandler satisfies the Handler protocol."""
    assert isinstance(make_webhook(), Handler)


def test_posts_the_canonical_body_with_standard_headers(
    receiver: Receiver, make_webhook: MakeWebhook
) -> None:
    """A delivery POSTs the canonical JSON body with content type, user agent, id and timestamp."""
    event = sample_event(task={"id": "39", "name": "Tâche ✓", "jobs": []})
    before = int(time.time())
    make_webhook().deliver(event)
    (request,) = receiver.wait_for(1)
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.body == event_body(event)
    assert "Tâche ✓" in request.body.decode("utf-8")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("cvat-watch/")
    assert request.headers["webhook-id"] == event["id"]
    assert before <= int(request.headers["webhook-timestamp"]) <= int(time.time())


def test_whsec_secret_signature_verifies_with_standardwebhooks(
    receiver: Receiver, make_webhook: MakeWebhook
) -> None:
    """A whsec_ secret signs with its base64-decoded key; standardwebhooks verifies it."""
    event = sample_event()
    make_webhook(secret=WHSEC).deliver(event)
    (request,) = receiver.wait_for(1)
    assert Webhook(WHSEC).verify(request.body, request.headers) == event
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
    mac = hmac.new(RAW_KEY, signed + request.body, hashlib.sha256).digest()
    assert request.headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()


def test_plain_secret_signs_with_its_utf8_bytes(receiver: Receiver, make_webhook: MakeWebhook) -> None:
    """A secret without the whsec_ prefix is used as its UTF-8 bytes."""
    secret = "plain sécret"
    make_webhook(secret=secret).deliver(sample_event())
    (request,) = receiver.wait_for(1)
    assert Webhook(secret.encode("utf-8")).verify(request.body, request.headers, json_parse=False) is None
    signed = f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode()
    mac = hmac.new(secret.encode("utf-8"), signed + request.body, hashlib.sha256).digest()
    assert request.headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()


def test_unpadded_whsec_secret_is_accepted() -> None:
    """A whsec_ secret whose base64 lost its padding still yields the same key."""
    assert signing_key(WHSEC.rstrip("=")) == RAW_KEY


def test_no_secret_sends_no_signature(receiver: Receiver, make_webhook: MakeWebhook) -> None:
    """Without a secret no signature header is sent, but the id and timestamp still are."""
    make_webhook().deliver(sample_event())
    (request,) = receiver.wait_for(1)
    assert "webhook-signature" not in request.headers
    assert "x-signature-256" not in request.headers
    assert "webhook-id" in request.headers


def test_cvat_signature_header(receiver: Receiver, make_webhook: MakeWebhook) -> None:
    """cvat_signature adds X-Signature-256 = sha256=<hex HMAC of the body keyed by the secret>."""
    make_webhook(secret=WHSEC, cvat_signature=True).deliver(sample_event())
    (request,) = receiver.wait_for(1)
    expected = hmac.new(WHSEC.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-signature-256"] == f"sha256={expected}"
    assert Webhook(WHSEC).verify(request.body, request.headers)


def test_extra_headers_are_sent_but_cannot_replace_ours(
    receiver: Receiver, make_webhook: MakeWebhook
) -> None:
    """Configured headers are sent; they cannot override the content type or the webhook id."""
    handler = make_webhook(
        headers={"Authorization": "Bearer t", "Content-Type": "text/plain", "webhook-id": "forged"}
    )
    handler.deliver(sample_event())
    (request,) = receiver.wait_for(1)
    assert request.headers["authorization"] == "Bearer t"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == sample_event()["id"]


def test_one_client_is_reused_across_deliveries(receiver: Receiver, make_webhook: MakeWebhook) -> None:
    """Two deliveries travel over the same kept-alive connection."""
    handler = make_webhook()
    handler.deliver(sample_event(id="evt_1"))
    handler.deliver(sample_event(id="evt_2"))
    first, second = receiver.wait_for(2)
    assert first.client_port == second.client_port


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(receiver: Receiver, make_webhook: MakeWebhook, status: int) -> None:
    """Any 2xx status means delivered."""
    receiver.script(Reply(status))
    make_webhook().deliver(sample_event())


def test_410_is_gone(receiver: Receiver, make_webhook: MakeWebhook) -> None:
    """410 Gone is final and marks the target gone."""
    receiver.script(Reply(410))
    error = deliver_error(make_webhook())
    assert (error.retry, error.gone, error.retry_after) == (False, True, None)
    assert "410" in str(error)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 301, 302])
def test_other_statuses_are_final(receiver: Receiver, make_webhook: MakeWebhook, status: int) -> None:
    """4xx (other than 408, 410, 429) and unfollowed redirects are final failures."""
    receiver.script(Reply(status, headers={"location": "http://127.0.0.1:1/elsewhere"}))
    error = deliver_error(make_webhook())
    assert (error.retry, error.gone) == (False, False)
    assert f"HTTP {status}" in str(error)
    assert len(receiver.wait_for(1)) == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses(receiver: Receiver, make_webhook: MakeWebhook, status: int) -> None:
    """408, 429 and 5xx are worth retrying; without Retry-After there is no delay hint."""
    receiver.script(Reply(status))
    error = deliver_error(make_webhook())
    assert (error.retry, error.gone, error.retry_after) == (True, False, None)
    assert f"HTTP {status}" in str(error)


def test_429_retry_after_seconds(receiver: Receiver, make_webhook: MakeWebhook) -> None:
    """A Retry-After in seconds becomes retry_after."""
    receiver.script(Reply(429, headers={"Retry-After": "7"}))
    assert deliver_error(make_webhook()).retry_after == 7.0


def test_503_retry_after_http_date(receiver: Receiver, make_webhook: MakeWebhook) -> None:
    """A Retry-After HTTP-date becomes the seconds from now until then."""
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    receiver.script(Reply(503, headers={"Retry-After": when}))
    retry_after = deliver_error(make_webhook()).retry_after
    assert retry_after is not None
    assert 115 <= retry_after <= 121


def test_retry_after_in_the_past_is_zero(receiver: Receiver, make_webhook: MakeWebhook) -> None:
    """A Retry-After date already past clamps to 0."""
    receiver.script(Reply(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert deliver_error(make_webhook()).retry_after == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 60.0),
        ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0),
        ("Thu, 01 Jan 1970 00:01:40 -0000", 60.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After parses as delta seconds or HTTP-date, negative clamps to 0, junk is None."""
    assert parse_retry_after(value, now=40.0) == expected


def test_connection_refused_is_retried(make_webhook: MakeWebhook) -> None:
    """A refused connection is worth retrying and says so."""
    handler = make_webhook(url=f"http://127.0.0.1:{free_port()}/hook", connect_timeout=2.0)
    error = deliver_error(handler)
    assert error.retry is True
    assert "connection failed" in str(error)


def test_read_timeout_is_retried(receiver: Receiver, make_webhook: MakeWebhook) -> None:
    """A receiver slower than read_timeout gives a retryable read timeout, promptly."""
    receiver.script(Reply(200, delay=3.0))
    started = time.monotonic()
    error = deliver_error(make_webhook(read_timeout=0.2))
    assert time.monotonic() - started < 2.0
    assert error.retry is True
    assert "read timeout after 0.2 s" in str(error)


def test_errors_and_repr_never_show_credentials_or_query(
    receiver: Receiver, make_webhook: MakeWebhook
) -> None:
    """User info and query tokens appear in no error message nor repr; the redacted URL does."""
    url = f"http://user:hunter2pass@127.0.0.1:{receiver.port}/hook?token=SECRET123"
    handler = make_webhook(url=url, secret="s3cr3t-value")
    receiver.script(Reply(400), Reply(503))
    refused = make_webhook(url=f"http://user:hunter2pass@127.0.0.1:{free_port()}/hook?token=SECRET123")
    texts = [
        str(deliver_error(handler)),
        str(deliver_error(handler)),
        str(deliver_error(refused)),
        repr(handler),
        repr(refused),
    ]
    for text in texts:
        assert "SECRET123" not in text
        assert "hunter2pass" not in text
        assert "user" not in text
        assert "s3cr3t-value" not in text
    assert f"http://127.0.0.1:{receiver.port}/hook" in texts[0]
    assert receiver.wait_for(2)[0].path == "/hook?token=SECRET123"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@example.com:8443/a/b?token=x#frag", "https://example.com:8443/a/b"),
        ("http://EXAMPLE.com/hook", "http://example.com/hook"),
        ("http://[::1]:8080/x?y=1", "http://[::1]:8080/x"),
        ("json://127.0.0.1:9000/path?k=v", "json://127.0.0.1:9000/path"),
        ("http://host:notaport/x?token=t", "<unparsable url>"),
        ("example.com/path?q=1", "example.com/path"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """redact_url keeps scheme, host, port and path, and drops user info, query and fragment."""
    assert redact_url(url) == expected


def test_verify_false_warns_once_at_construction(
    caplog: pytest.LogCaptureFixture, make_webhook: MakeWebhook
) -> None:
    """Turning off TLS verification logs one warning when the handler is built, none per delivery."""
    with caplog.at_level(logging.WARNING, logger="cvat_watch.handlers.webhook"):
        handler = make_webhook(verify=False)
        handler.deliver(sample_event())
        handler.deliver(sample_event())
    warnings = [r for r in caplog.records if r.name == "cvat_watch.handlers.webhook"]
    assert len(warnings) == 1
    assert "verification is disabled" in warnings[0].getMessage()


def test_missing_ca_bundle_is_a_config_error(tmp_path: Any) -> None:
    """A verify path that cannot be loaded is a configuration error naming the key."""
    with pytest.raises(ConfigError) as caught:
        WebhookHandler(url="https://127.0.0.1/hook", verify=str(tmp_path / "missing.pem"))
    assert caught.value.key == "verify"


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"url": "ftp://127.0.0.1/hook"}, "url"),
        ({"url": "http:///nohost"}, "url"),
        ({"url": "http://127.0.0.1:99999/hook"}, "url"),
        ({"url": "http://127.0.0.1/hook", "secret": "whsec_!!!not-base64"}, "secret"),
        ({"url": "http://127.0.0.1/hook", "secret": ""}, "secret"),
        ({"url": "http://127.0.0.1/hook", "cvat_signature": True}, "cvat_signature"),
        ({"url": "http://127.0.0.1/hook", "read_timeout": 0}, "read_timeout"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], key: str) -> None:
    """Unusable options fail at construction with a ConfigError naming the key."""
    with pytest.raises(ConfigError) as caught:
        WebhookHandler(**options)
    assert caught.value.key == key
    assert "!!!not-base64" not in str(caught.value)


def test_transport_seam_is_used() -> None:
    """A given httpx transport carries the request (the seam the dispatcher's tests may use)."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    handler = WebhookHandler(url="http://127.0.0.1/hook", transport=httpx.MockTransport(answer))
    try:
        handler.deliver(sample_event())
    finally:
        handler.close()
    assert json.loads(seen[0].content) == sample_event()


def test_close_is_idempotent(make_webhook: MakeWebhook) -> None:
    """Closing twice is harmless."""
    handler = make_webhook()
    handler.close()
    handler.close()
