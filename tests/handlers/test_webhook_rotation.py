"""Signing-key rotation: several secrets, one Standard Webhooks signature each, verified with either key."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvat_watch.config import WebhookHandlerConfig, load_config
from cvat_watch.errors import ConfigError
from cvat_watch.handlers.webhook import WebhookHandler
from cvat_watch.testing.receiver import Receiver, Recorded, sample_event
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

OLD = "whsec_" + base64.b64encode(b"old-key-old-key-old-key-old-key!").decode()
NEW = "whsec_" + base64.b64encode(b"new-key-new-key-new-key-new-key!").decode()
OTHER = "whsec_" + base64.b64encode(b"someone-else-entirely-different").decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


def send(receiver: Receiver, secret: object, **options: object) -> Recorded:
    handler = WebhookHandler(url=receiver.url(), secret=secret, **options)  # type: ignore[arg-type]
    try:
        handler.deliver(sample_event())
    finally:
        handler.close()
    return receiver.wait_for(1)[-1]


def test_every_delivery_carries_one_signature_per_secret(receiver: Receiver) -> None:
    """Two secrets: webhook-signature holds two space-separated v1 entries; the verifier accepts either key alone."""
    request = send(receiver, [NEW, OLD])
    entries = request.headers["webhook-signature"].split(" ")
    assert len(entries) == 2 and all(entry.startswith("v1,") for entry in entries)
    for key in (NEW, OLD):
        assert Webhook(key).verify(request.body, request.headers)["id"] == sample_event()["id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER).verify(request.body, request.headers)


@pytest.mark.parametrize("mode", ["json", "cloudevents", "cloudevents-structured"])
def test_rotation_works_in_every_format(receiver: Receiver, mode: str) -> None:
    """The signatures cover the bytes sent whatever the envelope."""
    request = send(receiver, [OLD, NEW], format=mode)
    Webhook(OLD).verify(request.body, request.headers)
    Webhook(NEW).verify(request.body, request.headers)


def test_a_single_secret_still_sends_one_signature(receiver: Receiver) -> None:
    """One secret (a string or a one-item list) gives exactly one entry, as before."""
    request = send(receiver, NEW)
    assert " " not in request.headers["webhook-signature"]
    Webhook(NEW).verify(request.body, request.headers)


def test_the_same_key_twice_signs_once(receiver: Receiver) -> None:
    """The same key under two spellings (padded and unpadded base64) is one signature."""
    request = send(receiver, [NEW, NEW.rstrip("=")])
    assert " " not in request.headers["webhook-signature"]


def test_an_empty_list_is_a_config_error() -> None:
    """An empty list of secrets is refused at construction."""
    with pytest.raises(ConfigError, match="empty"):
        WebhookHandler(url="http://127.0.0.1:1/x", secret=[])


# --- the configuration --------------------------------------------------------------------

BASE = '[[watch]]\nname = "w"\nannotations = "a.xml"\n[[handler]]\ntype = "webhook"\nurl = "https://h.example.com/x"\n'


def load(tmp_path: Path, text: str, environ: dict[str, str]) -> WebhookHandlerConfig:
    path = tmp_path / "c.toml"
    path.write_text(BASE + text)
    [handler] = load_config(path, environ=environ).handlers
    assert isinstance(handler, WebhookHandlerConfig)
    return handler


def test_secret_env_takes_a_list(tmp_path: Path) -> None:
    """secret_env = ["NEW", "OLD"]: the first is `secret`, the rest `extra_secrets`, none shown in repr."""
    handler = load(tmp_path, 'secret_env = ["HOOK_NEW", "HOOK_OLD"]\n', {"HOOK_NEW": NEW, "HOOK_OLD": OLD})
    assert handler.secret is not None and handler.secret.reveal() == NEW
    assert [s.reveal() for s in handler.extra_secrets] == [OLD]
    assert NEW not in repr(handler) and OLD not in repr(handler)


def test_secret_file_takes_a_list(tmp_path: Path) -> None:
    """secret_file = [...] reads each file."""
    (tmp_path / "new").write_text(NEW + "\n")
    (tmp_path / "old").write_text(OLD + "\n")
    handler = load(tmp_path, 'secret_file = ["new", "old"]\n', {})
    assert [s.reveal() for s in (handler.secret, *handler.extra_secrets) if s] == [NEW, OLD]


@pytest.mark.parametrize(
    ("text", "environ", "key", "message"),
    [
        ("secret_env = []\n", {}, "handler[0].secret_env", "at least one secret"),
        ('secret_env = ["A", "A"]\n', {"A": NEW}, "handler[0].secret_env", "the same secret twice"),
        ('secret_env = ["A", "B"]\n', {"A": NEW, "B": NEW}, "handler[0].secret_env", "hold the same secret"),
        ('secret_env = ["A", "MISSING"]\n', {"A": NEW}, "handler[0].secret_env[1]", "MISSING is not set"),
        ('secret_env = ["A", 3]\n', {"A": NEW}, "handler[0].secret_env", "expected"),
    ],
)
def test_list_rules(tmp_path: Path, text: str, environ: dict[str, str], key: str, message: str) -> None:
    """Bad lists of secrets fail at load time naming the key, never quoting a secret."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    assert caught.value.key is not None and caught.value.key.startswith(key)
    assert message in caught.value.message
    assert NEW not in str(caught.value)


def test_the_daemon_routes_sign_with_every_key(tmp_path: Path, receiver: Receiver) -> None:
    """From the config file through the daemon's routes: `once` delivers with both signatures."""
    from cvat_watch.testing.process import Workspace, run_cli

    workspace = Workspace(tmp_path)
    hook = f'[[handler]]\ntype = "webhook"\nurl = "{receiver.url()}"\nsecret_env = ["HOOK_NEW", "HOOK_OLD"]\n'
    workspace.write_config(handlers=[hook], watch_extra="notify_existing = true")
    env = {"HOOK_NEW": NEW, "HOOK_OLD": OLD}
    described = run_cli("check-config", "--config", str(workspace.config), env=env)
    assert "signed with 2 keys" in described.stdout
    result = run_cli("once", "--config", str(workspace.config), env=env)
    assert result.returncode == 0, result.stderr
    [request, *_] = receiver.wait_for(1)
    Webhook(NEW).verify(request.body, request.headers)
    Webhook(OLD).verify(request.body, request.headers)
