"""Resolution of the raw tree into the public one: paths, secrets, defaults and cross-key rules."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, cast
from urllib.parse import urlsplit

import attrs

from cvat_watch._subjects import (
    default_stream_subjects,
    render_subject,
    subject_error,
    subject_matches,
    template_error,
)
from cvat_watch.config._model import (
    DEFAULT_RETRY_DELAYS,
    STATE_FILE_NAME,
    AppriseHandlerConfig,
    CommandHandlerConfig,
    Config,
    CvatSourceConfig,
    HandlerConfig,
    HttpConfig,
    LogHandlerConfig,
    NatsHandlerConfig,
    WatchConfig,
    WebhookHandlerConfig,
    default_state_dir,
)
from cvat_watch.config._raw import (
    _RawApprise,
    _RawCommand,
    _RawCvat,
    _RawFile,
    _RawHandler,
    _RawHttp,
    _RawLog,
    _RawNats,
    _RawWatch,
    _RawWebhook,
)
from cvat_watch.converter import Secret
from cvat_watch.errors import ConfigError
from cvat_watch.eventtypes import ALL_EVENTS, DEFAULT_EVENTS

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SENSITIVE_HEADER = re.compile(r"auth|token|secret|key|cookie|passw", re.IGNORECASE)
_URL_LIST_SEPARATORS = re.compile(r"[\s,]+")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)?")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _looks_like_credentials(url: str) -> bool:
    """Apprise URLs carry tokens in the user part, the path or the query."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return True
    return "@" in url or parts.path not in ("", "/") or bool(parts.query) or bool(parts.fragment)


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6) → (host, port); raises ValueError with the reason."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected host:port, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit():
        raise ValueError(f"port must be a number, got {port_text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port}")
    return host, port


@attrs.define
class _Resolver:
    """Turns the raw tree into the public one; knows the file for errors and paths."""

    file: Path
    environ: Mapping[str, str]
    _warnings: list[str] = attrs.Factory(list)

    # -- reporting

    def fail(self, key: str, message: str) -> NoReturn:
        raise ConfigError(message, path=self.file, key=key)

    def warn(self, key: str, message: str) -> None:
        self._warnings.append(f"{self.file}:{key}: {message}")

    # -- small value rules

    def path(self, key: str, value: str) -> Path:
        if not value:
            self.fail(key, "must not be empty")
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.file.parent / path

    def optional_path(self, key: str, value: str | None) -> Path | None:
        return None if value is None else self.path(key, value)

    def tls(self, key: str, verify_tls: bool, ca_file: str | None) -> Path | None:
        """The ``verify_tls`` warning and the ``ca_file`` path of an HTTPS client's table."""
        if not verify_tls:
            self.warn(f"{key}.verify_tls", "TLS certificates are not verified; prefer ca_file")
        path = self.optional_path(f"{key}.ca_file", ca_file)
        if path is not None and not path.is_file():
            # Whether it holds certificates is check-config's question: loading it is TLS work.
            what = "is not a file (give a PEM bundle)" if path.exists() else "not found"
            self.fail(f"{key}.ca_file", f"CA file {path} {what}")
        return path

    def number(self, key: str, value: float, *, minimum: float = 0.0, strict: bool) -> float:
        if not math.isfinite(value):
            self.fail(key, "must be a finite number")
        if strict and value <= minimum:
            self.fail(key, f"must be greater than {minimum:g}")
        if not strict and value < minimum:
            self.fail(key, f"must be at least {minimum:g}")
        return value

    def duration(self, key: str, value: float | str) -> float:
        """Seconds from a number or a string like ``"30s"``, ``"5m"``, ``"1h"``, ``"500ms"``."""
        if isinstance(value, str):
            found = _DURATION.fullmatch(value.strip())
            if found is None:
                self.fail(key, 'must be a number of seconds or a duration like "30s", "5m", "1h"')
            value = float(found[1]) * _DURATION_UNITS[found[2] or "s"]
        return self.number(key, float(value), strict=True)

    def choice(self, key: str, value: str, choices: Sequence[str]) -> str:
        if value not in choices:
            self.fail(key, f"must be one of: {', '.join(choices)}")
        return value

    def name(self, key: str, value: str) -> str:
        if not _NAME.fullmatch(value):
            self.fail(key, "must be non-empty and use only letters, digits, '_', '.' and '-'")
        return value

    def events(self, key: str, value: tuple[str, ...] | None) -> tuple[str, ...]:
        if value is None:
            return DEFAULT_EVENTS
        if not value:
            self.fail(key, "must list at least one event (or be left out for the default)")
        for index, event in enumerate(value):
            if event not in ALL_EVENTS:
                self.fail(f"{key}[{index}]", f"unknown event (expected one of: {', '.join(ALL_EVENTS)})")
        return tuple(dict.fromkeys(value))

    def retry_delays(self, key: str, value: tuple[float, ...] | None) -> tuple[float, ...]:
        if value is None:
            return DEFAULT_RETRY_DELAYS
        if not value:
            self.fail(key, "must list at least one delay in seconds")
        for index, delay in enumerate(value):
            self.number(f"{key}[{index}]", delay, strict=False)
        return value

    def env(self, key: str, name: str) -> str:
        if not name:
            self.fail(key, "must name an environment variable")
        value = self.environ.get(name)
        if value is None:
            self.fail(key, f"environment variable {name} is not set")
        if not value.strip():
            self.fail(key, f"environment variable {name} is empty")
        return value.strip()

    def read_file(self, key: str, value: str, *, what: str) -> str:
        path = self.path(key, value)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            self.fail(key, f"{what} {path} not found")
        except UnicodeDecodeError:
            self.fail(key, f"{what} {path} is not UTF-8 text")
        except OSError as exc:
            self.fail(key, f"cannot read {what} {path}: {exc.strerror}")
        if not text:
            self.fail(key, f"{what} {path} is empty")
        return text

    # -- the tree

    def config(self, raw: _RawFile) -> Config:
        if raw.state_dir is None:
            state_dir = default_state_dir(self.environ, config_file=self.file)
            self.old_default_state(state_dir)
        else:
            state_dir = self.path("state_dir", raw.state_dir)
        retention_days = self.number("retention_days", raw.retention_days, strict=True)
        if not raw.watch:
            self.fail("watch", "at least one [[watch]] table is required")
        watches = tuple(self.watch(f"watch[{i}]", w) for i, w in enumerate(raw.watch))
        seen_watches: dict[str, int] = {}
        for index, watch in enumerate(watches):
            if watch.name in seen_watches:
                self.fail(
                    f"watch[{index}].name",
                    f"duplicate watch name {watch.name!r} (also watch[{seen_watches[watch.name]}])",
                )
            seen_watches[watch.name] = index

        handlers: list[HandlerConfig] = []
        per_type: dict[str, int] = {}
        seen_keys: dict[str, int] = {}
        for index, raw_handler in enumerate(raw.handler):
            key = f"handler[{index}]"
            per_type[raw_handler.type] = per_type.get(raw_handler.type, 0) + 1
            if raw_handler.name is None:
                handler_key = f"{raw_handler.type}-{per_type[raw_handler.type]}"
            else:
                handler_key = self.name(f"{key}.name", raw_handler.name)
            if handler_key in seen_keys:
                self.fail(
                    f"{key}.name",
                    f"duplicate handler key {handler_key!r} (also handler[{seen_keys[handler_key]}]; "
                    "unnamed handlers get the key <type>-<n>)",
                )
            seen_keys[handler_key] = index
            handlers.append(self.handler(key, handler_key, raw_handler, watches))
        if not handlers:
            self.warn("handler", "no [[handler]] tables: changes are recorded but nobody is notified")
        http = None if raw.http is None else self.http("http", raw.http)
        for index, raw_watch in enumerate(raw.watch):
            raw_cvat = raw_watch.cvat
            if raw_cvat is None or http is not None:
                continue
            for secret_key in ("webhook_secret_env", "webhook_secret_file"):
                if getattr(raw_cvat, secret_key) is not None:
                    self.fail(
                        f"watch[{index}].cvat.{secret_key}",
                        "CVAT's webhooks need the daemon's listener: "
                        'add an [http] table (listen = "127.0.0.1:8765")',
                    )

        return Config(
            path=self.file,
            state_dir=state_dir,
            watches=watches,
            handlers=tuple(handlers),
            warnings=tuple(self._warnings),
            retention_days=retention_days,
            http=http,
        )

    def http(self, key: str, raw: _RawHttp) -> HttpConfig:
        try:
            host, port = parse_listen(raw.listen)
        except ValueError:
            host, port = "", 0
        if not port:
            self.fail(f"{key}.listen", 'must be host:port, e.g. "127.0.0.1:8765"')
        if host not in ("127.0.0.1", "::1", "localhost"):
            self.warn(
                f"{key}.listen",
                f"listens on {host}, beyond this machine: "
                "CVAT's webhooks are signed, but put a TLS proxy in front",
            )
        return HttpConfig(listen=raw.listen, host=host, port=port)

    def cvat(self, key: str, watch: _RawWatch, raw: _RawCvat) -> CvatSourceConfig:
        if not _is_http_url(raw.url):
            self.fail(f"{key}.url", "must be an http:// or https:// URL with a host (the CVAT server)")
        parts = urlsplit(raw.url)
        if parts.username is not None or parts.password is not None:
            self.fail(f"{key}.url", "must not contain credentials: use token_env, token_file or password_env")
        if parts.query or parts.fragment:
            self.fail(f"{key}.url", "must be the server's address only (scheme, host, port), without a query")
        if (raw.project is None) == (raw.task is None):
            self.fail(f"{key}.project", "give exactly one of project and task (the id to watch)")
        for name in ("project", "task"):
            value = getattr(raw, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                self.fail(f"{key}.{name}", "must be a positive id")
        if watch.job_status is None:
            self.fail(
                f"{key[: -len('.cvat')]}.job_status", "is required with [watch.cvat]: the source writes it"
            )
        given = [n for n in ("token_env", "token_file", "username") if getattr(raw, n) is not None]
        if not given:
            self.fail(
                f"{key}.token_env", "required: give token_env, token_file, or username with password_env"
            )
        if len(given) > 1:
            self.fail(f"{key}.{given[1]}", "give only one of token_env, token_file and username")
        token = password = None
        if raw.token_env is not None:
            token = Secret(self.env(f"{key}.token_env", raw.token_env))
        elif raw.token_file is not None:
            token = Secret(self.read_file(f"{key}.token_file", raw.token_file, what="token file"))
        else:
            if not raw.username:
                self.fail(f"{key}.username", "must not be empty")
            if (raw.password_env is None) == (raw.password_file is None):
                self.fail(
                    f"{key}.password_env", "with username, give exactly one of password_env and password_file"
                )
            if raw.password_env is not None:
                password = Secret(self.env(f"{key}.password_env", raw.password_env))
            else:
                assert raw.password_file is not None
                password = Secret(
                    self.read_file(f"{key}.password_file", raw.password_file, what="password file")
                )
        for name in ("password_env", "password_file"):
            if raw.username is None and getattr(raw, name) is not None:
                self.fail(f"{key}.{name}", "goes with username (a token needs no password)")
        if raw.organization is not None and not _NAME.fullmatch(raw.organization):
            self.fail(
                f"{key}.organization", "must be the organization's slug (letters, digits, '_', '.', '-')"
            )
        ca_file = self.tls(key, raw.verify_tls, raw.ca_file)
        if (
            (token is not None or password is not None)
            and parts.scheme == "http"
            and parts.hostname
            not in (
                "127.0.0.1",
                "localhost",
                "::1",
            )
        ):
            self.warn(f"{key}.url", "http:// to another machine: the token or password travels unencrypted")
        if raw.webhook_secret_env is not None and raw.webhook_secret_file is not None:
            self.fail(
                f"{key}.webhook_secret_file", "give only one of webhook_secret_env and webhook_secret_file"
            )
        webhook_secret = None
        if raw.webhook_secret_env is not None:
            webhook_secret = Secret(self.env(f"{key}.webhook_secret_env", raw.webhook_secret_env))
        elif raw.webhook_secret_file is not None:
            webhook_secret = Secret(
                self.read_file(
                    f"{key}.webhook_secret_file", raw.webhook_secret_file, what="webhook secret file"
                )
            )
        if raw.page_size < 1:
            self.fail(f"{key}.page_size", "must be at least 1")
        return CvatSourceConfig(
            url=raw.url.rstrip("/"),
            project=raw.project,
            task=raw.task,
            token=token,
            username=raw.username,
            password=password,
            organization=raw.organization,
            poll_interval=self.number(f"{key}.poll_interval", raw.poll_interval, strict=True),
            export=cast(
                Literal["on-completion", "on-change", "never"],
                self.choice(f"{key}.export", raw.export, ("on-completion", "on-change", "never")),
            ),
            export_timeout=self.number(f"{key}.export_timeout", raw.export_timeout, strict=True),
            page_size=raw.page_size,
            connect_timeout=self.number(f"{key}.connect_timeout", raw.connect_timeout, strict=True),
            read_timeout=self.number(f"{key}.read_timeout", raw.read_timeout, strict=True),
            verify_tls=raw.verify_tls,
            ca_file=ca_file,
            webhook_secret=webhook_secret,
        )

    def old_default_state(self, state_dir: Path) -> None:
        """Warn when the shared default folder of earlier versions holds a state and ours has none."""
        shared = default_state_dir(self.environ)
        if shared == state_dir or (state_dir / STATE_FILE_NAME).exists():
            return
        if (shared / STATE_FILE_NAME).exists():
            self.warn(
                "state_dir",
                f"{shared}/{STATE_FILE_NAME} was the default state of earlier versions, shared by every"
                f" configuration; this one now keeps its state in {state_dir}. If that state belongs"
                f" to this configuration, stop cvat-watch and move it: mv {shared}/{STATE_FILE_NAME}*"
                f' {state_dir}/ (or set state_dir = "{shared}")',
            )

    def watch(self, key: str, raw: _RawWatch) -> WatchConfig:
        name = self.name(f"{key}.name", raw.name)
        annotations = self.path(f"{key}.annotations", raw.annotations)
        debounce = self.number(f"{key}.debounce", raw.debounce, strict=False)
        max_wait = self.number(f"{key}.max_wait", raw.max_wait, strict=False)
        if max_wait < debounce:
            self.fail(f"{key}.max_wait", "must be at least debounce")
        base_url = raw.base_url
        if base_url is not None:
            if not _is_http_url(base_url):
                self.fail(f"{key}.base_url", "must be an http:// or https:// URL with a host")
            # Links are built as f"{base_url}/tasks/{id}".
            base_url = base_url.rstrip("/")
        return WatchConfig(
            name=name,
            annotations=annotations,
            job_status=self.optional_path(f"{key}.job_status", raw.job_status),
            completion=cast(
                Literal["completed", "accepted"],
                self.choice(f"{key}.completion", raw.completion, ("completed", "accepted")),
            ),
            notify_existing=raw.notify_existing,
            poll=raw.poll,
            poll_interval=self.number(f"{key}.poll_interval", raw.poll_interval, strict=True),
            base_url=base_url,
            debounce=debounce,
            max_wait=max_wait,
            recheck_interval=self.number(f"{key}.recheck_interval", raw.recheck_interval, strict=True),
            cvat=None if raw.cvat is None else self.cvat(f"{key}.cvat", raw, raw.cvat),
        )

    def handler(
        self, key: str, handler_key: str, raw: _RawHandler, watches: Sequence[WatchConfig]
    ) -> HandlerConfig:
        events = self.events(f"{key}.events", raw.events)
        if isinstance(raw, _RawLog):
            return LogHandlerConfig(
                key=handler_key,
                events=events,
                format=cast(
                    Literal["text", "json"], self.choice(f"{key}.format", raw.format, ("text", "json"))
                ),
            )
        if isinstance(raw, _RawWebhook):
            return self.webhook(key, handler_key, events, raw)
        if isinstance(raw, _RawApprise):
            return self.apprise(key, handler_key, events, raw)
        if isinstance(raw, _RawNats):
            return self.nats(key, handler_key, events, raw, watches)
        return self.command(key, handler_key, events, raw)

    def webhook(
        self, key: str, handler_key: str, events: tuple[str, ...], raw: _RawWebhook
    ) -> WebhookHandlerConfig:
        if not _is_http_url(raw.url):
            self.fail(f"{key}.url", "must be an http:// or https:// URL with a host")
        if urlsplit(raw.url).username is not None:
            self.warn(
                f"{key}.url",
                "contains credentials, which are shown in logs and output; "
                "prefer secret_env or secret_file with a signed webhook",
            )
        secrets = self.webhook_secrets(key, raw)
        secret = secrets[0] if secrets else None
        if raw.cvat_signature and secret is None:
            self.fail(f"{key}.cvat_signature", "needs a secret (secret_env, secret_file or secret)")
        if secret is not None and urlsplit(raw.url).scheme == "http":
            self.warn(f"{key}.url", "http:// with a secret: requests are signed but not encrypted")
        ca_file = self.tls(key, raw.verify_tls, raw.ca_file)
        headers: list[tuple[str, str]] = []
        for name, value in raw.headers.items():
            if not _HEADER_NAME.fullmatch(name):
                self.fail(f'{key}.headers."{name}"', "is not a valid HTTP header name")
            if "\r" in value or "\n" in value:
                self.fail(f'{key}.headers."{name}"', "must not contain line breaks")
            if _SENSITIVE_HEADER.search(name):
                self.warn(
                    f"{key}.headers.{name}",
                    "looks like a credential; header values are "
                    "shown in output and logs: prefer a signed webhook with secret_env",
                )
            headers.append((name, value))
        return WebhookHandlerConfig(
            key=handler_key,
            events=events,
            url=raw.url,
            secret=secret,
            extra_secrets=secrets[1:],
            cvat_signature=raw.cvat_signature,
            connect_timeout=self.number(f"{key}.connect_timeout", raw.connect_timeout, strict=True),
            read_timeout=self.number(f"{key}.read_timeout", raw.read_timeout, strict=True),
            timeout=self.number(f"{key}.timeout", raw.timeout, strict=True),
            retry_delays=self.retry_delays(f"{key}.retry_delays", raw.retry_delays),
            verify_tls=raw.verify_tls,
            ca_file=ca_file,
            headers=tuple(headers),
            format=cast(
                Literal["json", "cloudevents", "cloudevents-structured"],
                self.choice(f"{key}.format", raw.format, ("json", "cloudevents", "cloudevents-structured")),
            ),
        )

    def webhook_secrets(self, key: str, raw: _RawWebhook) -> tuple[Secret, ...]:
        """The signing secrets, in the order given; several only during a key rotation."""
        given = [n for n in ("secret", "secret_env", "secret_file") if getattr(raw, n) is not None]
        if len(given) > 1:
            self.fail(f"{key}.{given[1]}", "give only one of secret, secret_env and secret_file")
        if not given:
            return ()
        name = given[0]
        value = getattr(raw, name)
        names: tuple[str, ...] = (value,) if isinstance(value, str) else value
        if not names:
            self.fail(f"{key}.{name}", "must name at least one secret (or be left out)")
        where = [
            f"{key}.{name}" if isinstance(value, str) else f"{key}.{name}[{i}]" for i in range(len(names))
        ]
        if len(set(names)) < len(names):
            self.fail(f"{key}.{name}", "lists the same secret twice")
        if name == "secret_env":
            values = [self.env(at, item) for at, item in zip(where, names, strict=True)]
        elif name == "secret_file":
            values = [
                self.read_file(at, item, what="secret file") for at, item in zip(where, names, strict=True)
            ]
        else:
            for at, item in zip(where, names, strict=True):
                if not item:
                    self.fail(at, "must not be empty")
            self.warn(f"{key}.secret", "inline secret in the config file; prefer secret_env or secret_file")
            values = list(names)
        if len(set(values)) < len(values):
            self.fail(f"{key}.{name}", "two entries hold the same secret")
        return tuple(Secret(item) for item in values)

    def apprise(
        self, key: str, handler_key: str, events: tuple[str, ...], raw: _RawApprise
    ) -> AppriseHandlerConfig:
        given = [n for n in ("urls", "urls_env", "urls_file") if getattr(raw, n) is not None]
        if not given:
            self.fail(f"{key}.urls", "required: give urls, urls_env or urls_file")
        if len(given) > 1:
            self.fail(f"{key}.{given[1]}", "give only one of urls, urls_env and urls_file")
        if raw.urls is not None:
            urls = list(raw.urls)
            source = f"{key}.urls"
            if not urls:
                self.fail(source, "must list at least one Apprise URL")
            suspicious = [f"urls[{i}]" for i, url in enumerate(urls) if _looks_like_credentials(url)]
            if suspicious:
                self.warn(
                    source, f"{', '.join(suspicious)} may contain credentials; prefer urls_env/urls_file"
                )
        elif raw.urls_env is not None:
            source = f"{key}.urls_env"
            urls = _URL_LIST_SEPARATORS.split(self.env(source, raw.urls_env))
        else:
            assert raw.urls_file is not None
            source = f"{key}.urls_file"
            text = self.read_file(source, raw.urls_file, what="URLs file")
            lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
            urls = _URL_LIST_SEPARATORS.split(" ".join(lines))
        urls = [url for url in urls if url] if raw.urls is None else urls
        if not urls:
            self.fail(source, "holds no Apprise URL")
        for index, url in enumerate(urls):
            # Never quote the URL: it is a credential.
            if "://" not in url or not url.split("://", 1)[0]:
                where = f"{source}[{index}]" if raw.urls is not None else source
                self.fail(where, f"entry {index + 1} is not an Apprise URL (scheme://...)")
        group_wait = None if raw.group_wait is None else self.duration(f"{key}.group_wait", raw.group_wait)
        if raw.group_max is not None:
            if group_wait is None:
                self.fail(f"{key}.group_max", "needs group_wait (without it every event is its own message)")
            if raw.group_max < 1:
                self.fail(f"{key}.group_max", "must be at least 1")
        return AppriseHandlerConfig(
            key=handler_key,
            events=events,
            urls=tuple(Secret(url) for url in urls),
            title=raw.title,
            body=raw.body,
            timeout=self.number(f"{key}.timeout", raw.timeout, strict=True),
            retry_delays=self.retry_delays(f"{key}.retry_delays", raw.retry_delays),
            group_wait=group_wait,
            group_max=50 if raw.group_max is None else raw.group_max,
        )

    def command(
        self, key: str, handler_key: str, events: tuple[str, ...], raw: _RawCommand
    ) -> CommandHandlerConfig:
        if not raw.command or not raw.command[0]:
            self.fail(f"{key}.command", "must be a non-empty list: program first, then its arguments")
        cwd = self.optional_path(f"{key}.cwd", raw.cwd)
        if cwd is not None and not cwd.is_dir():
            self.fail(f"{key}.cwd", f"directory {cwd} not found")
        return CommandHandlerConfig(
            key=handler_key,
            events=events,
            command=raw.command,
            timeout=self.number(f"{key}.timeout", raw.timeout, strict=True),
            retry_delays=self.retry_delays(f"{key}.retry_delays", raw.retry_delays),
            cwd=cwd,
        )

    def nats(
        self,
        key: str,
        handler_key: str,
        events: tuple[str, ...],
        raw: _RawNats,
        watches: Sequence[WatchConfig],
    ) -> NatsHandlerConfig:
        try:
            parts = urlsplit(raw.url)
            valid = parts.scheme in ("nats", "tls") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            valid = False
        if not valid:
            self.fail(f"{key}.url", "must be a nats:// or tls:// URL with a host")
        if parts.username is not None:
            self.warn(
                f"{key}.url",
                "contains credentials, which are shown in logs and output; "
                "prefer user with password_env, token_env or creds_file",
            )
        problem = template_error(raw.subject)
        if problem:
            self.fail(f"{key}.subject", problem)
        # Every subject this handler can publish to, checked now rather than at the first event.
        subjects = [
            render_subject(raw.subject, watch=watch.name, event_type=event)
            for watch in watches
            for event in events
        ]
        for subject in subjects:
            problem = subject_error(subject)
            if problem:
                self.fail(f"{key}.subject", f"renders as {subject!r}, which {problem}")
        stream_subjects: tuple[str, ...] = ()
        if raw.stream is not None:
            if not raw.stream or any(c in raw.stream for c in " \t.*>/\\"):
                self.fail(f"{key}.stream", "must be a stream name without spaces, '.', '*', '>', '/' or '\\'")
            if raw.stream_subjects is not None:
                if not raw.stream_subjects:
                    self.fail(f"{key}.stream_subjects", "must list at least one subject filter")
                for index, pattern in enumerate(raw.stream_subjects):
                    bad = subject_error(pattern.replace("*", "x").replace(">", "x"))
                    if bad:
                        self.fail(f"{key}.stream_subjects[{index}]", bad)
                stream_subjects = raw.stream_subjects
            elif raw.create_stream:
                derived = default_stream_subjects(raw.subject)
                if derived is None:
                    self.fail(
                        f"{key}.stream_subjects",
                        f"required to create the stream: no safe filter follows from {raw.subject!r}",
                    )
                stream_subjects = derived
            if stream_subjects:
                for subject in subjects:
                    if not any(subject_matches(pattern, subject) for pattern in stream_subjects):
                        self.fail(
                            f"{key}.stream_subjects",
                            f"do not capture {subject!r}, which the subject template gives",
                        )
        elif raw.stream_subjects is not None:
            self.fail(f"{key}.stream_subjects", "needs stream (the name of the stream to create)")
        retry_delays = self.retry_delays(f"{key}.retry_delays", raw.retry_delays)
        if raw.duplicate_window is None:
            # Cover every retry of the schedule (plus the dispatcher's jitter and a day of
            # downtime), so that JetStream drops a retried duplicate rather than storing it.
            duplicate_window = float(math.ceil(sum(retry_delays) + 86400.0))
        else:
            duplicate_window = self.number(f"{key}.duplicate_window", raw.duplicate_window, strict=True)
            horizon = sum(retry_delays)
            if duplicate_window < horizon:
                self.warn(
                    f"{key}.duplicate_window",
                    f"{duplicate_window:g} s is shorter than the retry schedule ({horizon:g} s): "
                    "a late retry of an event whose ack was lost is stored twice",
                )
        credentials = self.nats_credentials(key, raw)
        return NatsHandlerConfig(
            key=handler_key,
            events=events,
            url=raw.url,
            subject=raw.subject,
            stream=raw.stream,
            stream_subjects=stream_subjects,
            create_stream=raw.create_stream,
            duplicate_window=float(duplicate_window),
            connect_timeout=self.number(f"{key}.connect_timeout", raw.connect_timeout, strict=True),
            ack_timeout=self.number(f"{key}.ack_timeout", raw.ack_timeout, strict=True),
            retry_delays=retry_delays,
            **credentials,
        )

    def nats_credentials(self, key: str, raw: _RawNats) -> dict[str, Any]:
        kinds = {
            "password": ("password_env", "password_file"),
            "token": ("token_env", "token_file"),
            "creds": ("creds_file",),
        }
        given = [name for names in kinds.values() for name in names if getattr(raw, name) is not None]
        if len(given) > 1:
            self.fail(
                f"{key}.{given[1]}",
                "give one way to authenticate: password_env, password_file, token_env, token_file "
                "or creds_file",
            )
        if raw.user is not None and not raw.user:
            self.fail(f"{key}.user", "must not be empty")
        has_password = bool(given) and given[0].startswith("password")
        if has_password and raw.user is None:
            self.fail(f"{key}.{given[0]}", "needs user")
        if raw.user is not None and not has_password:
            self.fail(f"{key}.user", "needs password_env or password_file")
        credentials: dict[str, Any] = {"user": raw.user}
        if not given:
            return credentials
        name = given[0]
        value = getattr(raw, name)
        if name == "creds_file":
            path = self.path(f"{key}.creds_file", value)
            # Read it now, so that a missing or unreadable file is a config error, not a failed
            # delivery three days later; nats-py reads it again at every connect.
            self.read_file(f"{key}.creds_file", value, what="creds file")
            credentials["creds_file"] = path
            return credentials
        secret = self.env(f"{key}.{name}", value) if name.endswith("_env") else None
        if secret is None:
            secret = self.read_file(f"{key}.{name}", value, what=f"{name.split('_')[0]} file")
        credentials[name.split("_")[0]] = Secret(secret)
        return credentials
