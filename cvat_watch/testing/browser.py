"""A real headless Chromium for the status page's tests: the rendered DOM and a screenshot.

Debian's ``chromium`` package (``/usr/bin/chromium``); tests skip where it is absent. Each call
runs a fresh browser with a fresh profile folder and no network beyond the page it is given.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["CHROMIUM", "Chromium"]

CHROMIUM = Path("/usr/bin/chromium")

_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests may run as root in a container, where the sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--hide-scrollbars",
)


class Chromium:
    """``/usr/bin/chromium`` (or ``binary``) driven through its command line."""

    def __init__(self, binary: Path = CHROMIUM) -> None:
        self.binary = binary

    @staticmethod
    def available(binary: Path = CHROMIUM) -> bool:
        return binary.is_file() and shutil.which(str(binary)) is not None

    def _run(self, url: str, *extra: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="cvat-watch-chromium-") as profile:
            return subprocess.run(
                [str(self.binary), *_FLAGS, f"--user-data-dir={profile}", *extra, url],
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )

    def dump_dom(self, url: str) -> str:
        """The DOM after the page loaded, serialised as HTML."""
        result = self._run(url, "--dump-dom")
        if result.returncode != 0 or not result.stdout.strip():
            raise AssertionError(
                f"chromium --dump-dom {url} failed ({result.returncode}): {result.stderr[-2000:]}"
            )
        return result.stdout

    def screenshot(self, url: str, path: Path, *, width: int = 900, height: int = 640) -> Path:
        """A PNG of the page at ``width`` × ``height`` CSS pixels."""
        result = self._run(url, f"--screenshot={path}", f"--window-size={width},{height}")
        if result.returncode != 0 or not path.is_file():
            raise AssertionError(
                f"chromium --screenshot {url} failed ({result.returncode}): {result.stderr[-2000:]}"
            )
        return path
