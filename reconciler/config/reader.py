"""YAML text -> plain values with positions.

Owns reading the files: parsing (the C parser when available) and building
plain values straight from parser events, so every value keeps its `file:line:col` (`_Document`),
duplicate keys are caught, alias expansion and nesting are bounded, and unsupported tags, dates
and binary values are refused. A first read records the positions of containers only (resources,
their sections, lists); the first time a position below them is asked for (a diagnostic to place,
a value's location), the text is read again with every position (`_Document.full`), so positions
cost nothing for a valid file and are exactly the same when needed. Quoted and `str` scalars go through `interpolation`.
Finding the files is `discovery`; writing YAML back is `writer`.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
import yaml.cyaml

from ..errors import Diagnostic, clip
from ..model import Location
from .interpolation import interpolate

DEFAULT_PATH = "agora.yaml"
MAX_ALIAS_EXPANSION = 10_000  # nodes reached through aliases; a "billion laughs" needs 10**9
MAX_DEPTH = 64
_C_PARSER = getattr(yaml, "__with_libyaml__", False)
_CYAML: Any = yaml.cyaml
_STR_TAG = "tag:yaml.org,2002:str"
_TAGS_KEPT = 4096  # plain scalars whose implicit tag a read remembers (values like `tls`, `true`, an IP recur)

Path_ = tuple[str | int, ...]


@dataclass
class _Document:
    """One file's values plus where each came from."""

    file: str
    value: Any
    text_digest: str = ""
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # value: (line, col), 1-based
    key_positions: dict[Path_, tuple[int, int]] = field(default_factory=dict)  # mapping key: (line, col)
    plain: dict[Path_, str] = field(default_factory=dict)  # unquoted scalars that are not strings
    secrets: dict[Path_, str] = field(default_factory=dict)  # interpolated: path -> template
    diagnostics: list[Diagnostic] = field(default_factory=list)
    failed: set[Path_] = field(default_factory=set)  # values already reported (no cascades)
    # (the text or how to read it again, env) while only containers have positions
    source: tuple[str | Callable[[], str | None], Mapping[str, str]] | None = None

    def full(self) -> _Document:
        """Make every value's and key's position known (reads the text again, once)."""
        if self.source is not None:
            held, env = self.source
            self.source = None
            text = held() if callable(held) else held
            if text is None:
                return self  # the file changed since: only the positions still known are given
            again = _Document(self.file, None)
            try:
                _Builder(again, env, full=True).run(_parser(text))
            except (_Abort, yaml.YAMLError, RecursionError, ValueError):
                pass  # the first read stopped at the same place: what was reached is placed
            self.positions.update(again.positions)
            self.key_positions.update(again.key_positions)
        return self

    def release(self) -> None:
        """Drop what only checking and assembling needed once the resources are built (they hold
        their own values): the values, and the positions when the text can give them again (the
        first position asked for reads it again with every position, as for any value's)."""
        self.value = None
        self.plain.clear()
        if self.source is not None:
            self.positions.clear()
            self.key_positions.clear()

    def where(self, path: Path_) -> Location:
        if self.source is not None and path not in self.positions:
            self.full()
        for i in range(len(path), -1, -1):
            position = self.positions.get(path[:i])
            if position:
                return Location(self.file, *position)
        return Location(self.file, 1, 1)

    def key_where(self, path: Path_) -> Location | None:
        position = self.full().key_positions.get(path)
        return Location(self.file, *position) if position else None

    def error(self, path: Path_, message: str, *, key: bool = False) -> None:
        self.failed.add(path)
        loc = (self.key_where(path) if key else None) or self.where(path)
        self.diagnostics.append(Diagnostic(loc.file, loc.line, loc.col, message, dotted(path)))


def dotted(path: Iterable[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_MERGE = object()  # the `<<` merge key
_NO_KEY = object()  # `_scalar`: the path is complete
_SKIP = object()  # a key that was reported as an error: its value is read and dropped


class _Frame:
    """An open mapping or sequence while events are read (a plain class with slots: one is made
    for every container of the file)."""

    __slots__ = ("anchor", "first_seen", "key", "merged", "path", "start_count", "value")

    def __init__(self, value: dict[str, Any] | list[Any], path: Path_, anchor: str | None, start_count: int) -> None:
        self.value = value
        self.path = path
        self.anchor = anchor
        self.start_count = start_count
        self.key: Any = None  # mappings: the pending key (None: a key is expected next)
        self.first_seen: dict[str, Any] = {}  # key: its start mark (0-based line and column)
        self.merged: dict[str, Any] | None = None  # what `<<` merge keys brought, once there is one


class _Builder:
    """Builds plain values straight from parser events, recording positions (all 1-based).

    Working on events rather than composed nodes keeps the C parser's speed (node composition and
    tag resolution in Python cost 7x more); keys are always text, so only plain scalar *values* are
    resolved. Aliases are shared, never copied, and their expansion is counted and bounded.
    """

    _constructor = yaml.constructor.SafeConstructor()
    _resolver = yaml.resolver.Resolver()

    def __init__(self, doc: _Document, env: Mapping[str, str], *, full: bool = True) -> None:
        self.doc = doc
        self.env = env
        self.full = full  # False: positions of containers only (see `_Document.full`)
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.count = 0
        self.expanded = 0
        self._tags: dict[str, str] = {}  # a plain scalar's text: its implicit tag

    def loc(self, mark: Any) -> Location:
        return Location(self.doc.file, mark.line + 1, mark.column + 1)

    def run(self, parser: Any) -> Any:
        stack: list[_Frame] = []
        root: Any = None
        documents = 0
        scalar_event, mapping_start, sequence_start = yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent
        collection_end = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
        while True:
            event = parser.get_event()
            kind = type(event)
            if kind is scalar_event:
                if not stack:
                    root = self._scalar(event, (), _NO_KEY)
                    continue
                top = stack[-1]
                container = top.value
                if type(container) is dict:
                    key = top.key
                    if key is None:  # a key: text, never resolved
                        text = event.value
                        if self.full or text == "<<" or text in top.first_seen:
                            self._place(top, text, event, is_key_scalar=True)
                        else:  # the hot path of `_place`: a new key, positions of containers only
                            top.first_seen[text] = event.start_mark
                            top.key = text
                        if event.anchor:
                            self.anchors[event.anchor] = (event.value, 1)
                        continue
                    if key is not _MERGE and key is not _SKIP and not event.anchor:  # the hot path
                        container[key] = self._scalar(event, top.path, key)
                        top.key = None
                        continue
                value = self._scalar(event, self._child_path(stack), _NO_KEY)
                if event.anchor:
                    self.anchors[event.anchor] = (value, 1)
                self._place(top, value, event, is_key_scalar=False)
            elif kind is mapping_start or kind is sequence_start:
                path = self._child_path(stack)
                if len(path) > MAX_DEPTH:
                    raise _Abort(self.loc(event.start_mark), f"the document is nested more than {MAX_DEPTH} levels deep")
                if stack and type(stack[-1].value) is dict and stack[-1].key is None:
                    self.doc.error(stack[-1].path, "mapping keys must be plain strings")
                    path = (*stack[-1].path, "?")
                else:
                    mark = event.start_mark
                    self.doc.positions[path] = (mark.line + 1, mark.column + 1)
                self.count += 1
                if event.anchor:
                    self.open_anchors.add(event.anchor)
                stack.append(_Frame({} if kind is mapping_start else [], path, event.anchor, self.count))
            elif kind in collection_end:
                frame = stack.pop()
                if frame.merged and type(frame.value) is dict:
                    for key, merged in frame.merged.items():
                        frame.value.setdefault(key, merged)
                if frame.anchor:
                    self.open_anchors.discard(frame.anchor)
                    self.anchors[frame.anchor] = (frame.value, self.count - frame.start_count)
                if not stack:
                    root = frame.value
                    continue
                parent = stack[-1]
                pkey = parent.key
                if type(parent.value) is list:
                    parent.value.append(frame.value)
                elif pkey is not None and pkey is not _MERGE and pkey is not _SKIP:  # the hot path of `_place`
                    parent.value[pkey] = frame.value
                    parent.key = None
                else:
                    self._place(parent, frame.value, event, is_key_scalar=False)
            elif kind is yaml.AliasEvent:
                path = self._child_path(stack)
                value = self._alias(event)
                if stack:
                    self._place(stack[-1], value, event, is_key_scalar=False)
                else:
                    root = value
            elif kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise _Abort(self.loc(event.start_mark), "the file holds more than one YAML document (---); use one document per file")
            elif event is None or kind is yaml.StreamEndEvent:
                return root

    def _child_path(self, stack: list[_Frame]) -> Path_:
        if not stack:
            return ()
        top = stack[-1]
        if isinstance(top.value, list):
            return (*top.path, len(top.value))
        if top.key is None or top.key is _MERGE or top.key is _SKIP:
            return top.path
        return (*top.path, top.key)

    def _place(self, top: _Frame, value: Any, event: Any, *, is_key_scalar: bool) -> None:
        """Put a finished key or value into the open container `top`."""
        if isinstance(top.value, list):
            top.value.append(value)
            return
        if top.key is None:
            if not is_key_scalar:
                top.key = _SKIP
                return
            if value == "<<" and not event.style:
                top.key = _MERGE
                return
            mark = event.start_mark
            key_position = (mark.line + 1, mark.column + 1)
            if value in top.first_seen:
                first = top.first_seen[value]
                prev = (first.line + 1, first.column + 1)
                self.doc.diagnostics.append(
                    Diagnostic(
                        self.doc.file,
                        key_position[0],
                        key_position[1],
                        f"duplicate key '{value}' (first defined at line {prev[0]}, column {prev[1]})",
                        dotted((*top.path, value)),
                    )
                )
                top.key = _SKIP
                return
            top.first_seen[value] = mark
            if self.full:
                key_path = (*top.path, value)
                self.doc.key_positions[key_path] = key_position
            top.key = value
            return
        if top.key is _MERGE:
            if top.merged is None:
                top.merged = {}
            for source in value if isinstance(value, list) else [value]:
                if isinstance(source, dict):
                    for k, v in source.items():
                        top.merged.setdefault(k, v)
        elif top.key is not _SKIP:
            top.value[top.key] = value
        top.key = None

    def _alias(self, event: Any) -> Any:
        name = event.anchor
        if name in self.open_anchors:
            raise _Abort(self.loc(event.start_mark), "a recursive alias refers to itself; YAML anchors must not contain their own alias")
        if name not in self.anchors:
            raise _Abort(self.loc(event.start_mark), f"the alias *{name} has no anchor &{name} before it")
        value, size = self.anchors[name]
        self.expanded += size
        self.count += size  # an anchor around this alias grows by what it expands to
        if self.expanded > MAX_ALIAS_EXPANSION:
            raise _Abort(
                self.loc(event.start_mark),
                f"aliases expand to more than {MAX_ALIAS_EXPANSION} values; refusing a document that grows when expanded",
            )
        return value

    def _implicit_tag(self, text: str) -> str:
        """The tag of a plain scalar: `Resolver.resolve`, without its call when no implicit resolver
        starts with the text's first character (most text: `Sales line`, `sip.example.com`)."""
        resolvers = self._resolver.yaml_implicit_resolvers
        if text and text[0] not in resolvers and None not in resolvers and not self._resolver.yaml_path_resolvers:
            return str(self._resolver.DEFAULT_SCALAR_TAG)
        return str(self._resolver.resolve(yaml.ScalarNode, text, (True, False)))  # type: ignore[no-untyped-call]

    def _scalar(self, event: Any, base: Path_, key: Any) -> Any:
        """The value of a scalar at `base` (+ `key` unless `_NO_KEY`; the path is built only when needed)."""
        self.count += 1
        if self.full:
            path = base if key is _NO_KEY else (*base, key)
            mark = event.start_mark
            self.doc.positions[path] = (mark.line + 1, mark.column + 1)
        tag = event.tag
        plain = not event.style
        if tag is None or tag == "!":
            text: str = event.value
            if not plain:
                if "$" not in text:
                    return text
                return interpolate(self.doc, self.env, text, base if key is _NO_KEY else (*base, key))
            tag = self._tags.get(text)
            if tag is None:
                tag = self._implicit_tag(text)
                if len(self._tags) < _TAGS_KEPT:
                    self._tags[text] = tag
            if tag == _STR_TAG and "$" not in text:  # most plain values: no path to build
                return text
        path = base if key is _NO_KEY else (*base, key)
        if tag == _STR_TAG:
            return interpolate(self.doc, self.env, event.value, path) if "$" in event.value else event.value
        construct = self._constructor.yaml_constructors.get(tag)
        if construct is None:
            raise _Abort(self.loc(event.start_mark), f"unsupported YAML tag {tag}")
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            value = construct(self._constructor, node)
        except Exception as exc:  # noqa: BLE001 - any constructor failure is a user error here
            raise _Abort(self.loc(event.start_mark), f"cannot read this value: {clip(str(exc).splitlines()[0], 120)}") from None
        if plain and not isinstance(value, str):
            self.doc.plain[path] = event.value
        if isinstance(value, (datetime.date, datetime.datetime, bytes)):
            self.doc.error(path, f"'{event.value}' was read as a date or binary value; quote it to keep it as text: \"{event.value}\"")
            return str(event.value)
        if isinstance(value, float) and value != value:  # NaN
            return str(event.value)
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise _Abort(self.loc(event.start_mark), f"unsupported YAML value of type {type(value).__name__}")
        return value


class _Abort(Exception):
    def __init__(self, location: Location, message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message


def _read_file(path: Path, env: Mapping[str, str]) -> _Document:
    name = str(path)
    doc = _Document(name, None)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        doc.diagnostics.append(Diagnostic(name, 1, 1, f"the file is not UTF-8 text (byte {exc.start})"))
        return doc
    except OSError as exc:
        doc.diagnostics.append(Diagnostic(name, 1, 1, f"cannot read the file: {exc.strerror}"))
        return doc
    doc = parse_text(text, name, env, full=False)
    doc.text_digest = hashlib.sha256(text.encode()).hexdigest()
    if doc.source is not None:  # not held (megabytes at account scale): read again if ever needed
        doc.source = (functools.partial(_same_text, path, doc.text_digest), env)
    return doc


def _same_text(path: Path, digest: str) -> str | None:
    """The file's text again if it is still what was read (positions must match the values)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if hashlib.sha256(text.encode()).hexdigest() == digest else None


def _parser(text: str) -> Any:
    return _CYAML.CParser(text) if _C_PARSER else yaml.SafeLoader(text)


def parse_text(text: str, name: str, env: Mapping[str, str], *, full: bool = True) -> _Document:
    """Parse one YAML text into a `_Document` (values, positions, diagnostics). Never raises.

    `full=False` records the positions of containers only; the rest are read when first asked for."""
    doc = _Document(name, None)
    if not full:
        doc.source = (text, env)
    builder = _Builder(doc, env, full=full)
    try:
        doc.value = builder.run(_parser(text))
    except _Abort as abort:
        doc.diagnostics.append(Diagnostic(abort.location.file, abort.location.line, abort.location.col, abort.message))
        doc.value = None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        hint = " (a tab cannot indent YAML; use spaces)" if "\t" in problem or "tab" in problem else ""
        doc.diagnostics.append(Diagnostic(name, line, col, f"invalid YAML: {problem}{hint}"))
        return doc
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        doc.diagnostics.append(
            Diagnostic(name, 1, 1, f"invalid YAML: {clip(str(exc).splitlines()[0], 160) if str(exc) else type(exc).__name__}")
        )
    return doc
