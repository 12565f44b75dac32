"""The public API: what ``import cvat_watch`` offers is pinned here, so changes are deliberate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cvat_watch

PUBLIC = [
    "Annotations",
    "AnnotationsError",
    "Attribute",
    "Box",
    "ConfigError",
    "Cuboid",
    "CvatWatchError",
    "DeliveryError",
    "Ellipse",
    "ExportSummary",
    "ImageAnnotation",
    "JobStatus",
    "JobStatusError",
    "Label",
    "LabelAttribute",
    "Mask",
    "Points",
    "Polygon",
    "Polyline",
    "Project",
    "QueryError",
    "Segment",
    "Size",
    "Skeleton",
    "SkeletonPoint",
    "StateError",
    "Tag",
    "Task",
    "Track",
    "TrackedShape",
    "User",
    "XmlElement",
]


def test_all_is_pinned_and_sorted() -> None:
    """__all__ lists exactly the pinned names, sorted, and each one is importable."""
    assert cvat_watch.__all__ == sorted(cvat_watch.__all__)
    assert cvat_watch.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(cvat_watch, name) is not None


def test_every_error_derives_from_one_base() -> None:
    """All the package's exceptions share CvatWatchError as their base."""
    errors = [
        cvat_watch.AnnotationsError,
        cvat_watch.JobStatusError,
        cvat_watch.ConfigError,
        cvat_watch.StateError,
        cvat_watch.DeliveryError,
    ]
    assert all(issubclass(error, cvat_watch.CvatWatchError) for error in errors)


DAEMON_MACHINERY = ("cvat_watch.cli", "cvat_watch.daemon", "httpx", "watchdog", "sqlite3", "apprise")


def test_library_use_does_not_pull_in_the_daemon_or_cli() -> None:
    """Loading, querying and saving an export imports no CLI, daemon, watchdog, sqlite3 or HTTP client."""
    code = (
        "import sys, tempfile, os, cvat_watch\n"
        "a = cvat_watch.Annotations.from_path('config/example/annotations.xml', 'config/example/job_status.json')\n"
        "a.get_completed_task_ids(); a.summary()\n"
        "a.save(os.path.join(tempfile.mkdtemp(), 'out.xml'))\n"
        f"print(sorted(m for m in {DAEMON_MACHINERY!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert result.stdout.strip() == "[]"
