"""The public API: what ``import cvat_watch`` offers is pinned here, so changes are deliberate."""

from __future__ import annotations

import subprocess
import sys

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


def test_library_import_does_not_pull_in_the_cli_or_network() -> None:
    """Importing the library loads neither the CLI nor httpx nor watchdog."""
    code = (
        "import sys, cvat_watch; a = cvat_watch.Annotations; "
        "print(sorted(m for m in ('cvat_watch.cli', 'httpx', 'watchdog') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
