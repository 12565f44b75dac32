"""Delivery handlers: one module per kind behind the small :class:`Handler` protocol.

Importing this package never imports Apprise or nats-py; their handlers import them when built.
"""

from __future__ import annotations

from cvat_watch.handlers.apprise import AppriseHandler
from cvat_watch.handlers.base import Handler, event_body, redact_url
from cvat_watch.handlers.command import CommandHandler
from cvat_watch.handlers.log import LogHandler
from cvat_watch.handlers.nats import NatsHandler
from cvat_watch.handlers.webhook import WebhookHandler

__all__ = [
    "AppriseHandler",
    "CommandHandler",
    "Handler",
    "LogHandler",
    "NatsHandler",
    "WebhookHandler",
    "event_body",
    "redact_url",
]
