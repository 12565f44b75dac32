"""Security end to end: the configuration's guard rails, secrets that never leak, TLS
verification, owner-only state files, the root refusal and Standard Webhooks signatures.

Everything runs the real CLI in subprocesses against real servers on 127.0.0.1: a plain
``Receiver`` and, for TLS, the same receiver behind a certificate from a ``trustme`` CA.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cvat_watch.testing.process import (
    SECRET,
    DaemonProcess,
    NotifySocket,
    Workspace,
    run_cli,
    wait_until,
)
from cvat_watch.testing.receiver import Receiver, Recorded, Reply, free_port
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

COMPLETE_12 = {"21": "completed", "22": "completed", "23": "completed"}
REOPEN_12 = {"21": "completed", "22": "completed", "23": "in progress"}


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    with NotifySocket(tmp_path / "notify.sock") as sock:
        yield sock


def _start(workspace: Workspace, notify: NotifySocket, *args: str, **env: str) -> DaemonProcess:
    before = notify.count("READY=1")
    daemon = DaemonProcess(workspace.config, env={"NOTIFY_SOCKET": str(notify.path), **env}, args=args)
    wait_until(lambda: notify.count("READY=1") > before or daemon.process.poll() is not None, what="READY=1")
    assert daemon.process.poll() is None, daemon.log
    return daemon


# -- configuration ------------------------------------------------------------------------------------

WATCH = """state_dir = "state"
[[watch]]
name = "w"
annotations = "exports/annotations.xml"
job_status = "exports/job_status.json"
"""


@pytest.mark.parametrize(
    ("handler", "key", "message"),
    [
        (
            'type = "webhook"\nurl = "https://127.0.0.1:9/x"\nsecrets_env = "X"',
            "handler[0].secrets_env",
            "unknown key",
        ),
        (
            'type = "webhook"\nurl = "https://127.0.0.1:9/x"\nverify_tls = "no"',
            "handler[0].verify_tls",
            "boolean",
        ),
        (
            'type = "webhook"\nurl = "https://127.0.0.1:9/x"\nretry_delays = "5"',
            "handler[0].retry_delays",
            "list",
        ),
        ('type = "webhook"\nurl = 443', "handler[0].url", "string"),
        (
            'type = "webhook"\nurl = "https://127.0.0.1:9/x"\nsecret_file = "no-such.secret"',
            "handler[0].secret_file",
            "not found",
        ),
        (
            'type = "webhook"\nurl = "https://127.0.0.1:9/x"\nca_file = "no-such-ca.pem"',
            "handler[0].ca_file",
            "not found",
        ),
        (
            'type = "webhook"\nurl = "https://127.0.0.1:9/x"\nca_file = "exports"',
            "handler[0].ca_file",
            "not a file",
        ),
        ('type = "webhook"\nurl = "file:///etc/passwd"', "handler[0].url", "http:// or https://"),
        (
            'type = "webhook"\nurl = "https://127.0.0.1:9/x"\nheaders = {"X-A" = "1\\r\\nX-B: 2"}',
            'handler[0].headers."X-A"',
            "line breaks",
        ),
        ('type = "command"\ncommand = "rm -rf /"', "handler[0].command", "list"),
        ('type = "nope"', "handler[0].type", "unknown handler type"),
    ],
    ids=[
        "unknown-key",
        "bool-as-string",
        "list-as-string",
        "url-as-number",
        "missing-secret-file",
        "missing-ca-file",
        "directory-ca-file",
        "file-url",
        "header-injection",
        "command-as-string",
        "unknown-type",
    ],
)
def test_bad_handler_configuration_is_one_line_naming_file_and_key(
    workspace: Workspace, handler: str, key: str, message: str
) -> None:
    """check-config and run refuse a bad handler with exit 2 and one line naming the file and the key."""
    workspace.config.write_text(f"{WATCH}[[handler]]\n{handler}\n")
    for command in (["check-config"], ["run", "--allow-root"]):
        result = run_cli(*command, "--config", str(workspace.config), timeout=30)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("cvat-watch: error:")]
        assert error.startswith(f"cvat-watch: error: {workspace.config}:{key}: "), error
        assert message in error, error
        assert "Traceback" not in result.stderr


def test_a_ca_file_without_certificates_fails_check_config_as_it_fails_run(workspace: Workspace) -> None:
    """A ca_file that exists but holds no certificate is a check-config problem (exit 2), as it stops run."""
    garbage = workspace.root / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    workspace.config.write_text(
        f'{WATCH}[[handler]]\ntype = "webhook"\nname = "tls"\n'
        f'url = "https://127.0.0.1:9/x"\nca_file = "garbage.pem"\n'
    )
    for command in (["check-config"], ["run", "--allow-root"]):
        result = run_cli(*command, "--config", str(workspace.config), timeout=30)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("cvat-watch: error:")]
        assert str(garbage) in error and "Traceback" not in result.stderr, error
    check = run_cli("check-config", "--config", str(workspace.config))
    assert f"cvat-watch: error: handler tls: CA file {garbage} holds no usable certificate" in check.stderr


def test_http_webhook_with_a_secret_warns_in_check_config_and_run(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """A signed webhook over plain http:// is allowed, with a warning on stderr of check-config and of run."""
    workspace.write_config(handlers=[workspace.webhook(receiver.url())])
    check = run_cli("check-config", "--config", str(workspace.config))
    assert check.returncode == 0, check.stderr
    assert "http:// with a secret" in check.stderr
    daemon = _start(workspace, notify)
    with daemon:
        assert daemon.stop() == 0
    warnings = [line for line in daemon.log.splitlines() if "http:// with a secret" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0]


def test_inline_secret_warns_and_recommends_secret_env_or_file(
    workspace: Workspace, receiver: Receiver
) -> None:
    """secret = "…" in the file works but warns, naming secret_env and secret_file, and never shows the value."""
    inline = "whsec_" + base64.b64encode(b"inline-secret-value-0123").decode()
    workspace.write_config(
        handlers=[f'[[handler]]\ntype = "webhook"\nurl = "{receiver.url()}"\nsecret = "{inline}"\n']
    )
    check = run_cli("check-config", "--config", str(workspace.config))
    assert check.returncode == 0, check.stderr
    warning = next(line for line in check.stderr.splitlines() if "inline secret" in line)
    assert "secret_env" in warning and "secret_file" in warning and "handler[0].secret" in warning
    once = run_cli("once", "--config", str(workspace.config))
    for output in (check.stdout, check.stderr, once.stdout, once.stderr):
        assert inline not in output and "inline-secret-value" not in output


# -- secrets never leak -------------------------------------------------------------------------------

TOKEN = "TOKENVALUE7f3a9c"
APPRISE_PASSWORD = "APPRISEPASSd41e"
SECRET_KEY_TEXT = base64.b64decode(SECRET.removeprefix("whsec_")).decode()
SENSITIVE = (SECRET, SECRET.removeprefix("whsec_"), SECRET_KEY_TEXT, TOKEN, APPRISE_PASSWORD)


def _leaks(text: str) -> list[str]:
    return [secret for secret in SENSITIVE if secret in text]


def _database_text(path: Path) -> str:
    """Every text value of every table of the state database, one per line."""
    values: list[str] = []
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                values.extend(str(value) for value in row if isinstance(value, str | bytes))
    assert values, "the database is empty"
    return "\n".join(values)


def test_secrets_and_tokens_never_appear_in_anything_the_daemon_writes(
    workspace: Workspace, notify: NotifySocket
) -> None:
    """With a webhook secret, a ?token= URL and an Apprise password, through 500s, refused connections, timeouts, a 410, SIGHUP and SIGTERM, no log, CLI output, database value or sent body contains any of them."""
    closed = free_port()
    with (
        Receiver() as hook,
        Receiver(default=Reply(delay=2.0)) as slow,
        Receiver() as chat,
        Receiver(default=Reply(410)) as gone,
    ):
        hook.script(Reply(500))
        chat.script(Reply(500))
        apprise_urls = (
            f"json://user:{APPRISE_PASSWORD}@127.0.0.1:{chat.port}/notify "
            f"json://user:{APPRISE_PASSWORD}@127.0.0.1:{closed}/notify"
        )
        fast = "[0.2, 0.2, 0.2]"
        workspace.write_config(
            handlers=[
                workspace.webhook(hook.url(f"/hook?token={TOKEN}"), name="hook", retry_delays=fast),
                workspace.webhook(
                    f"http://127.0.0.1:{closed}/hook?token={TOKEN}",
                    name="refused",
                    retry_delays="[0.2, 0.2, 60]",
                ),
                workspace.webhook(
                    slow.url(f"/slow?token={TOKEN}"),
                    name="slow",
                    retry_delays=fast,
                    extra="read_timeout = 0.3",
                ),
                workspace.webhook(gone.url(f"/gone?token={TOKEN}"), name="gone", retry_delays=fast),
                f'[[handler]]\ntype = "apprise"\nname = "chat"\nurls_env = "CVAT_WATCH_TEST_APPRISE"\nretry_delays = {fast}\n',
                '[[handler]]\ntype = "log"\nformat = "json"\n',
            ]
        )
        env = {"CVAT_WATCH_TEST_APPRISE": apprise_urls}
        outputs: list[str] = []

        # A text log at debug level, a SIGHUP in the middle, SIGTERM at the end.
        daemon = _start(workspace, notify, "--log-level", "debug", **env)
        with daemon:
            workspace.write_jobs(COMPLETE_12)
            hook.wait_for(2)
            chat.wait_for(2)
            wait_until(
                lambda: daemon.log.count("connect timeout") + daemon.log.count("read timeout") >= 2,
                what="timeouts",
            )
            wait_until(lambda: "connection failed" in daemon.log and "gone" in daemon.log, what="failures")
            daemon.signal(signal.SIGHUP)
            notify.wait_for("READY=1", count=2)
            workspace.write_jobs(REOPEN_12)
            hook.wait_for(3)
            chat.wait_for(3)
            assert daemon.stop() == 0
        outputs.append(daemon.log)

        # JSON log lines, another change, then SIGTERM.
        daemon = _start(workspace, notify, "--log-format", "json", "--log-level", "debug", **env)
        with daemon:
            workspace.write_jobs(COMPLETE_12)
            hook.wait_for(4)
            chat.wait_for(4)
            wait_until(lambda: "read timeout" in daemon.log, what="a timeout in the JSON log")
            assert daemon.stop() == 0
        outputs.append(daemon.log)
        assert all(json.loads(line) for line in daemon.log.splitlines() if line.strip())

        workspace.write_jobs(REOPEN_12)
        for args in (
            ["check-config"],
            ["deliveries"],
            ["deliveries", "--json"],
            ["deliveries", "--failed"],
            ["deliveries", "--failed", "--json"],
            ["once", "--dry-run"],
            ["once"],
            ["redeliver", "1"],
        ):
            result = run_cli(*args, "--config", str(workspace.config), env=env)
            assert "Traceback" not in result.stderr, (args, result.stderr)
            outputs.extend((result.stdout, result.stderr))
            if args == ["once", "--dry-run"]:
                assert [event["type"] for event in json.loads(result.stdout)] == ["task.reopened"]

        bodies = [request.body.decode() for server in (hook, slow, chat, gone) for request in server.requests]

    everything = "\n".join([*outputs, *bodies, _database_text(workspace.state_dir / "cvat-watch.db")])
    assert _leaks(everything) == []
    # The test saw what it meant to: every kind of failure, and the credentials in real use.
    for needle in ("HTTP 500", "connection failed", "timeout", "HTTP 410", "apprise json://…"):
        assert needle in everything, needle
    assert all(TOKEN in request.path for request in hook.requests)
    expected_auth = "Basic " + base64.b64encode(f"user:{APPRISE_PASSWORD}".encode()).decode()
    assert all(request.headers.get("authorization") == expected_auth for request in chat.requests)


# -- TLS ----------------------------------------------------------------------------------------------


class TlsReceiver(Receiver):
    """The scripted receiver behind TLS, with a certificate for 127.0.0.1 from ``ca``."""

    def __init__(self, ca: trustme.CA) -> None:
        super().__init__()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        # A client that rejects the certificate fails the handshake inside accept(), which
        # socketserver drops quietly (an OSError from get_request).
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)

    def url(self, path: str = "/hook") -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_receiver(ca: trustme.CA) -> Iterator[TlsReceiver]:
    with TlsReceiver(ca) as running:
        yield running


def _once_with(workspace: Workspace, url: str, extra: str) -> subprocess.CompletedProcess[str]:
    workspace.write_config(
        handlers=[workspace.webhook(url, retry_delays="[60]", extra=extra)],
        watch_extra="notify_existing = true",
    )
    return run_cli("once", "--config", str(workspace.config))


def _deliveries(workspace: Workspace) -> list[dict]:
    result = run_cli("deliveries", "--json", "--config", str(workspace.config))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_tls_certificates_are_verified_by_default(workspace: Workspace, tls_receiver: TlsReceiver) -> None:
    """Against a certificate from an unknown CA the webhook fails, is kept for a retry, and the error says certificate."""
    result = _once_with(workspace, tls_receiver.url(), "")
    assert result.returncode == 0, result.stderr
    rows = _deliveries(workspace)
    assert [row["status"] for row in rows] == ["pending", "pending"]
    assert all("certificate" in row["last_error"].lower() for row in rows), rows
    assert tls_receiver.requests == []


def test_tls_with_ca_file_delivers(workspace: Workspace, tls_receiver: TlsReceiver, ca: trustme.CA) -> None:
    """With ca_file set to the CA's PEM the same receiver gets both events, signed."""
    pem = workspace.root / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    result = _once_with(workspace, tls_receiver.url(), f'ca_file = "{pem}"')
    assert result.returncode == 0, result.stderr
    requests = tls_receiver.wait_for(2)
    assert all(Webhook(SECRET).verify(r.body, r.headers)["type"] == "task.completed" for r in requests)
    assert {row["status"] for row in _deliveries(workspace)} == {"delivered"}


def test_tls_verification_off_delivers_and_warns(workspace: Workspace, tls_receiver: TlsReceiver) -> None:
    """verify_tls = false delivers to the unknown certificate and says, on stderr, that nothing is verified."""
    result = _once_with(workspace, tls_receiver.url(), "verify_tls = false")
    assert result.returncode == 0, result.stderr
    assert len(tls_receiver.wait_for(2)) == 2
    assert "TLS certificates are not verified" in result.stderr
    assert "TLS certificate verification is disabled for webhook" in result.stderr


# -- file permissions ---------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _run_with_umask_0(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvat_watch", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CVAT_WATCH_TEST_SECRET": SECRET},
        stdin=subprocess.DEVNULL,
        # Only os.umask runs between fork and exec; no thread of this test holds a lock it needs.
        preexec_fn=lambda: os.umask(0o000),
    )


def test_state_database_is_owner_only_even_with_umask_0(workspace: Workspace) -> None:
    """Under umask 000 the new state folder is 0700 and the database and its WAL files are 0600."""
    workspace.write_config(handlers=['[[handler]]\ntype = "log"'], watch_extra="notify_existing = true")
    result = _run_with_umask_0("once", "--config", str(workspace.config))
    assert result.returncode == 0, result.stderr
    assert _mode(workspace.state_dir) == 0o700
    files = sorted(workspace.state_dir.iterdir())
    assert workspace.state_dir / "cvat-watch.db" in files
    assert {path.name: _mode(path) for path in files} == {path.name: 0o600 for path in files}


def test_every_new_state_folder_is_owner_only_even_with_umask_0(workspace: Workspace) -> None:
    """Under umask 000, every folder created for a nested state_dir is 0700, not only the last one."""
    workspace.write_config(handlers=['[[handler]]\ntype = "log"'])
    text = workspace.config.read_text().replace('state_dir = "state"', 'state_dir = "state/a/b"')
    workspace.config.write_text(text)
    result = _run_with_umask_0("once", "--config", str(workspace.config))
    assert result.returncode == 0, result.stderr
    created = [workspace.root / "state", workspace.root / "state" / "a", workspace.root / "state" / "a" / "b"]
    assert {str(path): _mode(path) for path in created} == {str(path): 0o700 for path in created}


def test_root_refusal_names_the_remedies(workspace: Workspace) -> None:
    """As root, run without --allow-root exits 2 with one line naming a dedicated user, DynamicUser= and --allow-root."""
    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    workspace.write_config(handlers=['[[handler]]\ntype = "log"'])
    result = run_cli("run", "--config", str(workspace.config))
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    for remedy in ("dedicated user", "DynamicUser=yes", "--allow-root"):
        assert remedy in line
    assert not workspace.state_dir.exists()


# -- Standard Webhooks signatures ------------------------------------------------------------------------


def _tampered(request: Recorded, **changes: str | bytes) -> tuple[bytes, dict[str, str]]:
    headers = dict(request.headers)
    body = request.body
    for name, value in changes.items():
        if name == "body":
            assert isinstance(value, bytes)
            body = value
        else:
            headers[name.replace("_", "-")] = str(value)
    return body, headers


def test_signatures_verify_with_standardwebhooks_and_bind_body_id_and_timestamp(
    workspace: Workspace, receiver: Receiver, notify: NotifySocket
) -> None:
    """Each attempt (a 503, then its retry) is signed at its own fresh timestamp; a changed body, id, timestamp or key fails verification."""
    receiver.script(Reply(503))
    workspace.write_config(handlers=[workspace.webhook(receiver.url(), retry_delays="[1.2]")])
    with _start(workspace, notify) as daemon:
        started = time.time()
        workspace.write_jobs(COMPLETE_12)
        first, retry = receiver.wait_for(2, timeout=15)
        daemon.stop()
    verifier = Webhook(SECRET)
    for request in (first, retry):
        event = verifier.verify(request.body, request.headers)
        assert (event["type"], event["task"]["id"]) == ("task.completed", "12")
        assert started - 1 <= int(request.headers["webhook-timestamp"]) <= time.time() + 1
    # The retry is the same event (same id, same body), signed anew: a receiver's replay window
    # (five minutes in standardwebhooks) never rejects a retry sent hours later.
    assert retry.headers["webhook-id"] == first.headers["webhook-id"] and retry.body == first.body
    assert int(retry.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    assert retry.headers["webhook-signature"] != first.headers["webhook-signature"]

    event = json.loads(retry.body)
    event["task"]["id"] = "13"
    forged_body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
    stamp = int(retry.headers["webhook-timestamp"])
    for body, headers in (
        _tampered(retry, body=forged_body),
        _tampered(retry, body=retry.body + b" "),
        _tampered(retry, webhook_id="evt_someone_else"),
        _tampered(retry, webhook_timestamp=str(stamp + 1)),
        # The first attempt's signature does not carry over to the retry's timestamp.
        _tampered(retry, webhook_signature=first.headers["webhook-signature"]),
    ):
        with pytest.raises(WebhookVerificationError):
            verifier.verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another key entirely").decode()).verify(
            retry.body, retry.headers
        )


def test_standardwebhooks_rejects_a_delivery_replayed_outside_its_window(
    workspace: Workspace, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A captured delivery verifies now, and the stock library refuses it as too old ten minutes later."""
    import standardwebhooks.webhooks as library

    workspace.write_config(handlers=[workspace.webhook(receiver.url())], watch_extra="notify_existing = true")
    assert run_cli("once", "--config", str(workspace.config)).returncode == 0
    request = receiver.wait_for(1)[0]
    assert Webhook(SECRET).verify(request.body, request.headers)["type"] == "task.completed"

    real = library.datetime

    class TenMinutesLater(real):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz: object = None) -> object:
            return real.now(tz) + library.timedelta(minutes=10)  # type: ignore[arg-type]

    # The receiver's clock, not ours: the library reads it through its module's datetime.
    monkeypatch.setattr(library, "datetime", TenMinutesLater)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(request.body, request.headers)
