"""Fixtures shared by the whole suite: the repository's paths, the public corpus, leak guards."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cvat_watch.testing.process import wait_until

ROOT = Path(__file__).resolve().parents[1]
#: Public CVAT files beside the project (``../shared/corpus``); a user's clone has none.
#: CVAT_CORPUS_DIR points elsewhere (a git worktree does not sit beside ``shared``).
CORPUS = Path(os.environ.get("CVAT_CORPUS_DIR") or ROOT.parent / "shared" / "corpus")


@pytest.fixture
def corpus() -> Path:
    """The public CVAT corpus; the test is skipped where it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"no CVAT corpus at {CORPUS} (it lies beside the project, not in it)")
    return CORPUS


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (workers, watchers, servers, clients)."""
    before = set(threading.enumerate())
    yield
    try:
        wait_until(
            lambda: set(threading.enumerate()) <= before, timeout=5.0, what="the test's threads to end"
        )
    except AssertionError:
        leaked = sorted(thread.name for thread in set(threading.enumerate()) - before)
        raise AssertionError(f"threads left running: {leaked}") from None
