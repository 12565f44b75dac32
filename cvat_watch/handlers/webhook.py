"""The webhook handler: POST the event as JSON, signed the Standard Webhooks way.

Every request carries ``webhook-id`` (the event id, stable across retries, so receivers can
drop duplicates) and ``webhook-timestamp`` (unix seconds). With a secret it also carries
``webhook-signature: v1,<base64 HMAC-SHA256>`` over ``"{id}.{timestamp}." + body``. With
several secrets (a key rotation) it carries one such signature per secret, space-separated,
as the Standard Webhooks spec allows: a receiver holding any one of the keys accepts it.

The signing key: a secret written ``whsec_<base64>`` (the Standard Webhooks format) is
base64-decoded; any other secret is used as its UTF-8 bytes. ``cvat_signature`` adds CVAT's
own ``X-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``, keyed by the (first) secret's
UTF-8 bytes as written, so receivers built for CVAT webhooks can check it unchanged.

``format`` picks the envelope: ``"json"`` (the event JSON as the body), ``"cloudevents"``
(CloudEvents 1.0 binary mode: ``ce-*`` headers, the same JSON body) or
``"cloudevents-structured"`` (one ``application/cloudevents+json`` document); see
:mod:`cvat_watch.handlers.cloudevents`. The Standard Webhooks headers and signature are added
in every format, over the bytes actually sent.

Redirects are not followed: a signed POST should not wander to another host. A 3xx is a
final failure that tells the operator to fix the URL.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import importlib.metadata
import logging
import os
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx

from cvat_watch._retry_after import parse_retry_after
from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.handlers import _deadline
from cvat_watch.handlers.base import event_body, redact_url
from cvat_watch.handlers.cloudevents import (
    CLOUDEVENTS_FORMATS,
    STRUCTURED_CONTENT_TYPE,
    binary_headers,
    structured_body,
)

__all__ = [
    "FORMATS",
    "WebhookHandler",
    "cvat_signature",
    "parse_retry_after",
    "signing_key",
    "standard_signature",
]

#: The envelopes a webhook can send.
FORMATS: tuple[str, ...] = ("json", *CLOUDEVENTS_FORMATS)

logger = logging.getLogger(__name__)

_SECRET_PREFIX = "whsec_"
# Receivers answer with a few bytes; reading a little keeps the connection reusable without
# letting a misbehaving one make us buffer megabytes.
_MAX_DRAIN = 64 * 1024
# A socket wait cut to the deadline may end a hair before it by the clock.
_DEADLINE_SLACK = 0.01


@functools.cache
def _user_agent() -> str:
    try:
        version = importlib.metadata.version("cvat-watch")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return f"cvat-watch/{version}"


def signing_key(secret: str) -> bytes:
    """The HMAC key for ``secret``: base64 after ``whsec_``, else the UTF-8 bytes."""
    if secret.startswith(_SECRET_PREFIX):
        encoded = secret[len(_SECRET_PREFIX) :]
        try:
            # Unpadded base64 is common in the wild; pad it rather than refuse it.
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(
                "a webhook secret starting with 'whsec_' must continue with base64", key="secret"
            ) from None
    else:
        key = secret.encode("utf-8")
    if not key:
        raise ConfigError("the webhook secret is empty", key="secret")
    return key


def standard_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256>``."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def _ssl_verify(verify: bool | str) -> bool | ssl.SSLContext:
    if isinstance(verify, bool):
        return verify
    try:
        if os.path.isdir(verify):
            return ssl.create_default_context(capath=verify)
        return ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot load the CA bundle {verify!r}: {reason}", key="verify") from exc


_TRANSPORT_KINDS: tuple[tuple[type[httpx.TransportError], str], ...] = (
    (httpx.ConnectTimeout, "connect timeout"),
    (httpx.ReadTimeout, "read timeout"),
    (httpx.WriteTimeout, "write timeout"),
    (httpx.PoolTimeout, "connection pool timeout"),
    (httpx.ConnectError, "connection failed"),
    (httpx.ProxyError, "proxy error"),
    (httpx.ProtocolError, "protocol error"),
    (httpx.NetworkError, "network error"),
)


def cvat_signature(secret: str, body: bytes) -> str:
    """CVAT's ``X-Signature-256`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body`` keyed by
    the secret's UTF-8 bytes (what CVAT sends, and what the daemon checks CVAT's webhooks by)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@attrs.define(kw_only=True, eq=False, repr=False)
class WebhookHandler:
    """POSTs each event to one URL through one reused ``httpx.Client``.

    Outcomes: 2xx delivered; 410 gone (never retry); 408, 429 and 5xx retry (honouring
    ``Retry-After``); timeouts and network errors retry; any other status is final. An attempt
    ends at ``timeout`` seconds in total, however slowly the receiver trickles its answer.
    """

    _url: str = attrs.field(alias="url")
    #: One secret, or several during a key rotation (each signs every request).
    _secret: str | Sequence[str] | None = attrs.field(default=None, alias="secret")
    _cvat_signature: bool = attrs.field(default=False, alias="cvat_signature")
    _connect_timeout: float = attrs.field(default=5.0, alias="connect_timeout")
    _read_timeout: float = attrs.field(default=15.0, alias="read_timeout")
    #: The whole attempt, connect to last byte read: a receiver trickling bytes resets the read
    #: timeout with each one, never this.
    _timeout: float = attrs.field(default=30.0, alias="timeout")
    _verify: bool | str = attrs.field(default=True, alias="verify")
    _headers: Mapping[str, str] | None = attrs.field(default=None, alias="headers")
    _format: str = attrs.field(default="json", alias="format")
    _transport: httpx.BaseTransport | None = attrs.field(default=None, alias="transport")
    _target: str = attrs.field(init=False)
    _secrets: tuple[str, ...] = attrs.field(init=False)
    _keys: tuple[bytes, ...] = attrs.field(init=False)
    _client: httpx.Client = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._target = redact_url(self._url)
        try:
            parts = urlsplit(self._url)
            valid = (
                parts.scheme in ("http", "https")
                and bool(parts.hostname)
                and (parts.port is None or parts.port > 0)
            )
        except ValueError:  # a port that is not a number
            valid = False
        if not valid:
            raise ConfigError(
                f"the webhook URL must be http:// or https:// with a host, not {self._target}",
                key="url",
            )
        for name, value in (
            ("connect_timeout", self._connect_timeout),
            ("read_timeout", self._read_timeout),
            ("timeout", self._timeout),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds", key=name)
        if self._format not in FORMATS:
            raise ConfigError(f"format must be one of: {', '.join(FORMATS)}", key="format")
        if self._secret is None:
            self._secrets = ()
        elif isinstance(self._secret, str):
            self._secrets = (self._secret,)
        else:
            self._secrets = tuple(self._secret)
            if not self._secrets:
                raise ConfigError("the list of webhook secrets is empty", key="secret")
        # The same key written twice would only sign twice.
        self._keys = tuple(dict.fromkeys(signing_key(secret) for secret in self._secrets))
        if self._cvat_signature and not self._keys:
            raise ConfigError("cvat_signature needs a secret", key="cvat_signature")
        verify = _ssl_verify(self._verify)
        if self._verify is False:
            logger.warning("TLS certificate verification is disabled for webhook %s", self._target)
        self._client = httpx.Client(
            timeout=httpx.Timeout(self._read_timeout, connect=self._connect_timeout),
            verify=verify,
            transport=self._transport,
            follow_redirects=False,
        )
        _deadline.install(self._client)

    def __repr__(self) -> str:
        return f"WebhookHandler(url={self._target!r}, signed={bool(self._keys)}, keys={len(self._keys)})"

    def _request_headers(self, event: Mapping[str, Any], body: bytes) -> httpx.Headers:
        headers = httpx.Headers({"user-agent": _user_agent()})
        if self._headers:
            headers.update(self._headers)
        msg_id = str(event.get("id", ""))
        timestamp = int(time.time())
        headers["content-type"] = "application/json"
        if self._format == "cloudevents":
            headers.update(binary_headers(event))
        elif self._format == "cloudevents-structured":
            headers["content-type"] = STRUCTURED_CONTENT_TYPE
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(timestamp)
        if self._keys:
            headers["webhook-signature"] = " ".join(
                standard_signature(key, msg_id, timestamp, body) for key in self._keys
            )
        if self._cvat_signature and self._secrets:
            # CVAT's header holds one signature: the first secret's, the one being rotated to.
            headers["x-signature-256"] = cvat_signature(self._secrets[0], body)
        return headers

    def _scrub(self, text: str) -> str:
        """Remove anything of the raw URL that a library's error text might have echoed."""
        parts = urlsplit(self._url)
        userinfo = parts.netloc.rpartition("@")[0]
        for sensitive in (self._url, parts.query, userinfo, *self._secrets):
            if sensitive:
                text = text.replace(sensitive, "…")
        return text

    def _transport_error(self, exc: httpx.TransportError, deadline: float) -> DeliveryError:
        if isinstance(exc, httpx.TimeoutException) and time.monotonic() >= deadline - _DEADLINE_SLACK:
            return DeliveryError(
                f"webhook POST {self._target}: no complete response within the {self._timeout:g} s"
                " timeout for the whole attempt",
                retry=True,
            )
        kind = next((k for cls, k in _TRANSPORT_KINDS if isinstance(exc, cls)), "transport error")
        if isinstance(exc, httpx.TimeoutException):
            limit = self._connect_timeout if "connect" in kind else self._read_timeout
            detail = f"{kind} after {limit:g} s"
        else:
            text = self._scrub(str(exc))
            detail = f"{kind}: {text}" if text else kind
        return DeliveryError(f"webhook POST {self._target}: {detail}", retry=True)

    def deliver(self, event: Mapping[str, Any]) -> None:
        """POST the event once; return on 2xx, raise ``DeliveryError`` otherwise."""
        body = structured_body(event) if self._format == "cloudevents-structured" else event_body(event)
        request = self._client.build_request(
            "POST", self._url, content=body, headers=self._request_headers(event, body)
        )
        with _deadline.DeadlineBackend.deadline(self._timeout) as deadline:
            try:
                response = self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise self._transport_error(exc, deadline) from None
            try:
                drained = 0
                # Responses from an in-memory transport arrive already read.
                chunks = () if response.is_stream_consumed else response.iter_raw()
                for chunk in chunks:
                    drained += len(chunk)
                    if drained > _MAX_DRAIN:
                        break
            except (httpx.HTTPError, httpx.StreamError):
                # The status line already decided the outcome; a broken or endless body
                # (cut off at the deadline) changes nothing.
                pass
            finally:
                response.close()
        self._judge(response.status_code, response.headers)

    def _judge(self, status: int, headers: httpx.Headers) -> None:
        if 200 <= status < 300:
            return
        # Our phrase, not the receiver's: a reason phrase is arbitrary text from the network.
        phrase = httpx.codes.get_reason_phrase(status)
        message = f"webhook POST {self._target}: HTTP {status} {phrase}".rstrip()
        if status == 410:
            raise DeliveryError(f"{message} (the target is gone)", retry=False, gone=True)
        if status in (408, 429) or 500 <= status < 600:
            retry_after = parse_retry_after(headers.get("retry-after"))
            raise DeliveryError(message, retry=True, retry_after=retry_after)
        raise DeliveryError(message, retry=False)

    def close(self) -> None:
        """Close the HTTP client and its pooled connections."""
        self._client.close()
