"""CVAT XML ("CVAT for images 1.1" / "CVAT for video 1.1") ⇄ :mod:`cvat_watch.model`.

``load``/``loads`` build the full model, ``load_summary``/``loads_summary`` only the meta and the
per-task counts, ``load_brief``/``loads_brief`` those counts with each task reduced to what the
daemon compares (same checks, same errors), ``dumps``/``save`` write the model back as CVAT wrote
it. Inside, private modules: ``_vocab`` (element and attribute names, one table per vocabulary),
``_base`` (the parser, ``<meta>``, errors, shared by both readers), ``_reader`` (full model),
``_fastbuild`` (the element readers generated per attribute layout), ``_summary`` and ``_writer``.
"""

from __future__ import annotations

from cvat_watch.cvatxml._base import PathLike, read_bytes, read_file
from cvat_watch.cvatxml._reader import FullReader
from cvat_watch.cvatxml._summary import BriefReader, SummaryReader
from cvat_watch.cvatxml._writer import dumps, save
from cvat_watch.model import Annotations, ExportBrief, ExportSummary

__all__ = ["dumps", "load", "load_brief", "load_summary", "loads", "loads_brief", "loads_summary", "save"]


def load(path: PathLike) -> Annotations:
    """Read a CVAT XML export into the full model; ``Annotations.path`` is set to ``path``."""
    result: Annotations = read_file(path, FullReader)
    return result


def load_summary(path: PathLike) -> ExportSummary:
    """The export's meta and per-task image and shape counts, without building shape objects."""
    result: ExportSummary = read_file(path, SummaryReader)
    return result


def loads_summary(data: bytes, *, path: PathLike | None = None) -> ExportSummary:
    """:func:`load_summary` of bytes already read (the daemon hashes them first)."""
    result: ExportSummary = read_bytes(data, path, SummaryReader)
    return result


def load_brief(path: PathLike) -> ExportBrief:
    """:func:`load_summary` with each task reduced to a TaskBrief: what the daemon keeps in memory."""
    result: ExportBrief = read_file(path, BriefReader)
    return result


def loads_brief(data: bytes, *, path: PathLike | None = None) -> ExportBrief:
    """:func:`load_brief` of bytes already read (the daemon hashes them first)."""
    result: ExportBrief = read_bytes(data, path, BriefReader)
    return result


def loads(data: bytes, *, path: PathLike | None = None) -> Annotations:
    """Read a CVAT XML export from bytes; ``path`` only names it in errors and ``Annotations.path``."""
    result: Annotations = read_bytes(data, path, FullReader)
    return result
