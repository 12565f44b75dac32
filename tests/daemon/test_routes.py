"""Routes and their identities: what an outbox row is bound to."""

from __future__ import annotations

from pathlib import Path

from cvat_watch.config import Config, load_config
from cvat_watch.daemon.routes import build_routes, close_routes, handler_identities

WATCH = '[[watch]]\nname = "w"\nannotations = "a.xml"\n'


def config(tmp_path: Path, handlers: str, *, name: str = "cvat-watch.toml") -> Config:
    path = tmp_path / name
    path.write_text(f'state_dir = "state"\n{WATCH}{handlers}')
    return load_config(path, environ={"APPRISE": "json://user:hunter2@example.org/"})


def webhook(url: str, *, name: str | None = None, extra: str = "") -> str:
    named = f'name = "{name}"\n' if name else ""
    return f'[[handler]]\ntype = "webhook"\n{named}url = "{url}"\n{extra}\n'


def identities(tmp_path: Path, handlers: str) -> dict[str, str]:
    return dict(handler_identities(config(tmp_path, handlers)))


def test_the_identity_is_the_target_not_the_position_or_the_name(tmp_path: Path) -> None:
    """Reordering handlers, naming them or changing their options keeps each identity; a webhook
    at another URL is another handler."""
    a, b = "http://127.0.0.1:1/a", "http://127.0.0.1:1/b"
    first = identities(tmp_path, webhook(a) + webhook(b))
    swapped = identities(tmp_path, webhook(b) + webhook(a))
    assert first["webhook-1"] == swapped["webhook-2"] and first["webhook-2"] == swapped["webhook-1"]
    renamed = identities(tmp_path, webhook(a, name="team-a", extra="read_timeout = 3\nretry_delays = [1]"))
    assert renamed["team-a"] == first["webhook-1"]
    moved = identities(tmp_path, webhook("http://127.0.0.1:1/c", name="team-a"))
    assert moved["team-a"] not in first.values()


def test_two_handlers_with_one_target_get_two_identities(tmp_path: Path) -> None:
    """Two log handlers (or two webhooks to one URL) are told apart by their order among equals."""
    both = identities(tmp_path, '[[handler]]\ntype = "log"\n[[handler]]\ntype = "log"\nformat = "json"\n')
    assert len(set(both.values())) == 2


def test_two_config_files_with_the_same_handler_names_have_different_identities(tmp_path: Path) -> None:
    """Team A's "hook" and team B's "hook" at their own URLs are two handlers."""
    a = handler_identities(config(tmp_path, webhook("http://127.0.0.1:1/a", name="hook"), name="a.toml"))
    b = handler_identities(config(tmp_path, webhook("http://127.0.0.1:1/b", name="hook"), name="b.toml"))
    assert a[0][0] == b[0][0] == "hook"
    assert a[0][1] != b[0][1]


def test_identities_keep_credentials_out(tmp_path: Path) -> None:
    """An Apprise URL holds credentials: its identity is a hash that does not contain them."""
    (_name, identity), *_ = handler_identities(
        config(tmp_path, '[[handler]]\ntype = "apprise"\nurls_env = "APPRISE"\n')
    )
    assert identity.startswith("apprise:") and "hunter2" not in identity and "example" not in identity


def test_build_routes_binds_each_route_to_its_identity(tmp_path: Path) -> None:
    """The routes the daemon delivers through carry the identities `deliveries` compares against."""
    loaded = config(tmp_path, webhook("http://127.0.0.1:1/a") + '[[handler]]\ntype = "log"\n')
    routes = build_routes(loaded)
    try:
        assert [(route.key, route.identity) for route in routes] == handler_identities(loaded)
        # Built twice from one configuration: the same routes (a reload keeps their workers).
        again = build_routes(loaded)
        assert all(new.same_as(old) for new, old in zip(again, routes, strict=True))
        close_routes(again)
    finally:
        close_routes(routes)


def test_a_nats_handler_is_its_server_subject_and_stream(tmp_path: Path) -> None:
    """A NATS handler's identity is its server URL, subject and stream: another subject is another handler."""

    def nats(subject: str) -> str:
        return f'[[handler]]\ntype = "nats"\nname = "bus"\nurl = "nats://127.0.0.1:4222"\nsubject = "{subject}"\n'

    first = identities(tmp_path, nats("cvat.events"))
    assert first["bus"].startswith("nats:")
    assert identities(tmp_path, nats("cvat.events"))["bus"] == first["bus"]
    assert identities(tmp_path, nats("cvat.other"))["bus"] != first["bus"]
