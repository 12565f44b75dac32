"""The ``type = "nats"`` handler table: subject template, stream, duplicate window, credentials."""

from __future__ import annotations

from pathlib import Path

import pytest
from cvat_watch.config import DEFAULT_RETRY_DELAYS, Config, NatsHandlerConfig, Secret, load_config
from cvat_watch.converter import to_dict
from cvat_watch.errors import ConfigError

WATCHES = (
    '[[watch]]\nname = "street"\nannotations = "a.xml"\n[[watch]]\nname = "lab.two"\nannotations = "b.xml"\n'
)
NATS = '[[handler]]\ntype = "nats"\nurl = "nats://127.0.0.1:4222"\n'
PASSWORD = "n4ts-pa55word-secret"


def load(folder: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    path = folder / "cvat-watch.toml"
    path.write_text(WATCHES + NATS + text, encoding="utf-8")
    return load_config(path, environ=environ or {})


def fails(folder: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(folder, text, environ)
    return caught.value


def test_defaults_and_derived_stream_subjects(tmp_path: Path) -> None:
    """A stream named without filters gets the template's literal prefix + '>' and a window covering the retries."""
    config = load(tmp_path, 'subject = "cvat.{watch}.{type}"\nstream = "CVAT"\n')
    [handler] = config.handlers
    assert isinstance(handler, NatsHandlerConfig)
    assert handler.key == "nats-1"
    assert handler.stream_subjects == ("cvat.>",)
    assert handler.create_stream is True
    assert handler.duplicate_window >= sum(DEFAULT_RETRY_DELAYS) + 86400
    assert (handler.user, handler.password, handler.token, handler.creds_file) == (None, None, None, None)
    assert config.warnings == ()


def test_password_from_env_token_from_file_and_creds_file(tmp_path: Path) -> None:
    """Secrets come from the environment or a file and are held as Secret; a creds file must be readable."""
    config = load(
        tmp_path,
        'subject = "cvat.{type}"\nuser = "cvat"\npassword_env = "NATS_PASSWORD"\n',
        {"NATS_PASSWORD": PASSWORD},
    )
    handler = config.handlers[0]
    assert isinstance(handler, NatsHandlerConfig)
    assert handler.password == Secret(PASSWORD)
    assert PASSWORD not in repr(config) and PASSWORD not in str(to_dict(config))

    (tmp_path / "token").write_text("tok-en\n")
    handler = load(tmp_path, 'subject = "cvat.{type}"\ntoken_file = "token"\n').handlers[0]
    assert isinstance(handler, NatsHandlerConfig) and handler.token == Secret("tok-en")

    (tmp_path / "app.creds").write_text("-----BEGIN NATS USER JWT-----\n...\n")
    handler = load(tmp_path, 'subject = "cvat.{type}"\ncreds_file = "app.creds"\n').handlers[0]
    assert isinstance(handler, NatsHandlerConfig) and handler.creds_file == tmp_path / "app.creds"


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('subject = "cvat.{task}"', "handler[0].subject", "knows only {watch} and {type}"),
        ('subject = "cvat.>"', "handler[0].subject", "wildcards"),
        ('subject = "cvat. {type}"', "handler[0].subject", "whitespace"),
        ('subject = "cvat.{type"', "handler[0].subject", "not a valid template"),
        ('subject = "{watch}.{type}"\nstream = "S"', "handler[0].stream_subjects", "no safe filter"),
        (
            'subject = "cvat.{watch}.{type}"\nstream = "S"\nstream_subjects = ["cvat.street.>"]',
            "handler[0].stream_subjects",
            "do not capture 'cvat.lab.two.task.completed'",
        ),
        ('subject = "cvat.{type}"\nstream = "a.b"', "handler[0].stream", "stream name"),
        (
            'subject = "cvat.{type}"\nstream_subjects = ["cvat.>"]',
            "handler[0].stream_subjects",
            "needs stream",
        ),
        ('subject = "cvat.{type}"\nuser = "u"', "handler[0].user", "needs password_env"),
        ('subject = "cvat.{type}"\npassword_env = "P"', "handler[0].password_env", "needs user"),
        (
            'subject = "cvat.{type}"\ntoken_env = "T"\ncreds_file = "c"',
            "handler[0].creds_file",
            "one way to authenticate",
        ),
        ('subject = "cvat.{type}"\ntoken_env = "MISSING"', "handler[0].token_env", "is not set"),
        ('subject = "cvat.{type}"\ncreds_file = "nope.creds"', "handler[0].creds_file", "not found"),
        ('subject = "cvat.{type}"\nack_timeout = 0', "handler[0].ack_timeout", "greater than 0"),
        ('subject = "cvat.{type}"\nurl2 = 1', "handler[0].url2", "unknown key"),
    ],
)
def test_rules(tmp_path: Path, text: str, key: str, message: str) -> None:
    """Each invalid table fails at load time naming the key and the problem."""
    error = fails(tmp_path, text)
    assert error.key == key
    assert message in error.message


def test_url_must_be_nats(tmp_path: Path) -> None:
    """A non-NATS URL is refused at load time."""
    path = tmp_path / "cvat-watch.toml"
    path.write_text(WATCHES + '[[handler]]\ntype = "nats"\nurl = "http://x"\nsubject = "a.{type}"\n')
    with pytest.raises(ConfigError, match="nats:// or tls://") as caught:
        load_config(path, environ={})
    assert caught.value.key == "handler[0].url"


def test_short_duplicate_window_warns(tmp_path: Path) -> None:
    """A duplicate window shorter than the retry schedule is allowed but warned about."""
    config = load(tmp_path, 'subject = "cvat.{type}"\nstream = "S"\nduplicate_window = 120\n')
    assert any("shorter than the retry schedule" in w for w in config.warnings)
    handler = config.handlers[0]
    assert isinstance(handler, NatsHandlerConfig) and handler.duplicate_window == 120.0


def test_missing_secret_is_not_echoed(tmp_path: Path) -> None:
    """An empty password variable is an error that names the variable, not a value."""
    error = fails(tmp_path, 'subject = "a.{type}"\nuser = "u"\npassword_env = "P"\n', {"P": "  "})
    assert "environment variable P is empty" in str(error)


def test_check_config_describes_the_handler_without_the_password(tmp_path: Path) -> None:
    """`cvat-watch check-config` names URL, subject, stream and the kind of auth, never the password."""
    from cvat_watch.testing.process import run_cli

    path = tmp_path / "cvat-watch.toml"
    path.write_text(
        WATCHES
        + NATS
        + 'subject = "cvat.{watch}.{type}"\nstream = "CVAT"\nuser = "u"\npassword_env = "NATS_PW"\n'
    )
    result = run_cli("check-config", "--config", str(path), env={"NATS_PW": PASSWORD})
    assert result.returncode == 0, result.stderr
    assert "nats nats://127.0.0.1:4222 subject cvat.{watch}.{type}, stream CVAT (auth: user" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
