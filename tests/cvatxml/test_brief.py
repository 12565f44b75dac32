"""The daemon's export reader (``load_brief``): the summary's values, checks and errors, less memory.

A project export's tasks are mapped one by one as they end, inside the capture of ``<meta>``;
what the readers return, and which error they raise first, must be what they were when the whole
``<meta>`` was captured before anything was mapped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cvat_watch import cvatxml
from cvat_watch.errors import AnnotationsError
from cvat_watch.model import XmlElement
from cvat_watch.testing.generate import generate_export

READERS: dict[str, Callable[[Path], Any]] = {
    "load": cvatxml.load,
    "load_summary": cvatxml.load_summary,
    "load_brief": cvatxml.load_brief,
    "loads_brief": lambda path: cvatxml.loads_brief(path.read_bytes(), path=path),
}


def _project(tmp_path: Path, *, tasks: int = 4) -> Path:
    path = tmp_path / "project.xml"
    generate_export(path, kind="project", images=tasks * 2, tasks=tasks, jobs_per_task=2, shapes_per_image=1)
    return path


@pytest.mark.parametrize(
    ("kind", "media", "tasks", "images"),
    [
        ("project", "images", 6, 30),
        ("project", "video", 3, 12),
        ("task", "images", 1, 5),
        ("task", "video", 1, 5),
    ],
)
def test_brief_is_the_summary_reduced(tmp_path: Path, kind: str, media: str, tasks: int, images: int) -> None:
    """On generated exports load_brief and loads_brief give ExportSummary.brief() of load_summary,
    which agrees with the full model; ids, names, subsets, counts and the base URL are all there."""
    path = tmp_path / "export.xml"
    generate_export(path, kind=kind, media=media, images=images, tasks=tasks, jobs_per_task=2)  # type: ignore[arg-type]
    summary = cvatxml.load_summary(path)
    assert summary == cvatxml.load(path).summary()
    brief = cvatxml.load_brief(path)
    assert brief == summary.brief() == cvatxml.loads_brief(path.read_bytes(), path=path)
    assert [(t.id, t.name, t.subset) for t in brief.tasks] == [
        (t.id, t.name, t.subset) for t in summary.tasks
    ]
    assert len(brief.tasks) == tasks
    assert brief.base_url == "http://localhost:8080"
    assert (brief.project_id is None) == (kind == "task")


def test_brief_keeps_one_object_per_subset_and_base_url(tmp_path: Path) -> None:
    """Every task of a project repeats its subset and its job URLs' host: the brief holds each once."""
    brief = cvatxml.load_brief(_project(tmp_path, tasks=8))
    subsets = {task.subset for task in brief.tasks}
    assert len({id(task.subset) for task in brief.tasks}) == len(subsets)
    assert len({id(task.base_url) for task in brief.tasks}) == 1


def test_unknown_elements_of_a_project_task_are_kept(tmp_path: Path) -> None:
    """A task mapped at its end still keeps the elements the model does not know, children and text."""
    path = _project(tmp_path)
    text = path.read_text()
    second = text.index("<task>", text.index("<task>") + 1)
    path.write_text(text[:second] + '<task>\n<hint a="1">x<b/></hint>' + text[second + len("<task>") :])
    task = cvatxml.load(path).tasks[1]
    assert task.extra == (XmlElement("hint", (("a", "1"),), "x", (XmlElement("b"),)),)
    assert task.xml_layout is not None and task.xml_layout[0] == "hint"
    assert cvatxml.load_summary(path).tasks[1] == task


def _errors(path: Path) -> set[tuple[str, int | None, int | None]]:
    found = set()
    for reader in READERS.values():
        with pytest.raises(AnnotationsError) as caught:
            reader(path)
        found.add((caught.value.message, caught.value.line, caught.value.column))
    return found


def _break_size(text: str, task: int) -> str:
    """The text with the ``<size>`` of the task at place ``task`` made unreadable."""
    place = -1
    for _ in range(task + 1):
        place = text.index("<size>", place + 1)
    return text[:place] + "<size>many" + text[text.index("</size>", place) :]


def test_a_bad_task_is_reported_at_its_place_by_every_reader(tmp_path: Path) -> None:
    """The first bad task in document order is the error, at its element, whichever reader."""
    path = _project(tmp_path)
    text = _break_size(_break_size(path.read_text(), 3), 1)
    path.write_text(text)
    ((message, line, column),) = _errors(path)
    assert message == "<size> must be an integer, not 'many'"
    first = text.index("<size>many")
    assert (line, column) == (text.count("\n", 0, first) + 1, first - text.rfind("\n", 0, first))


def test_a_broken_meta_after_a_bad_task_is_reported_first(tmp_path: Path) -> None:
    """A syntax error later in <meta> wins over a bad task before it, as when <meta> was captured
    whole before any task was mapped: the error of the mapping waits for its turn."""
    path = _project(tmp_path)
    text = _break_size(path.read_text(), 0).replace("</project>", "</projekt>", 1)
    path.write_text(text)
    ((message, line, _),) = _errors(path)
    assert message.startswith("malformed XML: mismatched tag")
    assert line == text.count("\n", 0, text.index("</projekt>")) + 1
