"""The daemon's HTTP listener: a real server on 127.0.0.1, driven with httpx."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from cvat_watch.daemon.http import HttpListener, Request, Response, parse_listen


@pytest.fixture
def listener() -> Iterator[HttpListener]:
    server = HttpListener(host="127.0.0.1", port=0, max_body=1000)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_get_and_prefix_routes_are_served(listener: HttpListener) -> None:
    seen: list[Request] = []

    def hello(request: Request) -> Response:
        return Response.text(200, "hi")

    def hook(request: Request) -> Response:
        seen.append(request)
        return Response.json_text(202, '{"ok": true}')

    listener.get("/healthz", hello)
    listener.add_prefix("POST", "/cvat/webhook/", hook)
    with httpx.Client(base_url=listener.url) as client:
        assert client.get("/healthz").text == "hi"
        answer = client.post(
            "/cvat/webhook/street?x=1", content=b"raw bytes", headers={"X-Signature-256": "s"}
        )
        assert answer.status_code == 202
        assert client.get("/nope").status_code == 404
        assert client.get("/cvat/webhook/street").status_code == 405
        assert client.post("/cvat/webhook/", content=b"").status_code == 404
    assert [(r.tail, r.body, r.query, r.header("x-signature-256")) for r in seen] == [
        ("street", b"raw bytes", "x=1", "s")
    ]


def test_a_body_over_the_limit_is_refused_unread(listener: HttpListener) -> None:
    seen: list[Request] = []
    listener.add_prefix("POST", "/cvat/webhook/", lambda r: seen.append(r) or Response(200))
    with httpx.Client(base_url=listener.url) as client:
        assert client.post("/cvat/webhook/a", content=b"x" * 1001).status_code == 413
        assert client.post("/cvat/webhook/a", content=b"x" * 1000).status_code == 200
    assert len(seen) == 1


def test_a_failing_handler_answers_500_and_the_listener_keeps_serving(listener: HttpListener) -> None:
    def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    listener.get("/boom", boom)
    listener.get("/ok", lambda r: Response.text(200, "ok"))
    with httpx.Client(base_url=listener.url) as client:
        assert client.get("/boom").status_code == 500
        assert client.get("/ok").text == "ok"


def test_binds_loopback_by_default() -> None:
    assert HttpListener().host == "127.0.0.1"
    assert parse_listen("127.0.0.1:8765") == ("127.0.0.1", 8765)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("8765", "host:x", ":80", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)
