"""The TOML configuration: strict parsing, resolved paths and secrets, readable errors."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import attrs
import pytest
from cvat_watch.config import (
    ALL_EVENTS,
    DEFAULT_EVENTS,
    DEFAULT_RETRY_DELAYS,
    AppriseHandlerConfig,
    CommandHandlerConfig,
    Config,
    LogHandlerConfig,
    Secret,
    WatchConfig,
    WebhookHandlerConfig,
    default_state_dir,
    load_config,
)
from cvat_watch.converter import from_dict, to_dict
from cvat_watch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "cvat-watch.toml"
UNIT = ROOT / "config" / "cvat-watch.service"

WATCH = '[[watch]]\nname = "street"\nannotations = "exports/street/annotations.xml"\n'
SECRET = "hunter2-very-secret"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment that does not depend on the machine running the tests."""
    return {"HOME": str(tmp_path / "home")}


def write(folder: Path, text: str, name: str = "cvat-watch.toml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load(folder: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(write(folder, text), environ=environ if environ is not None else {})


def fails(folder: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(folder, text, environ)
    return caught.value


# --- the happy path ------------------------------------------------------------------------


def test_minimal_config_gets_every_default(tmp_path: Path, env: dict[str, str]) -> None:
    """A config with one watch and one handler loads with the documented defaults."""
    config = load(tmp_path, WATCH + '[[handler]]\ntype = "log"\n', env)
    assert config.path == tmp_path / "cvat-watch.toml"
    assert config.watches == (
        WatchConfig(name="street", annotations=tmp_path / "exports/street/annotations.xml"),
    )
    watch = config.watches[0]
    assert (watch.completion, watch.poll, watch.debounce, watch.max_wait) == ("completed", False, 0.5, 5.0)
    assert config.handlers == (LogHandlerConfig(key="log-1", events=DEFAULT_EVENTS, format="text"),)
    digest = hashlib.sha256(str(tmp_path / "cvat-watch.toml").encode()).hexdigest()[:8]
    assert config.state_dir == tmp_path / "home" / ".local" / "state" / "cvat-watch" / f"cvat-watch-{digest}"
    assert config.retention_days == 30.0
    assert config.warnings == ()


def test_full_config_resolves_into_the_public_classes(tmp_path: Path) -> None:
    """Every key of every handler type ends up in the matching public class."""
    write(tmp_path, "-----BEGIN CERTIFICATE-----\n", "ca.pem")
    (tmp_path / "work").mkdir()
    config = load(
        tmp_path,
        WATCH
        + """
job_status = "exports/street/job_status.json"
completion = "accepted"
notify_existing = true
poll = true
poll_interval = 2
base_url = "https://cvat.example.com/"
debounce = 1
max_wait = 10
recheck_interval = 60

[[handler]]
type = "webhook"
name = "ops-hook"
url = "https://hooks.example.com/cvat"
secret_env = "HOOK_SECRET"
cvat_signature = true
events = ["task.completed", "job.state_changed"]
connect_timeout = 1.5
read_timeout = 20
timeout = 45
retry_delays = [0, 10.5]
ca_file = "ca.pem"
headers = { "X-Team" = "ml", "X-Env" = "prod" }

[[handler]]
type = "apprise"
urls_env = "APPRISE_URLS"
title = "{task_name}"
body = "{task_url}"
timeout = 12.5

[[handler]]
type = "command"
command = ["/usr/local/bin/start-training", "--task"]
timeout = 5
cwd = "work"

[[handler]]
type = "log"
format = "json"
events = ["job.state_changed"]
""",
        {"HOOK_SECRET": SECRET, "APPRISE_URLS": "json://127.0.0.1:9/a"},
    )
    assert config.watches[0] == WatchConfig(
        name="street",
        annotations=tmp_path / "exports/street/annotations.xml",
        job_status=tmp_path / "exports/street/job_status.json",
        completion="accepted",
        notify_existing=True,
        poll=True,
        poll_interval=2.0,
        base_url="https://cvat.example.com",
        debounce=1.0,
        max_wait=10.0,
        recheck_interval=60.0,
    )
    webhook, apprise, command, log = config.handlers
    assert webhook == WebhookHandlerConfig(
        key="ops-hook",
        events=("task.completed", "job.state_changed"),
        url="https://hooks.example.com/cvat",
        secret=Secret(SECRET),
        cvat_signature=True,
        connect_timeout=1.5,
        read_timeout=20.0,
        timeout=45.0,
        retry_delays=(0.0, 10.5),
        verify_tls=True,
        ca_file=tmp_path / "ca.pem",
        headers=(("X-Team", "ml"), ("X-Env", "prod")),
    )
    assert apprise == AppriseHandlerConfig(
        key="apprise-1",
        events=DEFAULT_EVENTS,
        urls=(Secret("json://127.0.0.1:9/a"),),
        title="{task_name}",
        body="{task_url}",
        timeout=12.5,
        retry_delays=DEFAULT_RETRY_DELAYS,
    )
    assert command == CommandHandlerConfig(
        key="command-1",
        events=DEFAULT_EVENTS,
        command=("/usr/local/bin/start-training", "--task"),
        timeout=5.0,
        retry_delays=DEFAULT_RETRY_DELAYS,
        cwd=tmp_path / "work",
    )
    assert log == LogHandlerConfig(key="log-1", events=("job.state_changed",), format="json")
    assert config.warnings == ()


def test_config_is_frozen(tmp_path: Path) -> None:
    """The configuration tree cannot be changed after loading."""
    config = load(tmp_path, WATCH)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.watches[0].name = "other"  # type: ignore[misc]


# --- unknown keys and wrong types -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "hint"),
    [
        ('stat_dir = "x"\n' + WATCH, "stat_dir", "did you mean 'state_dir'?"),
        ('[[watch]]\nname = "a"\nanotations = "x"\n', "watch[0].anotations", "did you mean 'annotations'?"),
        (
            WATCH + '[[handler]]\ntype = "log"\n'
            '[[handler]]\ntype = "webhook"\nurl = "https://h"\nsecrte = "x"\n',
            "handler[1].secrte",
            "did you mean 'secret'?",
        ),
        (WATCH + '[[handler]]\ntype = "log"\nurl = "https://h"\n', "handler[0].url", ""),
    ],
)
def test_unknown_key_is_named_with_its_path(tmp_path: Path, text: str, key: str, hint: str) -> None:
    """An unknown key at the top, in a watch or in a handler fails naming the file and the key path."""
    error = fails(tmp_path, text)
    assert error.key == key
    assert error.path == str(tmp_path / "cvat-watch.toml")
    assert str(error).startswith(f"{tmp_path / 'cvat-watch.toml'}:{key}: unknown key")
    assert hint in str(error)


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ('debounce = "1"', "watch[0].debounce", "expected a number, got a string"),
        ("poll = 1", "watch[0].poll", "expected a boolean (true or false), got an integer"),
        ("name = 5", "watch[0].name", "expected a string, got an integer"),
        ("job_status = 2024-01-01", "watch[0].job_status", "expected a string, got a date"),
    ],
)
def test_wrong_type_in_watch_is_named(tmp_path: Path, extra: str, key: str, expected: str) -> None:
    """A value of the wrong TOML type fails with the key path and the expected kind."""
    own_key = extra.split(" = ")[0]
    text = "".join(line for line in WATCH.splitlines(keepends=True) if not line.startswith(f"{own_key} ="))
    error = fails(tmp_path, text + extra + "\n")
    assert error.key == key
    assert expected in str(error)


@pytest.mark.parametrize(
    ("handler", "key", "expected"),
    [
        ('type = "command"\ncommand = "ls -l"', "handler[0].command", "expected a list, got a string"),
        ('type = "log"\nevents = "task.completed"', "handler[0].events", "expected a list, got a string"),
        (
            'type = "webhook"\nurl = "https://h"\nretry_delays = [5, "x"]',
            "handler[0].retry_delays[1]",
            "expected a number, got a string",
        ),
        (
            'type = "webhook"\nurl = "https://h"\nheaders = ["X-A"]',
            "handler[0].headers",
            "expected a table, got a list",
        ),
        (
            'type = "webhook"\nurl = "https://h"\nheaders = { "X A" = 1 }',
            'handler[0].headers."X A"',
            "expected a string, got an integer",
        ),
        (
            'type = "webhook"\nurl = "https://h"\nverify_tls = "no"',
            "handler[0].verify_tls",
            "expected a boolean",
        ),
    ],
)
def test_wrong_type_in_handler_is_named(tmp_path: Path, handler: str, key: str, expected: str) -> None:
    """Wrong types inside handlers, lists and tables are reported with the full key path."""
    error = fails(tmp_path, WATCH + "[[handler]]\n" + handler + "\n")
    assert error.key == key
    assert expected in str(error)


def test_several_problems_come_in_one_message(tmp_path: Path) -> None:
    """All structural problems are reported at once, the misspelt key first."""
    error = fails(tmp_path, '[[watch]]\nname = "a"\nanotations = "x"\npoll = "yes"\n')
    assert error.key == "watch[0].anotations"
    message = str(error)
    assert "also" in message
    assert "watch[0].annotations: required key is missing" in message
    assert "watch[0].poll: expected a boolean" in message


def test_single_table_instead_of_array_gets_a_hint(tmp_path: Path) -> None:
    """Writing [watch] instead of [[watch]] says how to fix it."""
    error = fails(tmp_path, '[watch]\nname = "a"\nannotations = "x"\n')
    assert error.key == "watch"
    assert "[[watch]]" in str(error)


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("", "required key is missing"),
        ('type = "slack"', "unknown handler type"),
        ("type = 3", "unknown handler type"),
    ],
)
def test_handler_type_must_be_known(tmp_path: Path, handler: str, message: str) -> None:
    """A handler without a type, or with an unknown one, fails on its `type` key."""
    error = fails(tmp_path, WATCH + '[[handler]]\nname = "x"\n' + handler + "\n")
    assert error.key == "handler[0].type"
    assert message in str(error)
    assert "log, webhook, apprise, command" in str(error)


# --- the file itself ------------------------------------------------------------------------


def test_invalid_toml_names_line_and_column(tmp_path: Path) -> None:
    """A syntax error reports the file and tomllib's line and column."""
    error = fails(tmp_path, WATCH + "debounce = \n")
    assert error.path == str(tmp_path / "cvat-watch.toml")
    assert "invalid TOML at line 4, column 12" in str(error)


def test_invalid_toml_at_end_of_file(tmp_path: Path) -> None:
    """A file cut short says the problem is at its end."""
    error = fails(tmp_path, WATCH + "x = [1,\n")
    assert "invalid TOML at the end of the file" in str(error)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    """A config path that does not exist fails naming it."""
    with pytest.raises(ConfigError, match="config file not found") as caught:
        load_config(tmp_path / "nope.toml", environ={})
    assert caught.value.path == str(tmp_path / "nope.toml")


def test_directory_instead_of_file_is_an_error(tmp_path: Path) -> None:
    """Pointing at a directory fails with a clear message."""
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, environ={})


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 fail as a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "cvat-watch.toml"
    path.write_bytes(WATCH.encode() + b'base_url = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, environ={})


# --- paths -------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths are taken from the config file's folder, whatever the current directory."""
    folder = tmp_path / "etc"
    write(folder, "s3cret\n", "secret.txt")
    write(folder, "pem", "certs/ca.pem")
    (folder / "run").mkdir()
    write(
        folder,
        'state_dir = "state"\n' + WATCH + 'job_status = "/abs/job_status.json"\n'
        '[[handler]]\ntype = "webhook"\nurl = "https://h"\n'
        'secret_file = "secret.txt"\nca_file = "certs/ca.pem"\n'
        '[[handler]]\ntype = "command"\ncommand = ["true"]\ncwd = "run"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config("../etc/cvat-watch.toml", environ={})
    assert config.path == folder / "cvat-watch.toml"
    assert config.state_dir == folder / "state"
    assert config.watches[0].annotations == folder / "exports/street/annotations.xml"
    assert config.watches[0].job_status == Path("/abs/job_status.json")
    webhook, command = config.handlers
    assert isinstance(webhook, WebhookHandlerConfig)
    assert webhook.ca_file == folder / "certs/ca.pem"
    assert webhook.secret is not None and webhook.secret.reveal() == "s3cret"
    assert isinstance(command, CommandHandlerConfig)
    assert command.cwd == folder / "run"


def test_tilde_expands_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path starting with ~ means the home directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = load(tmp_path, 'state_dir = "~/state"\n' + WATCH)
    assert config.state_dir == tmp_path / "home" / "state"


def test_missing_annotations_file_is_not_an_error(tmp_path: Path) -> None:
    """A watch may be configured before its first export exists."""
    config = load(tmp_path, WATCH + 'job_status = "nothing/here.json"\n')
    assert not config.watches[0].annotations.exists()


# --- watches ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('state_dir = "x"\n', "watch", "at least one [[watch]]"),
        ('[[watch]]\nname = "a b"\nannotations = "x"\n', "watch[0].name", "letters, digits"),
        ('[[watch]]\nname = ""\nannotations = "x"\n', "watch[0].name", "non-empty"),
        ('[[watch]]\nname = "a"\nannotations = ""\n', "watch[0].annotations", "must not be empty"),
        (WATCH + '[[watch]]\nname = "street"\nannotations = "y"\n', "watch[1].name", "duplicate watch name"),
        (WATCH + 'completion = "done"\n', "watch[0].completion", "completed, accepted"),
        (WATCH + "debounce = -1\n", "watch[0].debounce", "at least 0"),
        (WATCH + "debounce = 2\nmax_wait = 1\n", "watch[0].max_wait", "at least debounce"),
        (WATCH + "poll_interval = 0\n", "watch[0].poll_interval", "greater than 0"),
        (WATCH + "recheck_interval = -5\n", "watch[0].recheck_interval", "greater than 0"),
        (WATCH + "max_wait = inf\n", "watch[0].max_wait", "finite"),
        (WATCH + "debounce = nan\n", "watch[0].debounce", "finite"),
        (WATCH + 'base_url = "cvat.example.com"\n', "watch[0].base_url", "http:// or https://"),
    ],
)
def test_watch_rules(tmp_path: Path, text: str, key: str, message: str) -> None:
    """Each watch rule fails on the key that breaks it."""
    error = fails(tmp_path, text)
    assert error.key == key
    assert message in str(error)


# --- handlers: keys, events, delays, timeouts ---------------------------------------------------


def test_default_handler_keys_count_per_type(tmp_path: Path) -> None:
    """Unnamed handlers are keyed <type>-<n>, n counting every handler of that type from 1."""
    config = load(
        tmp_path,
        WATCH
        + """
[[handler]]
type = "log"
[[handler]]
type = "webhook"
name = "ops-hook"
url = "https://a"
[[handler]]
type = "webhook"
url = "https://b"
[[handler]]
type = "log"
[[handler]]
type = "command"
command = ["true"]
""",
    )
    assert [h.key for h in config.handlers] == ["log-1", "ops-hook", "webhook-2", "log-2", "command-1"]


@pytest.mark.parametrize(
    ("handlers", "key", "message"),
    [
        (
            '[[handler]]\ntype = "log"\n[[handler]]\ntype = "log"\nname = "log-1"\n',
            "handler[1].name",
            "duplicate handler key 'log-1'",
        ),
        ('[[handler]]\ntype = "log"\nname = "a/b"\n', "handler[0].name", "letters, digits"),
        (
            '[[handler]]\ntype = "log"\nevents = ["task.completed", "task.done"]\n',
            "handler[0].events[1]",
            "unknown event",
        ),
        ('[[handler]]\ntype = "log"\nevents = []\n', "handler[0].events", "at least one event"),
        ('[[handler]]\ntype = "log"\nformat = "xml"\n', "handler[0].format", "text, json"),
        (
            '[[handler]]\ntype = "command"\ncommand = ["true"]\nretry_delays = []\n',
            "handler[0].retry_delays",
            "at least one delay",
        ),
        (
            '[[handler]]\ntype = "command"\ncommand = ["true"]\nretry_delays = [5, -1]\n',
            "handler[0].retry_delays[1]",
            "at least 0",
        ),
        (
            '[[handler]]\ntype = "command"\ncommand = ["true"]\ntimeout = 0\n',
            "handler[0].timeout",
            "greater than 0",
        ),
        ('[[handler]]\ntype = "command"\ncommand = []\n', "handler[0].command", "non-empty list"),
        ('[[handler]]\ntype = "command"\ncommand = [""]\n', "handler[0].command", "non-empty list"),
        (
            '[[handler]]\ntype = "command"\ncommand = ["true"]\ncwd = "nowhere"\n',
            "handler[0].cwd",
            "not found",
        ),
        (
            '[[handler]]\ntype = "webhook"\nurl = "https://h"\nconnect_timeout = 0\n',
            "handler[0].connect_timeout",
            "greater than 0",
        ),
        (
            '[[handler]]\ntype = "webhook"\nurl = "https://h"\nread_timeout = -1\n',
            "handler[0].read_timeout",
            "greater than 0",
        ),
        (
            '[[handler]]\ntype = "webhook"\nurl = "https://h"\ntimeout = 0\n',
            "handler[0].timeout",
            "greater than 0",
        ),
        (
            '[[handler]]\ntype = "apprise"\nurls = ["json://h/x"]\ntimeout = -2\n',
            "handler[0].timeout",
            "greater than 0",
        ),
        ('[[handler]]\ntype = "webhook"\nurl = "ftp://h/x"\n', "handler[0].url", "http:// or https://"),
        ('[[handler]]\ntype = "webhook"\nurl = "https://"\n', "handler[0].url", "with a host"),
        (
            '[[handler]]\ntype = "webhook"\nurl = "https://h"\nca_file = "ca.pem"\n',
            "handler[0].ca_file",
            "not found",
        ),
        (
            '[[handler]]\ntype = "webhook"\nurl = "https://h"\ncvat_signature = true\n',
            "handler[0].cvat_signature",
            "needs a secret",
        ),
        (
            '[[handler]]\ntype = "webhook"\nurl = "https://h"\nheaders = { "X:A" = "1" }\n',
            'handler[0].headers."X:A"',
            "not a valid HTTP header name",
        ),
        (
            '[[handler]]\ntype = "webhook"\nurl = "https://h"\nheaders = { "X-A" = "1\\r\\nX-B: 2" }\n',
            'handler[0].headers."X-A"',
            "line breaks",
        ),
    ],
)
def test_handler_rules(tmp_path: Path, handlers: str, key: str, message: str) -> None:
    """Each handler rule fails on the key that breaks it."""
    error = fails(tmp_path, WATCH + handlers)
    assert error.key == key
    assert message in str(error)


def test_events_default_and_all_are_accepted(tmp_path: Path) -> None:
    """Handlers get the default events unless told, and accept every known event."""
    config = load(
        tmp_path,
        WATCH
        + '[[handler]]\ntype = "log"\n[[handler]]\ntype = "log"\nevents = '
        + json.dumps(list(ALL_EVENTS))
        + "\n",
    )
    assert [h.events for h in config.handlers] == [DEFAULT_EVENTS, ALL_EVENTS]


def test_no_handler_is_allowed_but_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A config without handlers loads, with a warning that nobody will be notified."""
    with caplog.at_level(logging.WARNING, logger="cvat_watch.config"):
        config = load(tmp_path, WATCH)
    assert config.handlers == ()
    assert any("nobody is notified" in w for w in config.warnings)
    assert "nobody is notified" in caplog.text


# --- secrets ------------------------------------------------------------------------------------

HOOK = WATCH + '[[handler]]\ntype = "webhook"\nurl = "https://hooks.example.com/cvat"\n'


def test_secret_from_environment(tmp_path: Path) -> None:
    """secret_env reads the secret from the named environment variable."""
    config = load(tmp_path, HOOK + 'secret_env = "HOOK_SECRET"\n', {"HOOK_SECRET": f" {SECRET}\n"})
    webhook = config.handlers[0]
    assert isinstance(webhook, WebhookHandlerConfig)
    assert webhook.secret is not None and webhook.secret.reveal() == SECRET
    assert config.warnings == ()


def test_secret_from_file_is_stripped(tmp_path: Path) -> None:
    """secret_file reads the file and strips surrounding whitespace."""
    write(tmp_path, f"\n  {SECRET}  \n", "secret")
    webhook = load(tmp_path, HOOK + 'secret_file = "secret"\n').handlers[0]
    assert isinstance(webhook, WebhookHandlerConfig)
    assert webhook.secret == Secret(SECRET)


@pytest.mark.parametrize(
    ("line", "environ", "key", "message"),
    [
        (
            'secret_env = "HOOK_SECRET"',
            {},
            "handler[0].secret_env",
            "environment variable HOOK_SECRET is not set",
        ),
        (
            'secret_env = "HOOK_SECRET"',
            {"HOOK_SECRET": "  "},
            "handler[0].secret_env",
            "HOOK_SECRET is empty",
        ),
        ('secret_env = ""', {}, "handler[0].secret_env", "must name an environment variable"),
        ('secret_file = "missing-secret"', {}, "handler[0].secret_file", "missing-secret not found"),
        ('secret = ""', {}, "handler[0].secret", "must not be empty"),
        (
            f'secret = "{SECRET}"\nsecret_env = "HOOK_SECRET"',
            {"HOOK_SECRET": SECRET},
            "handler[0].secret_env",
            "only one of secret, secret_env and secret_file",
        ),
    ],
)
def test_secret_problems_are_errors(
    tmp_path: Path, line: str, environ: dict[str, str], key: str, message: str
) -> None:
    """An unset variable, a missing file or conflicting sources fail, naming the key but no value."""
    error = fails(tmp_path, HOOK + line + "\n", environ)
    assert error.key == key
    assert message in str(error)
    assert SECRET not in str(error)


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    """A secret file holding only whitespace fails rather than signing with an empty key."""
    write(tmp_path, "\n\n", "secret")
    error = fails(tmp_path, HOOK + 'secret_file = "secret"\n')
    assert error.key == "handler[0].secret_file"
    assert "is empty" in str(error)


def test_secret_of_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    """A secret typed into the wrong kind of value is rejected without quoting it."""
    # (A list is valid since key rotation: several secrets. A table is not.)
    error = fails(tmp_path, HOOK + f'secret = {{ value = "{SECRET}" }}\n')
    assert error.key == "handler[0].secret"
    assert SECRET not in str(error)


def test_inline_secret_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An inline secret works but warns (in Config.warnings and the log) without showing it."""
    with caplog.at_level(logging.WARNING, logger="cvat_watch.config"):
        config = load(tmp_path, HOOK + f'secret = "{SECRET}"\n')
    webhook = config.handlers[0]
    assert isinstance(webhook, WebhookHandlerConfig)
    assert webhook.secret == Secret(SECRET)
    assert [w for w in config.warnings if "handler[0].secret:" in w and "prefer secret_env" in w]
    assert "prefer secret_env or secret_file" in caplog.text
    assert SECRET not in caplog.text + "".join(config.warnings)


def test_http_url_with_secret_warns(tmp_path: Path) -> None:
    """A signed webhook over plain http warns that it is not encrypted; over https it does not."""
    environ = {"HOOK_SECRET": SECRET}
    plain = load(tmp_path, HOOK.replace("https://", "http://") + 'secret_env = "HOOK_SECRET"\n', environ)
    assert any("signed but not encrypted" in w for w in plain.warnings)
    assert load(tmp_path, HOOK + 'secret_env = "HOOK_SECRET"\n', environ).warnings == ()
    assert load(tmp_path, HOOK.replace("https://", "http://")).warnings == ()


def test_unverified_tls_warns(tmp_path: Path) -> None:
    """verify_tls = false is allowed but warned about."""
    config = load(tmp_path, HOOK + "verify_tls = false\n")
    assert [w for w in config.warnings if "handler[0].verify_tls" in w]


def test_credential_looking_header_warns(tmp_path: Path) -> None:
    """A header such as Authorization warns that header values are not kept secret."""
    config = load(tmp_path, HOOK + 'headers = { "Authorization" = "Bearer x", "X-Team" = "ml" }\n')
    assert len(config.warnings) == 1
    assert "headers.Authorization" in config.warnings[0]


def test_url_with_user_info_warns(tmp_path: Path) -> None:
    """A webhook URL carrying user:password warns, without showing them."""
    config = load(tmp_path, HOOK.replace("https://", f"https://user:{SECRET}@"))
    assert any("contains credentials" in w for w in config.warnings)
    assert SECRET not in "".join(config.warnings)


# --- apprise ----------------------------------------------------------------------------------

APPRISE = WATCH + '[[handler]]\ntype = "apprise"\n'


def test_apprise_urls_from_environment_split_on_spaces_and_commas(tmp_path: Path) -> None:
    """urls_env holds several URLs separated by whitespace or commas."""
    environ = {"APPRISE_URLS": " tgram://bot/chat,  json://127.0.0.1:9/x\nmailto://u:p@example.com "}
    handler = load(tmp_path, APPRISE + 'urls_env = "APPRISE_URLS"\n', environ).handlers[0]
    assert isinstance(handler, AppriseHandlerConfig)
    assert [u.reveal() for u in handler.urls] == [
        "tgram://bot/chat",
        "json://127.0.0.1:9/x",
        "mailto://u:p@example.com",
    ]


def test_apprise_urls_from_file_skip_comments(tmp_path: Path) -> None:
    """urls_file holds URLs one or more per line; lines starting with # are comments."""
    write(tmp_path, "# team chat\ntgram://bot/chat\n\n  # old: slack://x\njson://h/a, json://h/b\n", "urls")
    handler = load(tmp_path, APPRISE + 'urls_file = "urls"\n').handlers[0]
    assert isinstance(handler, AppriseHandlerConfig)
    assert [u.reveal() for u in handler.urls] == ["tgram://bot/chat", "json://h/a", "json://h/b"]


def test_inline_apprise_urls_with_credentials_warn(tmp_path: Path) -> None:
    """Inline Apprise URLs with a user, path or query warn; a bare scheme://host does not."""
    config = load(
        tmp_path,
        APPRISE + f'urls = ["json://127.0.0.1:8080", "tgram://{SECRET}/chat", '
        f'"mailto://me:{SECRET}@example.com"]\n',
    )
    assert len(config.warnings) == 1
    assert "urls[1], urls[2]" in config.warnings[0]
    assert "prefer urls_env/urls_file" in config.warnings[0]
    assert SECRET not in config.warnings[0]
    assert load(tmp_path, APPRISE + 'urls = ["json://127.0.0.1:8080/"]\n').warnings == ()


@pytest.mark.parametrize(
    ("lines", "environ", "key", "message"),
    [
        ("", {}, "handler[0].urls", "give urls, urls_env or urls_file"),
        ('urls = ["json://h"]\nurls_env = "U"', {"U": "json://h"}, "handler[0].urls_env", "only one of"),
        ("urls = []", {}, "handler[0].urls", "at least one"),
        (f'urls = ["json://h", "{SECRET}"]', {}, "handler[0].urls[1]", "not an Apprise URL"),
        ('urls_env = "U"', {}, "handler[0].urls_env", "environment variable U is not set"),
        ('urls_env = "U"', {"U": " , "}, "handler[0].urls_env", "holds no Apprise URL"),
        (
            'urls_env = "U"',
            {"U": f"json://h {SECRET}"},
            "handler[0].urls_env",
            "entry 2 is not an Apprise URL",
        ),
        ('urls_file = "nope"', {}, "handler[0].urls_file", "not found"),
    ],
)
def test_apprise_rules(tmp_path: Path, lines: str, environ: dict[str, str], key: str, message: str) -> None:
    """Apprise URL sources are exclusive, required, and their problems never quote a URL."""
    error = fails(tmp_path, APPRISE + lines + "\n", environ)
    assert error.key == key
    assert message in str(error)
    assert SECRET not in str(error)


# --- nothing secret leaks -------------------------------------------------------------------


def test_repr_and_to_dict_never_show_secrets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """repr(), str(), to_dict(), JSON and log lines show '***' where every secret would be."""
    environ = {"HOOK_SECRET": SECRET + "-env", "APPRISE_URLS": f"tgram://{SECRET}-envurl/chat"}
    write(tmp_path, SECRET + "-file", "secret")
    with caplog.at_level(logging.DEBUG):
        config = load(
            tmp_path,
            WATCH
            + f"""
[[handler]]
type = "webhook"
url = "http://h/a"
secret = "{SECRET}-inline"
[[handler]]
type = "webhook"
url = "https://h/b"
secret_env = "HOOK_SECRET"
[[handler]]
type = "webhook"
url = "https://h/c"
secret_file = "secret"
[[handler]]
type = "apprise"
urls = ["tgram://{SECRET}-inlineurl/chat"]
[[handler]]
type = "apprise"
urls_env = "APPRISE_URLS"
""",
            environ,
        )
    data = to_dict(config)
    shown = "\n".join([repr(config), str(config), json.dumps(data), caplog.text, *config.warnings])
    assert SECRET not in shown
    assert [h["secret"] for h in data["handlers"][:3]] == ["***"] * 3
    assert data["handlers"][3]["urls"] == ["***"]
    assert "Secret('***')" in repr(config)
    revealed = [
        h.secret.reveal() for h in config.handlers[:3] if isinstance(h, WebhookHandlerConfig) and h.secret
    ]
    assert revealed == [SECRET + "-inline", SECRET + "-env", SECRET + "-file"]


def test_to_dict_round_trips_with_type_tags(tmp_path: Path) -> None:
    """to_dict tags each handler with its type, and from_dict rebuilds the same tree (secrets redacted)."""
    config = load(
        tmp_path,
        WATCH + '[[handler]]\ntype = "webhook"\nurl = "https://h"\nsecret_env = "S"\n'
        'headers = { "X-Team" = "ml" }\n[[handler]]\ntype = "log"\n'
        '[[handler]]\ntype = "command"\ncommand = ["true"]\n',
        {"S": SECRET},
    )
    data = to_dict(config)
    assert [h["type"] for h in data["handlers"]] == ["webhook", "log", "command"]
    assert data["watches"][0]["annotations"] == str(tmp_path / "exports/street/annotations.xml")
    assert data["handlers"][0]["headers"] == [["X-Team", "ml"]]
    rebuilt = from_dict(Config, json.loads(json.dumps(data)))
    assert to_dict(rebuilt) == data
    assert rebuilt.handlers[1:] == config.handlers[1:]
    webhook = rebuilt.handlers[0]
    assert isinstance(webhook, WebhookHandlerConfig)
    assert webhook.secret == Secret("***")


# --- the state directory ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"STATE_DIRECTORY": "/var/lib/cvat-watch", "XDG_STATE_HOME": "/x"}, "/var/lib/cvat-watch"),
        ({"STATE_DIRECTORY": "/var/lib/a:/var/lib/b"}, "/var/lib/a"),
        ({"XDG_STATE_HOME": "/home/me/.state", "HOME": "/home/me"}, "/home/me/.state/cvat-watch"),
        ({"XDG_STATE_HOME": "relative", "HOME": "/home/me"}, "/home/me/.local/state/cvat-watch"),
        ({"STATE_DIRECTORY": "", "HOME": "/home/me"}, "/home/me/.local/state/cvat-watch"),
        ({"HOME": "/home/me"}, "/home/me/.local/state/cvat-watch"),
    ],
)
def test_default_state_dir(environ: dict[str, str], expected: str) -> None:
    """$STATE_DIRECTORY wins, then an absolute $XDG_STATE_HOME, then ~/.local/state."""
    assert default_state_dir(environ) == Path(expected)


def test_default_state_dir_without_home_uses_the_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """With neither variable nor $HOME in the mapping, the account's home directory is used."""
    assert default_state_dir({}) == Path.home() / ".local" / "state" / "cvat-watch"


def test_two_config_files_get_two_default_state_folders(tmp_path: Path, env: dict[str, str]) -> None:
    """Without state_dir, each configuration file has its own state folder: named after the file,
    told apart by a hash of its absolute path (two prod.toml in two folders never share one)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = load(tmp_path / "a", WATCH, env)
    second = load(tmp_path / "b", WATCH, env)
    assert first.state_dir != second.state_dir
    assert (
        first.state_dir.parent
        == second.state_dir.parent
        == tmp_path / "home" / ".local" / "state" / "cvat-watch"
    )
    assert first.state_dir.name.startswith("cvat-watch-")
    # The same file gives the same folder every time.
    assert load(tmp_path / "a", WATCH, env).state_dir == first.state_dir


def test_state_directory_and_state_dir_still_win(tmp_path: Path, env: dict[str, str]) -> None:
    """systemd's $STATE_DIRECTORY and an explicit state_dir are used as they are."""
    assert load(tmp_path, WATCH, {**env, "STATE_DIRECTORY": "/var/lib/cw"}).state_dir == Path("/var/lib/cw")
    assert load(tmp_path, 'state_dir = "here"\n' + WATCH, env).state_dir == tmp_path / "here"


def test_a_state_in_the_old_shared_default_folder_is_pointed_out(tmp_path: Path, env: dict[str, str]) -> None:
    """A state database in the shared folder earlier versions used gets a warning saying where to move it."""
    shared = tmp_path / "home" / ".local" / "state" / "cvat-watch"
    shared.mkdir(parents=True)
    (shared / "cvat-watch.db").write_bytes(b"")
    config = load(tmp_path, WATCH + '[[handler]]\ntype = "log"\n', env)
    (warning,) = config.warnings
    assert f"mv {shared}/cvat-watch.db* {config.state_dir}/" in warning


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_retention_days_must_be_positive(tmp_path: Path, value: str) -> None:
    """retention_days is a positive number of days."""
    error = fails(tmp_path, f"retention_days = {value}\n" + WATCH)
    assert error.key == "retention_days"


def test_config_without_state_dir_uses_the_environment(tmp_path: Path) -> None:
    """load_config takes the default state directory from the environ it is given."""
    config = load(tmp_path, WATCH, {"STATE_DIRECTORY": str(tmp_path / "systemd")})
    assert config.state_dir == tmp_path / "systemd"


# --- the shipped example and unit -------------------------------------------------------------


def test_example_config_loads_cleanly() -> None:
    """config/cvat-watch.toml loads with no error and no warning, pointed at config/example/."""
    config = load_config(EXAMPLE, environ={})
    assert config.warnings == ()
    assert config.state_dir == EXAMPLE.parent / "example" / ".state"
    assert [w.name for w in config.watches] == ["example"]
    assert config.watches[0].annotations == EXAMPLE.parent / "example" / "annotations.xml"
    assert config.watches[0].job_status == EXAMPLE.parent / "example" / "job_status.json"
    assert [type(h) for h in config.handlers] == [LogHandlerConfig]


_OPTION = re.compile(r"^(?:# )?([a-z_]+) = ")


def _example_options() -> list[tuple[str, str | None, str]]:
    """Every `key = value` line of the example (commented or not) with its section."""
    options: list[tuple[str, str | None, str]] = []
    section, handler_type = "top", None
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        body = line[2:] if line.startswith("# ") else line
        if body.strip() in ("[[watch]]", "[[handler]]"):
            section, handler_type = body.strip()[2:-2], None
            continue
        if body.strip() in ("[http]", "[watch.cvat]"):
            section, handler_type = body.strip()[1:-1], None
            continue
        if not _OPTION.match(line):
            continue
        if section == "handler" and body.startswith("type = "):
            handler_type = body.split('"')[1]
            continue
        options.append((section, handler_type, body))
    return options


@pytest.mark.parametrize(("section", "handler_type", "line"), _example_options())
def test_every_option_shown_in_the_example_is_real(
    tmp_path: Path, section: str, handler_type: str | None, line: str
) -> None:
    """Each option the example shows, once uncommented, is a known key of the right type."""
    key = line.split(" = ")[0]
    watch = "".join(part for part in WATCH.splitlines(keepends=True) if not part.startswith(f"{key} ="))
    if section == "top":
        text = line + "\n" + WATCH
    elif section == "watch":
        text = watch + line + "\n"
    elif section in ("http", "watch.cvat"):
        text = WATCH + f"[{section}]\n{line}\n"
    else:
        text = WATCH + f'[[handler]]\ntype = "{handler_type}"\n{line}\n'
    environ = {"CVAT_WATCH_WEBHOOK_SECRET": "x", "CVAT_WATCH_APPRISE_URLS": "json://h"}
    try:
        load(tmp_path, text, environ)
    except ConfigError as error:
        # Missing companions (a url, an absent /etc file) are fine; the option itself is not at fault.
        assert "unknown key" not in str(error)
        assert "expected a" not in str(error)


def test_example_shows_enough_options() -> None:
    """The example documents the options of every section (guards the parser above)."""
    options = _example_options()
    assert len(options) >= 30
    assert {h for s, h, _ in options if s == "handler"} == {"log", "webhook", "apprise", "command"}
    assert {s for s, _, _ in options} == {"top", "watch", "watch.cvat", "handler", "http"}


def test_unit_file_has_the_essential_directives() -> None:
    """The systemd unit is a notify service with watchdog, reload, state directory and hardening."""
    lines = {line.strip() for line in UNIT.read_text(encoding="utf-8").splitlines()}
    for directive in (
        "Type=notify-reload",
        "NotifyAccess=main",
        "Restart=on-failure",
        "RestartSec=5",
        "WatchdogSec=30",
        "StateDirectory=cvat-watch",
        "DynamicUser=yes",
        "UMask=0077",
        "EnvironmentFile=-/etc/cvat-watch/env",
        "TimeoutStopSec=30",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "WantedBy=multi-user.target",
        "ExecStart=/opt/cvat-watch/bin/cvat-watch run --config /etc/cvat-watch/cvat-watch.toml",
    ):
        assert directive in lines, directive
