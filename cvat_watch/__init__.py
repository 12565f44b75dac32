"""cvat-watch: load, query and save CVAT XML exports, and watch them for completed tasks.

The library is :class:`Annotations` and the values it is made of; the daemon lives in
:mod:`cvat_watch.daemon.service` and is started with the ``cvat-watch`` command.
"""

from __future__ import annotations

from cvat_watch.errors import (
    AnnotationsError,
    ConfigError,
    CvatWatchError,
    DeliveryError,
    JobStatusError,
    QueryError,
    StateError,
)
from cvat_watch.model import (
    Annotations,
    Attribute,
    Box,
    Cuboid,
    Ellipse,
    ExportSummary,
    ImageAnnotation,
    JobStatus,
    Label,
    LabelAttribute,
    Mask,
    Points,
    Polygon,
    Polyline,
    Project,
    Segment,
    Size,
    Skeleton,
    SkeletonPoint,
    Tag,
    Task,
    Track,
    TrackedShape,
    User,
    XmlElement,
)

__all__ = [
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
