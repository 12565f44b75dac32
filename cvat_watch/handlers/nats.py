"""The NATS JetStream handler: publish each event and wait for the stream's acknowledgement.

Every message carries ``Nats-Msg-Id`` = the event id. JetStream drops a message whose id it has
already stored within the stream's duplicate window and answers with ``duplicate: true``; that
answer counts as delivered. So a retry after a lost ack, or after our own crash between the
publish and recording it, never puts a second copy in the stream — as long as the retry comes
within the window (see the README on ``duplicate_window``).

The handler protocol is synchronous, nats-py is asyncio: each handler runs a private event loop
on its own thread, started by the first delivery and stopped by :meth:`NatsHandler.close`. All
NATS objects live on that loop; ``deliver`` submits one coroutine and waits for it with a
deadline. A lost connection is not reconnected in the background (nothing would be published
meanwhile anyway): the next delivery connects anew, and fails fast while the server is away.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine, Iterable, Mapping
from typing import Any, TypeVar

import attrs

from cvat_watch._subjects import render_subject, subject_error, subject_matches, template_error
from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.handlers.base import event_body, redact_url

__all__ = ["DEFAULT_DUPLICATE_WINDOW", "NatsHandler"]

log = logging.getLogger(__name__)

#: JetStream's own default duplicate window (two minutes), for the README's comparison.
DEFAULT_DUPLICATE_WINDOW = 120.0

_T = TypeVar("_T")
_SCHEMES = ("nats", "tls")


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _describe(exc: BaseException) -> str:
    """A short reason for an exception from nats-py or the socket layer."""
    import nats.errors

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, nats.errors.NoServersError):
        return "no server answered"
    text = str(exc).removeprefix("nats: ").strip().strip("'")
    if "authorization violation" in text.lower():
        return "authorization violation (the server refused the credentials)"
    if "authentication expired" in text.lower():
        return "authentication expired (renew the credentials)"
    return text or type(exc).__name__


@attrs.define(kw_only=True, eq=False, repr=False)
class NatsHandler:
    """Publishes each event to JetStream on ``subject`` (a template of ``{watch}`` and ``{type}``).

    ``stream`` names the stream the messages must land in: it is verified (or, with
    ``create_stream``, created with ``stream_subjects`` and ``duplicate_window`` seconds) before
    the first publish, and every publish says which stream it expects. Without ``stream`` any
    stream that captures the subject will do. Credentials: ``user`` and ``password``, or
    ``token``, or ``creds_file`` (a NATS ``.creds`` file).

    Outcomes: an ack (fresh or duplicate) delivered; no ack within ``ack_timeout``, no stream
    for the subject, a lost or refused connection, a JetStream error: retry. A message larger
    than the server accepts, or a subject that renders invalid, is final.
    """

    _url: str = attrs.field(alias="url")
    _subject: str = attrs.field(alias="subject")
    _stream: str | None = attrs.field(default=None, alias="stream")
    _stream_subjects: tuple[str, ...] = attrs.field(default=(), converter=_strings, alias="stream_subjects")
    _create_stream: bool = attrs.field(default=True, alias="create_stream")
    _duplicate_window: float = attrs.field(default=DEFAULT_DUPLICATE_WINDOW, alias="duplicate_window")
    _user: str | None = attrs.field(default=None, alias="user")
    _password: str | None = attrs.field(default=None, alias="password")
    _token: str | None = attrs.field(default=None, alias="token")
    _creds_file: str | None = attrs.field(default=None, alias="creds_file")
    _connect_timeout: float = attrs.field(default=5.0, alias="connect_timeout")
    _ack_timeout: float = attrs.field(default=5.0, alias="ack_timeout")
    _target: str = attrs.field(init=False)
    _lock: threading.Lock = attrs.field(init=False, factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = attrs.field(init=False, default=None)
    _thread: threading.Thread | None = attrs.field(init=False, default=None)
    # Touched only on the private loop's thread.
    _client: Any = attrs.field(init=False, default=None)
    _filters: tuple[str, ...] | None = attrs.field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._target = redact_url(self._url)
        scheme = self._url.partition("://")[0] if "://" in self._url else ""
        if scheme not in _SCHEMES:
            raise ConfigError(f"the NATS URL must be nats:// or tls://, not {self._target}", key="url")
        problem = template_error(self._subject)
        if problem:
            raise ConfigError(f"subject {self._subject!r} {problem}", key="subject")
        if self._stream is not None and self._create_stream and not self._stream_subjects:
            raise ConfigError("creating a stream needs stream_subjects", key="stream_subjects")
        given = [
            name
            for name, value in (
                ("password", self._password),
                ("token", self._token),
                ("creds", self._creds_file),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ConfigError("give only one of a password, a token and a creds file", key=given[1])
        if (self._user is None) != (self._password is None):
            raise ConfigError("user and password go together", key="user")
        for name, value in (
            ("connect_timeout", self._connect_timeout),
            ("ack_timeout", self._ack_timeout),
            ("duplicate_window", self._duplicate_window),
        ):
            if not value > 0:
                raise ConfigError(f"{name} must be a positive number of seconds", key=name)
        # nats-py is imported here, not at the top, so that importing the handlers package does
        # not need the optional extra; a missing extra is a configuration problem.
        try:
            import nats  # noqa: F401
        except ImportError:
            raise ConfigError(
                "the NATS handler needs nats-py: pip install 'cvat-watch[nats]'", key="type"
            ) from None

    def __repr__(self) -> str:
        return f"NatsHandler(url={self._target!r}, subject={self._subject!r}, stream={self._stream!r})"

    # -- the synchronous face -----------------------------------------------------------------

    def deliver(self, event: Mapping[str, Any]) -> None:
        """Publish the event once; return when JetStream acknowledged it (or had it already)."""
        msg_id = str(event.get("id") or "")
        if not msg_id:
            raise DeliveryError(f"nats {self._target}: the event has no id to publish it under", retry=False)
        subject = render_subject(
            self._subject, watch=str(event.get("watch") or ""), event_type=str(event.get("type") or "")
        )
        problem = subject_error(subject)
        if problem:
            raise DeliveryError(f"nats {self._target}: subject {subject!r} {problem}", retry=False)
        # Connect (with a retry inside nats-py), look at the stream, publish: each bounded on the
        # loop; this outer bound only guards against a loop that stopped answering.
        deadline = 3 * self._connect_timeout + 3 * self._ack_timeout + 5.0
        self._run(self._publish(subject, event_body(event), msg_id), deadline)

    def close(self) -> None:
        """Close the connection and stop the private loop; idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self._disconnect(), loop)
        try:
            future.result(timeout=self._connect_timeout + 5.0)
        except Exception:
            log.debug("closing the NATS connection to %s failed", self._target, exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10.0)
        if not thread.is_alive():
            loop.close()

    # -- the loop -----------------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._serve, args=(loop,), name=f"cvat-watch nats {self._target}", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def _run(self, coroutine: Coroutine[Any, Any, _T], timeout: float) -> _T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._running_loop())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeliveryError(f"nats {self._target}: no outcome within {timeout:g} s", retry=True) from None

    # -- on the loop --------------------------------------------------------------------------

    async def _publish(self, subject: str, body: bytes, msg_id: str) -> None:
        import nats.errors
        import nats.js.errors

        client = await self._connection()
        js = client.jetstream(timeout=self._ack_timeout)
        if self._stream is not None:
            try:
                await self._check_stream(js, subject)
            except (nats.errors.Error, OSError) as exc:
                # Anything else nats-py raises while looking at the stream: a lost connection.
                await self._drop_connection()
                raise self._error(
                    f"cannot look at stream {self._stream}: {self._scrub(_describe(exc))}"
                ) from None
        try:
            ack = await js.publish(
                subject,
                body,
                timeout=self._ack_timeout,
                stream=self._stream,
                headers={"Nats-Msg-Id": msg_id, "Content-Type": "application/json"},
            )
        except nats.js.errors.NoStreamResponseError:
            raise self._error(f"no stream captures subject {subject!r} (no responders)") from None
        except nats.errors.TimeoutError:
            raise self._error(f"no publish ack within {self._ack_timeout:g} s") from None
        except nats.js.errors.APIError as exc:
            raise self._error(f"JetStream refused the message: {self._api_text(exc)}") from None
        except nats.errors.MaxPayloadError:
            raise DeliveryError(
                f"nats {self._target}: the event ({len(body)} bytes) is larger than the server accepts",
                retry=False,
            ) from None
        except (nats.errors.Error, OSError) as exc:
            await self._drop_connection()
            raise self._error(f"publish failed: {self._scrub(_describe(exc))}") from None
        log.debug(
            "nats %s: event %s in stream %s at %d%s",
            self._target,
            msg_id,
            ack.stream,
            ack.seq,
            " (duplicate: already stored)" if ack.duplicate else "",
        )

    async def _connection(self) -> Any:
        import nats
        import nats.errors

        client = self._client
        if client is not None and client.is_connected:
            return client
        await self._drop_connection()
        causes: list[BaseException] = []

        async def on_error(exc: Exception) -> None:
            # nats-py reports here why a connection attempt or a live connection failed.
            causes.append(exc)
            log.debug("nats %s: %s", self._target, self._scrub(_describe(exc)))

        async def on_disconnected() -> None:
            log.debug("nats %s: disconnected", self._target)

        options: dict[str, Any] = {
            "servers": [self._url],
            "name": "cvat-watch",
            "connect_timeout": self._connect_timeout,
            # Fail fast: two attempts now, then the dispatcher's schedule decides when to retry.
            "allow_reconnect": False,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0,
            # Never buffer a publish while disconnected: it would go out later, unobserved.
            "pending_size": 0,
            "error_cb": on_error,
            "disconnected_cb": on_disconnected,
        }
        if self._user is not None:
            options["user"], options["password"] = self._user, self._password
        if self._token is not None:
            options["token"] = self._token
        if self._creds_file is not None:
            options["user_credentials"] = self._creds_file
        client = nats.NATS()
        try:
            await asyncio.wait_for(client.connect(**options), timeout=3 * self._connect_timeout)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            # The last attempt's own error says more than "no servers".
            cause = next((c for c in reversed(causes) if not isinstance(c, nats.errors.NoServersError)), exc)
            await self._close_quietly(client)
            raise self._error(f"cannot connect: {self._scrub(_describe(cause))}") from None
        self._client = client
        return client

    async def _check_stream(self, js: Any, subject: str) -> None:
        """Make sure the stream exists (creating it if allowed) and captures ``subject``."""
        import nats.errors
        import nats.js.errors

        assert self._stream is not None
        if self._filters is None:
            try:
                info = await js.stream_info(self._stream)
            except nats.js.errors.NotFoundError:
                if not self._create_stream:
                    raise self._error(
                        f"stream {self._stream} does not exist (create_stream is off)"
                    ) from None
                info = await self._add_stream(js)
            except nats.js.errors.ServiceUnavailableError:
                raise self._error("JetStream is not available on the server (is it enabled?)") from None
            except nats.js.errors.APIError as exc:
                raise self._error(f"cannot look at stream {self._stream}: {self._api_text(exc)}") from None
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                raise self._error("JetStream did not answer (is it enabled on the server?)") from None
            window = info.config.duplicate_window or 0.0
            if window + 1e-9 < self._duplicate_window:
                log.warning(
                    "nats %s: stream %s drops duplicates only within %g s; a retry later than that "
                    "(the retry schedule spans %g s) can store an event twice",
                    self._target,
                    self._stream,
                    window,
                    self._duplicate_window,
                )
            self._filters = tuple(info.config.subjects or ())
        if not any(subject_matches(pattern, subject) for pattern in self._filters):
            shown = ", ".join(self._filters) or "none"
            self._filters = None  # look at the stream again next time: it may have been fixed
            raise self._error(f"stream {self._stream} (subjects: {shown}) does not capture {subject!r}")

    async def _add_stream(self, js: Any) -> Any:
        import nats.js.api
        import nats.js.errors

        try:
            info = await js.add_stream(
                name=self._stream,
                subjects=list(self._stream_subjects),
                duplicate_window=self._duplicate_window,
                storage=nats.js.api.StorageType.FILE,
            )
        except nats.js.errors.APIError as exc:
            # Someone else may have created it meanwhile: then look at theirs.
            try:
                return await js.stream_info(self._stream)
            except nats.js.errors.APIError:
                pass
            raise self._error(f"cannot create stream {self._stream}: {self._api_text(exc)}") from None
        log.info(
            "nats %s: created stream %s on %s (duplicate window %g s)",
            self._target,
            self._stream,
            ", ".join(self._stream_subjects),
            self._duplicate_window,
        )
        return info

    async def _drop_connection(self) -> None:
        client, self._client = self._client, None
        self._filters = None
        if client is not None:
            await self._close_quietly(client)

    async def _disconnect(self) -> None:
        await self._drop_connection()

    async def _close_quietly(self, client: Any) -> None:
        try:
            await asyncio.wait_for(client.close(), timeout=self._connect_timeout)
        except Exception:
            log.debug("nats %s: close failed", self._target, exc_info=True)

    # -- messages -----------------------------------------------------------------------------

    def _error(self, detail: str) -> DeliveryError:
        return DeliveryError(f"nats {self._target}: {detail}", retry=True)

    def _api_text(self, exc: Any) -> str:
        description = getattr(exc, "description", None) or type(exc).__name__
        code = getattr(exc, "err_code", None)
        return self._scrub(f"{description} (error {code})" if code else str(description))

    def _scrub(self, text: str) -> str:
        """Remove any credential a library's error text might have echoed."""
        userinfo = self._url.partition("://")[2].rpartition("@")[0]
        for sensitive in (self._password, self._token, userinfo):
            if sensitive:
                text = text.replace(sensitive, "…")
        return text
