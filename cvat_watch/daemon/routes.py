"""Routes: one per configured handler (one per URL for Apprise), built from the configuration.

A route is what the dispatcher delivers to, and its *identity* is what an outbox row is bound
to: a hash of the handler's type and target (the webhook URL, the Apprise URL, the command and
its folder), never its place in the file or a name that another configuration could also use.
Reordering handlers, renaming them or changing their options keeps the identity, so pending
rows follow; pointing a handler at another target makes it a new handler, and rows bound to
the old one are never sent to the new target (``deliveries`` lists them as orphaned).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import Any

import attrs

from cvat_watch.config import (
    AppriseHandlerConfig,
    CommandHandlerConfig,
    Config,
    HandlerConfig,
    LogHandlerConfig,
    NatsHandlerConfig,
    WebhookHandlerConfig,
)
from cvat_watch.daemon.dispatch import Route
from cvat_watch.errors import ConfigError

__all__ = ["build_routes", "close_routes", "handler_identities"]

log = logging.getLogger(__name__)


def handler_identities(config: Config) -> list[tuple[str, str]]:
    """(name, identity) of every route the configuration makes, in order, without starting any handler."""
    seen: dict[str, int] = {}
    result = []
    for handler_config in config.handlers:
        for name, target in _targets(handler_config):
            result.append((name, _identity(handler_config, target, seen)))
    return result


def _targets(handler_config: HandlerConfig) -> list[tuple[str, list[Any]]]:
    """(route name, what the route delivers to) per route of one handler."""
    if isinstance(handler_config, WebhookHandlerConfig):
        return [(handler_config.key, [handler_config.url])]
    if isinstance(handler_config, AppriseHandlerConfig):
        single = len(handler_config.urls) == 1
        return [
            (handler_config.key if single else f"{handler_config.key}/{index}", [url.reveal()])
            for index, url in enumerate(handler_config.urls, start=1)
        ]
    if isinstance(handler_config, CommandHandlerConfig):
        cwd = str(handler_config.cwd) if handler_config.cwd else None
        return [(handler_config.key, [list(handler_config.command), cwd])]
    if isinstance(handler_config, LogHandlerConfig):
        return [(handler_config.key, [])]
    if isinstance(handler_config, NatsHandlerConfig):
        return [(handler_config.key, [handler_config.url, handler_config.subject, handler_config.stream])]
    raise ConfigError(f"unknown handler configuration {type(handler_config).__name__}")


def _identity(handler_config: HandlerConfig, target: list[Any], seen: dict[str, int]) -> str:
    """``<type>:<16 hex digits>`` of the type, the target, and how many routes had both before.

    The count tells apart two handlers with one target (say two log handlers, or one URL with
    two event filters); the hash keeps Apprise credentials out of the database.
    """
    kind = type(handler_config).__name__.removesuffix("HandlerConfig").lower()
    material = json.dumps([kind, target], ensure_ascii=False, sort_keys=True)
    occurrence = seen.get(material, 0)
    seen[material] = occurrence + 1
    digest = hashlib.sha256(json.dumps([material, occurrence]).encode()).hexdigest()[:16]
    return f"{kind}:{digest}"


def build_routes(config: Config) -> list[Route]:
    """One route per handler (one per URL for Apprise), each bound to its handler identity."""
    routes: list[Route] = []
    identities = iter(handler_identities(config))
    for handler_config in config.handlers:
        for route in _routes_of(handler_config):
            name, identity = next(identities)
            assert name == route.key
            routes.append(attrs.evolve(route, identity=identity, options=(handler_config, name)))
    return routes


def _routes_of(handler_config: HandlerConfig) -> list[Route]:
    from cvat_watch import handlers

    events = frozenset(handler_config.events)
    if isinstance(handler_config, LogHandlerConfig):
        handler: Any = handlers.LogHandler(json_lines=handler_config.format == "json")
        # Writing to our own stderr cannot usefully be retried for days.
        return [Route(key=handler_config.key, handler=handler, events=events, retry_delays=(1.0, 5.0))]
    if isinstance(handler_config, WebhookHandlerConfig):
        verify: bool | str = handler_config.verify_tls
        if handler_config.verify_tls and handler_config.ca_file is not None:
            verify = str(handler_config.ca_file)
        handler = handlers.WebhookHandler(
            url=handler_config.url,
            secret=(
                [secret.reveal() for secret in (handler_config.secret, *handler_config.extra_secrets)]
                if handler_config.secret
                else None
            ),
            cvat_signature=handler_config.cvat_signature,
            connect_timeout=handler_config.connect_timeout,
            read_timeout=handler_config.read_timeout,
            timeout=handler_config.timeout,
            verify=verify,
            headers=dict(handler_config.headers),
            format=handler_config.format,
        )
        return [Route(handler_config.key, handler, events, handler_config.retry_delays)]
    if isinstance(handler_config, AppriseHandlerConfig):
        routes = []
        for index, url in enumerate(handler_config.urls, start=1):
            options: dict[str, str] = {}
            if handler_config.title is not None:
                options["title"] = handler_config.title
            if handler_config.body is not None:
                options["body"] = handler_config.body
            handler = handlers.AppriseHandler(url=url.reveal(), timeout=handler_config.timeout, **options)
            key = handler_config.key if len(handler_config.urls) == 1 else f"{handler_config.key}/{index}"
            routes.append(
                Route(
                    key,
                    handler,
                    events,
                    handler_config.retry_delays,
                    group_wait=handler_config.group_wait,
                    group_max=handler_config.group_max,
                )
            )
        return routes
    if isinstance(handler_config, CommandHandlerConfig):
        handler = handlers.CommandHandler(
            argv=handler_config.command,
            timeout=handler_config.timeout,
            cwd=str(handler_config.cwd) if handler_config.cwd else None,
        )
        return [Route(handler_config.key, handler, events, handler_config.retry_delays)]
    if isinstance(handler_config, NatsHandlerConfig):
        from cvat_watch.handlers.nats import NatsHandler

        handler = NatsHandler(
            url=handler_config.url,
            subject=handler_config.subject,
            stream=handler_config.stream,
            stream_subjects=handler_config.stream_subjects,
            create_stream=handler_config.create_stream,
            duplicate_window=handler_config.duplicate_window,
            user=handler_config.user,
            password=handler_config.password.reveal() if handler_config.password else None,
            token=handler_config.token.reveal() if handler_config.token else None,
            creds_file=str(handler_config.creds_file) if handler_config.creds_file else None,
            connect_timeout=handler_config.connect_timeout,
            ack_timeout=handler_config.ack_timeout,
        )
        return [Route(handler_config.key, handler, events, handler_config.retry_delays)]
    raise ConfigError(f"unknown handler configuration {type(handler_config).__name__}")


def close_routes(routes: Sequence[Route]) -> None:
    for route in routes:
        try:
            route.handler.close()
        except Exception:  # closing one handler must not stop closing the others
            log.warning("closing handler %s failed", route.key, exc_info=True)
