"""The status page as HTML: everything from an export escaped, read back by a real Chromium's DOM."""

from __future__ import annotations

import html.parser
from pathlib import Path

import pytest
from cvat_watch.daemon.statuspage import MAX_TASKS_SHOWN, HandlerView, StatusView, TaskView, WatchView, render
from cvat_watch.daemon.store import OutboxSummary
from cvat_watch.testing.browser import Chromium

HOSTILE = '<img src=x onerror="alert(1)">&amp;"\'</td>'


def _view(*, task_name: str = "cats", error: str | None = None, in_progress: int = 1) -> StatusView:
    tasks = tuple(
        TaskView(
            id=str(12 + i),
            name=task_name,
            jobs=(("23", "in progress", "annotation"), ("24", "completed", "acceptance")),
            jobs_done=1,
        )
        for i in range(in_progress)
    )
    watch = WatchView(
        name="example",
        rule="completed",
        tasks=3,
        completed=2,
        in_progress=tasks,
        more_in_progress=0,
        last_reload_at=1_700_000_000.0,
        last_outcome="committed",
        last_success_at=1_700_000_000.0,
        last_error=error,
        loaded=True,
    )
    return StatusView(
        generated_at=1_700_000_100.0,
        started_at=1_700_000_000.0,
        state="/var/lib/cvat-watch/cvat-watch.db",
        watches=(watch,),
        handlers=(
            HandlerView("hook", OutboxSummary(pending=4, retrying=1, dead=2, oldest_pending_age=125.0)),
        ),
        config_ok=True,
        config_error=None,
        config_loaded_at=1_700_000_000.0,
    )


class _Elements(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def _tags(page: str) -> list[str]:
    parser = _Elements()
    parser.feed(page)
    return parser.tags


def test_text_from_an_export_is_escaped() -> None:
    """A task name and an error message full of markup stay text: no element, no attribute comes from them."""
    page = render(_view(task_name=HOSTILE, error=HOSTILE))
    assert HOSTILE not in page
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;&quot;&#x27;&lt;/td&gt;" in page
    assert "img" not in _tags(page) and "script" not in _tags(page)


def test_page_is_self_contained_and_refreshes_itself() -> None:
    """No script, no external asset (nothing with src= or href=), and a meta refresh of a few seconds."""
    page = render(_view(), refresh=5)
    assert '<meta http-equiv="refresh" content="5">' in page
    assert "src=" not in page and "href=" not in page and "<script" not in page
    assert "2/3" in page


def test_a_long_list_of_tasks_in_progress_is_cut(tmp_path: Path) -> None:
    """A project with thousands of open tasks lists MAX_TASKS_SHOWN of them and says how many more."""
    view = _view(in_progress=MAX_TASKS_SHOWN)
    watch = view.watches[0]
    import attrs

    page = render(attrs.evolve(view, watches=(attrs.evolve(watch, more_in_progress=975),)))
    assert page.count('class="task"') == MAX_TASKS_SHOWN and "and 975 more tasks in progress" in page


@pytest.fixture
def chromium() -> Chromium:
    if not Chromium.available():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")
    return Chromium()


def test_chromium_renders_hostile_names_as_text(tmp_path: Path, chromium: Chromium) -> None:
    """In a real browser the hostile task name is the text of its cell and made no element."""
    page = tmp_path / "status.html"
    page.write_text(render(_view(task_name=HOSTILE)))
    dom = chromium.dump_dom(page.as_uri())
    assert "<img" not in dom
    assert "onerror" in dom  # as text only
    assert "2/3" in dom and 'data-handler="hook"' in dom
