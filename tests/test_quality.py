"""The linter and the type checker pass on the package (they run as part of the test command)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF_RULES = "E,F,W,I,B,UP,SIM,RUF"


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{name} is not installed in this environment (pip install -e '.[test]')")
    return path


def test_ruff_finds_nothing() -> None:
    """ruff reports no problem in the package, the tests or the benchmarks."""
    result = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", "--line-length", "110", "--target-version", "py311",
         "--select", RUFF_RULES, "--ignore", "RUF001,RUF002,RUF003,RUF009,SIM105",
         # Test data and docstrings read better unwrapped; the package keeps the limit.
         "--per-file-ignores", "tests/*:E501", "--per-file-ignores", "benchmarks/*:E501",
         "cvat_watch", "tests", "benchmarks"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    """mypy type-checks the package cleanly with the settings in setup.cfg."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "--config-file", "setup.cfg"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
