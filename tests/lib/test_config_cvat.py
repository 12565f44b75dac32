"""``[watch.cvat]`` and ``[http]``: what a person writes, and the one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from cvat_watch.config import load_config
from cvat_watch.converter import to_dict
from cvat_watch.errors import ConfigError

ENV = {"CVAT_TOKEN": "tok-123-secret", "CVAT_PW": "pw-456-secret", "HOOK": "hook-789-secret"}


def write(tmp_path: Path, cvat: str, *, top: str = "", job_status: bool = True) -> Path:
    path = tmp_path / "cvat-watch.toml"
    jobs = 'job_status = "exports/job_status.json"\n' if job_status else ""
    path.write_text(
        f'[[watch]]\nname = "street"\nannotations = "exports/annotations.xml"\n{jobs}'
        f"[watch.cvat]\n{cvat}\n{top}\n"
    )
    return path


def test_a_full_table_resolves_with_secrets_redacted(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            'url = "https://cvat.example.com/"\nproject = 12\ntoken_env = "CVAT_TOKEN"\n'
            'organization = "my-org"\npoll_interval = 10\nexport = "on-change"\n'
            'webhook_secret_env = "HOOK"',
            top='[http]\nlisten = "127.0.0.1:9000"',
        ),
        environ=ENV,
    )
    cvat = config.watches[0].cvat
    assert cvat is not None
    assert (cvat.url, cvat.project, cvat.task, cvat.organization) == (
        "https://cvat.example.com",
        12,
        None,
        "my-org",
    )
    assert (cvat.poll_interval, cvat.export, cvat.page_size) == (10, "on-change", 500)
    assert cvat.token is not None and cvat.token.reveal() == "tok-123-secret"
    assert cvat.webhook_secret is not None and cvat.webhook_secret.reveal() == "hook-789-secret"
    assert config.http is not None and (config.http.host, config.http.port) == ("127.0.0.1", 9000)
    shown = repr(config) + str(to_dict(config))
    assert "tok-123-secret" not in shown and "hook-789-secret" not in shown


def test_username_and_password_and_task(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path, 'url = "http://127.0.0.1:8080"\ntask = 5\nusername = "bot"\npassword_env = "CVAT_PW"'
        ),
        environ=ENV,
    )
    cvat = config.watches[0].cvat
    assert cvat is not None and cvat.task == 5 and cvat.username == "bot"
    assert cvat.password is not None and cvat.password.reveal() == "pw-456-secret"
    assert config.http is None  # no [http] table: no listener


@pytest.mark.parametrize(
    ("cvat", "key", "message"),
    [
        ('url = "cvat.example.com"\nproject = 1\ntoken_env = "CVAT_TOKEN"', "watch[0].cvat.url", "http"),
        ('url = "https://u:p@cvat.example.com"\nproject = 1\ntoken_env = "CVAT_TOKEN"', "watch[0].cvat.url",
         "credentials"),
        ('url = "https://cvat.example.com"\ntoken_env = "CVAT_TOKEN"', "watch[0].cvat.project", "exactly one"),
        ('url = "https://c.example"\nproject = 1\ntask = 2\ntoken_env = "CVAT_TOKEN"', "watch[0].cvat.project",
         "exactly one"),
        ('url = "https://c.example"\nproject = 0\ntoken_env = "CVAT_TOKEN"', "watch[0].cvat.project", "positive"),
        ('url = "https://c.example"\nproject = 1', "watch[0].cvat.token_env", "required"),
        ('url = "https://c.example"\nproject = 1\ntoken_env = "NOPE"', "watch[0].cvat.token_env", "NOPE is not set"),
        ('url = "https://c.example"\nproject = 1\ntoken_env = "CVAT_TOKEN"\nusername = "x"',
         "watch[0].cvat.username", "only one"),
        ('url = "https://c.example"\nproject = 1\nusername = "x"', "watch[0].cvat.password_env", "password"),
        ('url = "https://c.example"\nproject = 1\ntoken_env = "CVAT_TOKEN"\npassword_env = "CVAT_PW"',
         "watch[0].cvat.password_env", "goes with username"),
        ('url = "https://c.example"\nproject = 1\ntoken_env = "CVAT_TOKEN"\nexport = "always"',
         "watch[0].cvat.export", "one of"),
        ('url = "https://c.example"\nproject = 1\ntoken_env = "CVAT_TOKEN"\npoll_interval = 0',
         "watch[0].cvat.poll_interval", "greater than"),
        ('url = "https://c.example"\nproject = 1\ntoken_env = "CVAT_TOKEN"\norganization = "a b"',
         "watch[0].cvat.organization", "slug"),
        ('url = "https://c.example"\nproject = 1\ntoken_env = "CVAT_TOKEN"\nwebhook_secret_env = "HOOK"',
         "watch[0].cvat.webhook_secret_env", "[http]"),
        ('url = "https://c.example"\nproject = 1\ntoken_env = "CVAT_TOKEN"\ntokn = "x"', "watch[0].cvat.tokn",
         "unknown key"),
        ('url = "https://c.example"\nproject = 1\ntoken_env = "CVAT_TOKEN"\nca_file = "missing.pem"',
         "watch[0].cvat.ca_file", "not found"),
    ],
)  # fmt: skip
def test_a_wrong_key_is_named(tmp_path: Path, cvat: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, cvat), environ=ENV)
    assert caught.value.key == key, str(caught.value)
    assert message in str(caught.value)
    assert "tok-123-secret" not in str(caught.value)


def test_job_status_is_required_and_listen_is_checked(tmp_path: Path) -> None:
    table = 'url = "https://c.example"\nproject = 1\ntoken_env = "CVAT_TOKEN"'
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, table, job_status=False), environ=ENV)
    assert caught.value.key == "watch[0].job_status"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, table, top='[http]\nlisten = "8765"'), environ=ENV)
    assert caught.value.key == "http.listen"
    config = load_config(write(tmp_path, table, top='[http]\nlisten = "0.0.0.0:8765"'), environ=ENV)
    assert any("beyond this machine" in warning for warning in config.warnings)
