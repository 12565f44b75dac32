"""The linter and the type checker pass on the package (they run as part of the test command)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{name} is not installed in this environment (pip install -e '.[test]')")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_finds_nothing() -> None:
    """ruff lint (settings in pyproject.toml) reports no problem in the package, tests or benchmarks."""
    result = _run(_tool("ruff"), "check", "--no-cache", "cvat_watch", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    """Every Python file is formatted as `ruff format` would write it."""
    result = _run(_tool("ruff"), "format", "--check", "--no-cache", "cvat_watch", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    """mypy type-checks the package cleanly with the settings in pyproject.toml."""
    result = _run(sys.executable, "-m", "mypy", "--no-incremental")
    assert result.returncode == 0, result.stdout + result.stderr
