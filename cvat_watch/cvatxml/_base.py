"""What the full and the summary reader share: the parser, ``<meta>``, unknown elements, errors.

Reading streams the file through one expat parser that defusedxml configured (DTDs, entity
declarations and external entities refused), with our own start/end/text handlers installed on it:
no element tree is built. The ``<meta>`` section is first captured as plain nodes and then
mapped; only a project's tasks, which can be most of a big export, are mapped one by one as they
end. Every failure, whatever the bytes, reaches the caller as an AnnotationsError naming the
file, line and column.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from xml.parsers import expat

from defusedxml.common import (
    DefusedXmlException,
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)
from defusedxml.ElementTree import DefusedXMLParser

from cvat_watch._gcpause import gc_paused
from cvat_watch._queries import _single_task_id
from cvat_watch.cvatxml import _vocab
from cvat_watch.cvatxml._vocab import (
    LABEL_ATTRIBUTE_FIELDS,
    LABEL_FIELDS,
    MAX_DEPTH,
    PROJECT_FIELDS,
    SEGMENT_FIELDS,
    SIZE_FIELDS,
    TASK_FIELDS,
    USER_FIELDS,
    Content,
    is_xml_space,
)
from cvat_watch.errors import AnnotationsError
from cvat_watch.model import (
    ExportKind,
    Label,
    LabelAttribute,
    Project,
    Segment,
    Size,
    Task,
    User,
    XmlElement,
)

_log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class Node:
    """One element of ``<meta>`` (or an unknown root-level element) while it is being captured."""

    __slots__ = ("attributes", "children", "column", "line", "mapped", "tag", "text")

    def __init__(self, tag: str, attributes: list[str], line: int, column: int) -> None:
        self.tag = tag
        self.attributes = attributes
        self.text: list[str] = []
        self.children: list[Node] = []
        self.line = line
        self.column = column
        #: A project's task mapped as soon as it ended (see ReaderBase.task_ended): its value,
        #: or the AnnotationsError its mapping raised, kept until the mapping reaches its place.
        self.mapped: Any = None

    def joined_text(self) -> str:
        return "".join(self.text)

    def to_element(self) -> XmlElement:
        # Built only for what the model keeps as an extra element: a project export's <meta>
        # holds tens of elements per task, and converting each one cost more than the rest of
        # the capture. The recursion is bounded by MAX_DEPTH, which capture_start enforces.
        text: str | None = "".join(self.text)
        if not text or is_xml_space(text):
            text = None
        pairs = self.attributes
        return XmlElement(
            self.tag,
            tuple(zip(pairs[0::2], pairs[1::2], strict=True)),
            text,
            tuple(child.to_element() for child in self.children),
        )


_HANDLER_NAMES = (
    "StartElementHandler",
    "EndElementHandler",
    "CharacterDataHandler",
    "DefaultHandlerExpand",
    "StartNamespaceDeclHandler",
    "EndNamespaceDeclHandler",
    "CommentHandler",
    "ProcessingInstructionHandler",
)
_GUARD_NAMES = (
    "StartDoctypeDeclHandler",
    "EntityDeclHandler",
    "UnparsedEntityDeclHandler",
    "ExternalEntityRefHandler",
)


def _new_parser() -> tuple[DefusedXMLParser, Any]:
    """defusedxml's expat parser with its guards, stripped of ElementTree's tree-building handlers."""
    defused = DefusedXMLParser(forbid_dtd=True, forbid_entities=True, forbid_external=True)
    parser = defused.parser
    for name in _HANDLER_NAMES:
        setattr(parser, name, None)
    parser.buffer_text = True
    parser.ordered_attributes = True
    return defused, parser


class ReaderBase:
    """Root element, ``<meta>`` capture and mapping, unknown-element capture and skipping."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.defused, self.parser = _new_parser()
        self.kind: ExportKind | None = None
        self.version: str | None = None
        self.project: Project | None = None
        self.tasks: list[Task] = []
        self.dumped: str | None = None
        self.source: str | None = None
        self.meta_extra: list[XmlElement] = []
        self.root_tokens: list[str] = []
        self.layouts: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.default_task_id: str | None = None
        self.single_task_id: str | None = None
        self.finished = False
        self.dropped: dict[str, int] = {}
        # capture state
        self._stack: list[Node] = []
        self._capture_done: Callable[[Node], None] | None = None
        self._skip_depth = 0
        self._skip_resume: Any = None

    # -- errors ------------------------------------------------------------------------------

    def error(self, message: str, line: int | None = None, column: int | None = None) -> AnnotationsError:
        if line is None:
            line = self.parser.CurrentLineNumber
            column = self.parser.CurrentColumnNumber + 1
        return AnnotationsError(message, path=self.path, line=line, column=column)

    def node_error(self, node: Node, message: str) -> AnnotationsError:
        return self.error(message, node.line, node.column)

    # -- layouts -----------------------------------------------------------------------------

    def intern(self, names: tuple[str, ...]) -> tuple[str, ...]:
        # One shared tuple per distinct layout: a big export repeats a handful of layouts.
        return self.layouts.setdefault(names, names)

    # -- handler plumbing --------------------------------------------------------------------

    def body_handlers(self) -> None:
        raise NotImplementedError

    def install(
        self,
        start: Callable[[str, list[str]], None],
        end: Callable[[str], None],
        text: Callable[[str], None] | None,
    ) -> None:
        parser = self.parser
        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = text

    def close(self) -> None:
        # The handlers are bound methods of self and self holds the parser: break the cycle
        # here, so that the reader is freed at once, without waiting for the cyclic collector.
        parser = self.parser
        if parser is not None:
            for name in (*_HANDLER_NAMES, *_GUARD_NAMES):
                setattr(parser, name, None)
        self.defused.parser = self.defused._parser = None
        self.defused.target = self.defused._target = None
        self.parser = None
        self._capture_done = None
        self._skip_resume = None

    # -- root --------------------------------------------------------------------------------

    def root_start(self, name: str, attrs: list[str]) -> None:
        if name != "annotations":
            raise self.error(f"not a CVAT XML export: the root element is <{name}>, expected <annotations>")
        self.body_handlers()

    def root_child(self, name: str, attrs: list[str]) -> None:
        """A child of ``<annotations>`` other than an image or a track."""
        if name == "meta":
            self.root_tokens.append("meta")
            self.capture(name, attrs, self.meta_done)
        elif name == "version":
            self.root_tokens.append("version")
            self.capture(name, attrs, self.version_done)
        else:
            self.root_tokens.append(name)
            self.capture(name, attrs, self.root_extra_done)

    def version_done(self, node: Node) -> None:
        self.version = node.joined_text()

    def root_extra_done(self, node: Node) -> None:
        self.meta_extra.append(node.to_element())

    # -- capture: build _Nodes for a subtree, then hand the top node to a callback ------------

    def capture(self, name: str, attrs: list[str], done: Callable[[Node], None]) -> None:
        parser = self.parser
        self._stack = [Node(name, attrs, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)]
        self._capture_done = done
        self.install(self.capture_start, self.capture_end, self.capture_text)

    def capture_start(self, name: str, attrs: list[str]) -> None:
        if len(self._stack) >= MAX_DEPTH:
            raise self.error(f"elements nested more than {MAX_DEPTH} levels deep")
        parser = self.parser
        node = Node(name, attrs, parser.CurrentLineNumber, parser.CurrentColumnNumber + 1)
        self._stack[-1].children.append(node)
        self._stack.append(node)

    def capture_text(self, data: str) -> None:
        self._stack[-1].text.append(data)

    def capture_end(self, name: str) -> None:
        stack = self._stack
        node = stack.pop()
        if name == "task" and len(stack) == 3 and self._capture_done == self.meta_done:
            self.task_ended(node, stack)
        if not stack:
            done = self._capture_done
            self._capture_done = None
            self.body_handlers()
            assert done is not None
            done(node)

    # -- skipping elements the model has no place for -----------------------------------------

    def skip(self, name: str) -> None:
        """Skip the element that just started, with all it contains; then resume where it was."""
        self.dropped[name] = self.dropped.get(name, 0) + 1
        self._skip_depth = 1
        parser = self.parser
        self._skip_resume = (
            parser.StartElementHandler,
            parser.EndElementHandler,
            parser.CharacterDataHandler,
        )
        self.install(self.skip_start, self.skip_end, None)

    def skip_start(self, name: str, attrs: list[str]) -> None:
        self._skip_depth += 1
        if self._skip_depth >= MAX_DEPTH:
            raise self.error(f"elements nested more than {MAX_DEPTH} levels deep")

    def skip_end(self, name: str) -> None:
        self._skip_depth -= 1
        if not self._skip_depth:
            resume = self._skip_resume
            self._skip_resume = None
            self.install(*resume)

    # -- meta --------------------------------------------------------------------------------

    def meta_done(self, meta: Node) -> None:
        for child in meta.children:
            tag = child.tag
            self.root_tokens.append("meta/" + tag)
            if tag == "project":
                self.kind = self.kind or "project"
                self.project = self.map_project(child)
            elif tag in ("task", "job"):
                self.kind = self.kind or tag  # type: ignore[assignment]
                self.tasks.append(self.task_value(child))
            elif tag == "dumped":
                self.dumped = child.joined_text()
            elif tag == "source":
                self.source = child.joined_text()
            else:
                self.meta_extra.append(child.to_element())
        self.meta_known()

    def meta_known(self) -> None:
        """Derive what the body needs from the meta: the task id images default to."""
        single = _single_task_id(self.kind, self.tasks)
        self.single_task_id = single
        self.default_task_id = single if self.kind != "project" else None

    def map_fields(
        self, node: Node, fields: dict[str, Content], *, keep_extra: bool
    ) -> tuple[dict[str, Any], list[XmlElement], tuple[str, ...]]:
        values: dict[str, Any] = {}
        extra: list[XmlElement] = []
        layout: list[str] = []
        for child in node.children:
            tag = child.tag
            how = fields.get(tag)
            if how is None:
                if keep_extra:
                    extra.append(child.to_element())
                    layout.append(tag)
                else:
                    self.dropped[tag] = self.dropped.get(tag, 0) + 1
                continue
            layout.append(tag)
            if how is Content.TEXT:
                values[tag] = child.joined_text()
            elif how is Content.INT:
                values[tag] = self.map_int(child)
            elif how is Content.USER:
                values[tag] = self.map_user(child)
            elif how is Content.SEGMENTS:
                values[tag] = tuple(self.map_segment(c) for c in self.children_named(child, "segment"))
            elif how is Content.LABELS:
                values[tag] = tuple(self.map_label(c) for c in self.children_named(child, "label"))
            elif how is Content.LABEL_ATTRIBUTES:
                values[tag] = tuple(
                    self.map_label_attribute(c) for c in self.children_named(child, "attribute")
                )
            elif how is Content.SIZE:
                values[tag] = self.map_size(child)
            elif how is Content.TASKS:
                self.tasks.extend(self.task_value(c) for c in self.children_named(child, "task"))
        return values, extra, self.intern(tuple(layout))

    def children_named(self, node: Node, tag: str) -> Iterator[Node]:
        for child in node.children:
            if child.tag == tag:
                yield child
            else:
                self.dropped[child.tag] = self.dropped.get(child.tag, 0) + 1

    def map_int(self, node: Node) -> int:
        text = node.joined_text()
        try:
            return int(text)
        except ValueError:
            raise self.node_error(node, f"<{node.tag}> must be an integer, not {text!r}") from None

    def required(self, node: Node, values: dict[str, Any], name: str) -> None:
        if name not in values:
            raise self.node_error(node, f"<{node.tag}> has no <{name}>")

    def map_project(self, node: Node) -> Project:
        values, extra, layout = self.map_fields(node, PROJECT_FIELDS, keep_extra=True)
        return Project(**values, extra=tuple(extra), xml_layout=layout)

    def map_task(self, node: Node) -> Task:
        values, extra, layout = self.map_fields(node, TASK_FIELDS, keep_extra=True)
        return Task(**values, extra=tuple(extra), xml_layout=layout)

    def keep_task(self, task: Task) -> Any:
        """What the reader keeps of a mapped task (the summary for the daemon keeps less)."""
        return task

    def task_value(self, node: Node) -> Any:
        """The kept value of a ``<task>`` node; raises the error of its mapping, where it stands."""
        mapped = node.mapped
        if mapped is None:
            return self.keep_task(self.map_task(node))
        if isinstance(mapped, Exception):
            raise mapped
        return mapped

    def task_ended(self, node: Node, stack: list[Node]) -> None:
        """Map a ``<meta><project><tasks><task>`` at its end and drop its nodes.

        A project export's meta holds every task: captured whole, 100,000 tasks were millions of
        nodes alive at once. The value (or the error) waits in the node until the mapping of the
        project reaches it, so that what is raised, and in which order, stays as before.
        """
        if stack[2].tag != "tasks" or stack[1].tag != "project":
            return
        try:
            node.mapped = self.keep_task(self.map_task(node))
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as error:  # run() reports any error, where the mapping used to raise it
            node.mapped = error
        node.children = []
        node.text = []

    def map_segment(self, node: Node) -> Segment:
        values, _, layout = self.map_fields(node, SEGMENT_FIELDS, keep_extra=False)
        for name in ("id", "start", "stop"):
            self.required(node, values, name)
        return Segment(**values, xml_layout=layout)

    def map_user(self, node: Node) -> User:
        values, _, layout = self.map_fields(node, USER_FIELDS, keep_extra=False)
        return User(**values, xml_layout=layout)

    def map_label(self, node: Node) -> Label:
        values, extra, layout = self.map_fields(node, LABEL_FIELDS, keep_extra=True)
        self.required(node, values, "name")
        return Label(**values, extra=tuple(extra), xml_layout=layout)

    def map_label_attribute(self, node: Node) -> LabelAttribute:
        values, _, layout = self.map_fields(node, LABEL_ATTRIBUTE_FIELDS, keep_extra=False)
        self.required(node, values, "name")
        return LabelAttribute(**values, xml_layout=layout)

    def map_size(self, node: Node) -> Size:
        values, _, _ = self.map_fields(node, SIZE_FIELDS, keep_extra=False)
        self.required(node, values, "width")
        self.required(node, values, "height")
        return Size(**values)

    # -- running -----------------------------------------------------------------------------

    def feed(self, chunks: Iterable[bytes]) -> None:
        parser = self.parser
        parser.StartElementHandler = self.root_start
        for chunk in chunks:
            parser.Parse(chunk, False)
        try:
            parser.Parse(b"", True)
        except expat.ExpatError as exc:
            if exc.code == expat.errors.codes[expat.errors.XML_ERROR_NO_ELEMENTS]:
                what = "the file is empty" if exc.lineno == 1 and exc.offset == 0 else "the XML ends early"
                raise AnnotationsError(
                    f"truncated XML: {what} (no complete <annotations> element)",
                    path=self.path,
                    line=exc.lineno,
                    column=exc.offset + 1,
                ) from None
            if exc.code in _TRUNCATION_CODES:
                raise AnnotationsError(
                    f"truncated XML: the file ends inside an element ({expat.ErrorString(exc.code)})",
                    path=self.path,
                    line=exc.lineno,
                    column=exc.offset + 1,
                ) from None
            raise
        if self.dropped:
            kinds = ", ".join(f"<{tag}> ×{count}" for tag, count in sorted(self.dropped.items()))
            _log.warning("%s: skipped elements cvat-watch does not model: %s", self.path or "XML", kinds)


_TRUNCATION_CODES = frozenset(
    expat.errors.codes[name]
    for name in (
        expat.errors.XML_ERROR_UNCLOSED_TOKEN,
        expat.errors.XML_ERROR_PARTIAL_CHAR,
        expat.errors.XML_ERROR_UNCLOSED_CDATA_SECTION,
    )
)


def file_chunks(file: Any, path: Path) -> Iterator[bytes]:
    while True:
        try:
            chunk = file.read(_vocab.CHUNK_SIZE)
        except OSError as exc:
            raise os_error(exc, path, "cannot read") from exc
        if not chunk:
            return
        yield chunk


def data_chunks(data: bytes | bytearray | memoryview) -> Iterator[bytes]:
    view = memoryview(data)
    size = _vocab.CHUNK_SIZE  # looked up on use: tests cut documents into small pieces
    for offset in range(0, len(view), size):
        yield bytes(view[offset : offset + size])


def os_error(exc: OSError, path: PathLike | None, doing: str) -> AnnotationsError:
    if isinstance(exc, FileNotFoundError):
        reason = "no such file"
    elif isinstance(exc, IsADirectoryError):
        reason = "is a directory"
    elif isinstance(exc, PermissionError):
        reason = "permission denied"
    else:
        reason = exc.strerror or str(exc)
    return AnnotationsError(f"{doing}: {reason}", path=path)


def _refusal(exc: DefusedXmlException) -> str:
    if isinstance(exc, DTDForbidden):
        what = f"a DTD (<!DOCTYPE {exc.name} …>)"
    elif isinstance(exc, EntitiesForbidden):
        what = f"the entity declaration {exc.name!r}"
    elif isinstance(exc, ExternalReferenceForbidden):
        what = f"the external entity reference {exc.sysid!r}"
    else:
        what = type(exc).__name__
    return f"refused {what}: DTDs, entity declarations and external entities are never read"


_DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _utf8_problem(head: bytes, chunks: Iterable[bytes]) -> str | None:
    """Where the bytes stop being UTF-8, if the document is meant to be UTF-8 and is not."""
    if head.startswith((b"\xfe\xff", b"\xff\xfe")):
        return None
    declared = _DECLARED_ENCODING.match(head)
    if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        for chunk in chunks:
            decoder.decode(chunk)
            offset += len(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        position = offset + exc.start
        return f"invalid UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {position}"
    return None


def run(
    reader: ReaderBase, chunks: Iterable[bytes], rescan: Callable[[], tuple[bytes, Iterable[bytes]]]
) -> None:
    """Feed the reader and turn every failure into an AnnotationsError with a position."""
    path = reader.path
    try:
        reader.feed(chunks)
    except AnnotationsError:
        raise
    except DefusedXmlException as exc:
        raise reader.error(_refusal(exc)) from None
    except expat.ExpatError as exc:
        message = expat.ErrorString(exc.code)
        if exc.code == expat.errors.codes[expat.errors.XML_ERROR_INVALID_TOKEN]:
            head, again = rescan()
            problem = _utf8_problem(head, again)
            if problem:
                raise AnnotationsError(problem, path=path, line=exc.lineno, column=exc.offset + 1) from None
        raise AnnotationsError(
            f"malformed XML: {message}", path=path, line=exc.lineno, column=exc.offset + 1
        ) from None
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:
        # Whatever the bytes, the caller gets an AnnotationsError.
        line = column = None
        if reader.parser is not None:
            line, column = reader.parser.CurrentLineNumber, reader.parser.CurrentColumnNumber + 1
        raise AnnotationsError(
            f"cannot read the export: {type(exc).__name__}: {exc}", path=path, line=line, column=column
        ) from exc


def read_file(path: PathLike, reader_class: type[ReaderBase]) -> Any:
    """Run a reader of ``reader_class`` over the file and return its result."""
    file_path = Path(path)
    try:
        file = open(file_path, "rb")  # noqa: SIM115 - closed below, errors mapped first
    except OSError as exc:
        raise os_error(exc, file_path, "cannot open") from exc

    def rescan() -> tuple[bytes, Iterable[bytes]]:
        try:
            with open(file_path, "rb") as again:
                data = again.read()
        except OSError:
            return b"", ()
        return data[:200], (data,)

    with file, gc_paused():
        reader = reader_class(file_path)
        try:
            run(reader, file_chunks(file, file_path), rescan)
            return reader.result()  # type: ignore[attr-defined]
        finally:
            reader.close()


def read_bytes(data: bytes, path: PathLike | None, reader_class: type[ReaderBase]) -> Any:
    """Run a reader of ``reader_class`` over bytes already read and return its result."""
    file_path = Path(path) if path is not None else None
    with gc_paused():
        reader = reader_class(file_path)
        try:
            run(reader, data_chunks(data), lambda: (bytes(data[:200]), (bytes(data),)))
            return reader.result()  # type: ignore[attr-defined]
        finally:
            reader.close()
