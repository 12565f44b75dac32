"""The README's library example, run against the bundled example export: every shown result holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "example"

#: The README's snippet, character for character; each "# value" comment is the expression's result.
SNIPPET = """\
from cvat_watch import Annotations

annotations = Annotations.from_path("config/example/annotations.xml", "config/example/job_status.json")
annotations.get_task_status(12)              # {'23': 'in progress'}  (job id -> state)
annotations.get_completed_task_ids()         # ['11', '13']
len(annotations.get_images_from_completed_tasks())   # 6
annotations.create_cvat_link("drive-02/frame_000001.jpg")   # 'http://localhost:8080/tasks/12/jobs/23?frame=1'
"""


def test_the_readme_shows_exactly_this_snippet() -> None:
    """The snippet checked below is the one the README shows, character for character."""
    assert SNIPPET in (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_library_example_matches_the_bundled_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the repository root as the README says, each line gives the result its comment shows."""
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {}
    lines = SNIPPET.splitlines()
    exec("\n".join(lines[:3]), namespace)  # the import and the load
    for line in lines[3:]:
        expression, _, comment = line.partition("#")
        expected = re.split(r"\s{2,}\(", comment.strip())[0]
        assert repr(eval(expression, namespace)) == expected, line
