"""Safe YAML loading that remembers where every value came from and flags YAML 1.1 traps.

``load_yaml`` composes the node tree with PyYAML's safe loader (the C one when present: it keeps
marks too), then builds the plain Python data itself so that it can record, for every path
(mapping keys and list indices), the 1-based line and column of the value and of its key, the
original text of plain scalars, duplicate keys and the scalars YAML silently turns into something
else (``7:30`` → 450, ``NO`` → False, ``0123`` → 83).

Everything an author controls is bounded before anything is built: the file's size, how deep it
nests, and how much its aliases expand to. A pass over the parser's events (iterative, nothing is
expanded) measures what every anchor stands for, so an alias bomb (nine levels of ten aliases:
10⁹ values) is refused at the alias that crosses the limit, in microseconds and with flat memory.
The limits are far above any honest campaign (the example is ~200 values and ~4 KB).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from topslot.errors import Problem

YamlPath = tuple[Any, ...]
Position = tuple[int, int]

_BaseLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"

MAX_FILE_BYTES = 1024 * 1024
"""A campaign file larger than this is refused unread."""
MAX_VALUES = 100_000
"""Values (scalars, lists, mappings) the file may stand for once every alias is expanded."""
MAX_TEXT_CHARS = 4 * 1024 * 1024
"""Characters of text the file may stand for once every alias is expanded."""
MAX_DEPTH = 64
"""Nesting of lists and mappings."""

_SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
_CLOCK = re.compile(r"^([0-9]{1,2}):([0-5][0-9])$")
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")


class PositionLoader(_BaseLoader):
    """The safe loader; only its composer and scalar constructors are used."""


@dataclass
class YamlDocument:
    """One loaded YAML file: its data plus where each piece of it was written."""

    display_path: str
    data: Any = None
    positions: dict[YamlPath, Position] = field(default_factory=dict)
    key_positions: dict[YamlPath, Position] = field(default_factory=dict)
    plain_text: dict[YamlPath, str] = field(default_factory=dict)
    traps: dict[YamlPath, Problem] = field(default_factory=dict)  # values YAML misread
    key_traps: dict[YamlPath, Problem] = field(default_factory=dict)  # keys YAML misread
    problems: list[Problem] = field(default_factory=list)
    empty: bool = False
    syntax_error: bool = False
    sha256: str | None = None  # of the file's bytes as read (``load_yaml``), for the campaign version
    mtime_ns: int | None = None  # the file's mtime when it was read

    def problem(self, position: Position, message: str) -> Problem:
        return Problem(self.display_path, position[0], position[1], message)

    def position_of(self, path: YamlPath, *, prefer_key: bool = False) -> Position:
        """Where ``path`` was written: its key for collections (or when asked), else its value."""
        if prefer_key and path in self.key_positions:
            return self.key_positions[path]
        value = self.get(path)
        if isinstance(value, dict | list) and path in self.key_positions:
            return self.key_positions[path]
        return self.positions.get(path) or self.key_positions.get(path) or (1, 1)

    def get(self, path: YamlPath, default: Any = None) -> Any:
        node = self.data
        for item in path:
            if isinstance(node, dict) and item in node:
                node = node[item]
            elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
                node = node[item]
            else:
                return default
        return node


def load_yaml(path: Path | str, display_path: str | None = None) -> YamlDocument:
    """Read and safely load a YAML file; problems are collected, never raised."""
    path = Path(path)
    doc = YamlDocument(display_path if display_path is not None else str(path))
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
            mtime_ns = os.fstat(f.fileno()).st_mtime_ns
    except OSError as exc:
        doc.problems.append(doc.problem((1, 1), f"cannot read the file: {exc.strerror or exc}"))
        doc.syntax_error = True
        return doc
    if len(raw) > MAX_FILE_BYTES:
        message = f"the file is larger than {MAX_FILE_BYTES >> 10} KiB, the limit here; is it the right file?"
        doc.problems.append(doc.problem((1, 1), message))
        doc.syntax_error = True
        return doc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        doc.problems.append(doc.problem((line, column), "the file is not UTF-8 text; save it as UTF-8"))
        doc.syntax_error = True
        return doc
    doc = load_yaml_text(text, doc.display_path)
    doc.sha256, doc.mtime_ns = hashlib.sha256(raw).hexdigest(), mtime_ns
    return doc


def load_yaml_text(text: str, display_path: str) -> YamlDocument:
    doc = YamlDocument(display_path)
    loader = PositionLoader(text)
    try:  # bounded first (depth, alias expansion: nothing is built), then composed
        too_big = expansion_problem(text, display_path)
        root = loader.get_single_node() if too_big is None else None
    except yaml.MarkedYAMLError as exc:
        too_big = _syntax_problem(doc, exc)
    except yaml.YAMLError as exc:
        too_big = doc.problem((1, 1), f"YAML error: {exc}")
    finally:
        loader.dispose()
    if too_big is not None:
        doc.problems.append(too_big)
        doc.syntax_error = True
        return doc
    if root is None:
        doc.empty = True
        return doc
    doc.data = _Builder(doc, loader).build(root, ())
    return doc


def expansion_problem(text: str, display_path: str) -> Problem | None:
    """The first way ``text`` would grow past the limits once parsed and its aliases expanded, or None.

    Walks the parser's events once, keeping for every anchor the number of values and characters
    it stands for, so an alias costs one addition whatever it expands to. Raises the parser's own
    ``yaml.YAMLError`` on a syntax error (the caller reports it with its mark)."""
    sizes: dict[str, tuple[int, int]] = {}  # anchor → (values, characters) it stands for
    stack: list[tuple[str | None, int, int]] = []  # open collections: (anchor, values, chars) so far
    values = chars = 0

    def add(n: int, c: int) -> None:
        nonlocal values, chars
        values += n
        chars += c
        if stack:
            anchor, v, k = stack[-1]
            stack[-1] = (anchor, v + n, k + c)

    loader = PositionLoader(text)
    try:
        while (event := loader.get_event()) is not None and not isinstance(event, yaml.StreamEndEvent):
            line, column = (event.start_mark.line + 1, event.start_mark.column + 1) if event.start_mark else (1, 1)
            if isinstance(event, yaml.CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    return Problem(
                        display_path, line, column, f"lists and mappings nest more than {MAX_DEPTH} deep here"
                    )
                add(1, 0)
                stack.append((event.anchor, 1, 0))
            elif isinstance(event, yaml.CollectionEndEvent):
                anchor, v, k = stack.pop()
                if anchor is not None:
                    sizes[anchor] = (v, k)
            elif isinstance(event, yaml.ScalarEvent):
                size = (1, len(event.value))
                if event.anchor is not None:
                    sizes[event.anchor] = size
                add(*size)
            elif isinstance(event, yaml.AliasEvent):
                add(*sizes.get(event.anchor or "", (1, 0)))  # an alias inside its own anchor: the builder reports it
            else:
                continue
            if values > MAX_VALUES or chars > MAX_TEXT_CHARS:
                what = f"{MAX_VALUES:,} values" if values > MAX_VALUES else f"{MAX_TEXT_CHARS >> 20} MiB of text"
                culprit = f"the alias *{event.anchor}" if isinstance(event, yaml.AliasEvent) else "this value"
                return Problem(
                    display_path,
                    line,
                    column,
                    f"{culprit} makes the file stand for more than {what} once aliases are expanded "
                    "(an alias bomb?); refused without expanding it",
                )
    finally:
        loader.dispose()
    return None


def _syntax_problem(doc: YamlDocument, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    position = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = (exc.problem or "invalid YAML").strip()
    message = f"YAML syntax error: {problem}"
    if exc.context and exc.context_mark is not None:
        message += f" ({exc.context.strip()} started at line {exc.context_mark.line + 1})"
    elif exc.context:
        message += f" ({exc.context.strip()})"
    return doc.problem(position, message)


def _start(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Turns a composed node tree into Python data, recording positions and problems."""

    def __init__(self, doc: YamlDocument, loader: Any):
        self.doc = doc
        self.loader = loader
        self.active: set[int] = set()  # node ids on the current branch (recursive aliases)

    def build(self, node: Node, path: YamlPath) -> Any:
        self.doc.positions.setdefault(path, _start(node))
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if id(node) in self.active:
            self.doc.problems.append(self.doc.problem(_start(node), "an alias refers to itself; remove the loop"))
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ_TAG:
                    return self.bad_tag(node, path)
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                if node.tag != _MAP_TAG:
                    return self.bad_tag(node, path)
                return self.mapping(node, path)
        finally:
            self.active.discard(id(node))
        return None

    def bad_tag(self, node: Node, path: YamlPath) -> None:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        problem = self.doc.problem(_start(node), f"the tag '{tag}' is not allowed; only plain YAML is (no ! tags)")
        self.doc.traps[path] = problem
        self.doc.problems.append(problem)
        return None

    def scalar(self, node: ScalarNode, path: YamlPath) -> Any:
        if not node.style:
            self.doc.plain_text[path] = node.value
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError:
            return self.bad_tag(node, path)
        except (ValueError, TypeError, OverflowError) as exc:
            # e.g. 2027-02-30: resolved as a date, then refused by the calendar
            what = "date" if node.tag.endswith(":timestamp") else "value"
            problem = self.doc.problem(_start(node), f"`{node.value}` is not a real {what}: {exc}")
            self.doc.traps[path] = problem
            self.doc.problems.append(problem)
            return node.value
        if not node.style:
            trap = _trap_message(node, value)
            if trap:
                problem = self.doc.problem(_start(node), trap)
                self.doc.traps[path] = problem
                self.doc.problems.append(problem)
        return value

    def mapping(self, node: MappingNode, path: YamlPath) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        pairs = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                # YAML merge keys ("<<: *defaults"): merged first, explicit keys below override
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    merged = self.build(source, path)
                    if isinstance(merged, dict):
                        result.update(merged)
                    else:
                        self.doc.problems.append(self.doc.problem(_start(source), "'<<' must refer to a mapping"))
            else:
                pairs.append((key_node, value_node))
        first_seen: dict[Any, Position] = {}
        for key_node, value_node in pairs:
            key = self.key(key_node, path)
            if key is _UNUSABLE:
                continue
            key_path = (*path, key)
            if key in first_seen:
                self.doc.problems.append(
                    self.doc.problem(
                        _start(key_node),
                        f"duplicate key '{key}' (first defined on line {first_seen[key][0]}); keep only one",
                    )
                )
            else:
                first_seen[key] = _start(key_node)
            self._forget(key_path)  # the later occurrence wins, as in PyYAML
            self.doc.key_positions[key_path] = _start(key_node)
            result[key] = self.build(value_node, key_path)
        return result

    def _forget(self, key_path: YamlPath) -> None:
        n = len(key_path)
        for table in (self.doc.positions, self.doc.key_positions, self.doc.plain_text, self.doc.traps):
            for stale in [p for p in table if len(p) > n and p[:n] == key_path]:
                del table[stale]
        self.doc.positions.pop(key_path, None)
        self.doc.plain_text.pop(key_path, None)
        self.doc.traps.pop(key_path, None)

    def key(self, key_node: Node, path: YamlPath) -> Any:
        if not isinstance(key_node, ScalarNode):
            message = "a key must be plain text, not a list or mapping"
            self.doc.problems.append(self.doc.problem(_start(key_node), message))
            return _UNUSABLE
        key_path_probe = (*path, "\0key")
        key = self.scalar(key_node, key_path_probe)
        self.doc.positions.pop(key_path_probe, None)
        self.doc.plain_text.pop(key_path_probe, None)
        trap = self.doc.traps.pop(key_path_probe, None)
        if trap is not None:
            self.doc.key_traps[(*path, key)] = trap
        return key


_UNUSABLE = object()


def _trap_message(node: ScalarNode, value: Any) -> str | None:
    """Explain a plain scalar that YAML 1.1 reads as something the writer probably did not mean."""
    text = node.value
    if node.tag in (_INT_TAG, _FLOAT_TAG) and ":" in text and _SEXAGESIMAL.match(text):
        clock = _CLOCK.match(text)
        fix = f'"{int(clock.group(1)):02d}:{clock.group(2)}"' if clock else f'"{text}"'
        return f"`{text}` unquoted is read by YAML as the number {value}; write {fix}"
    if node.tag == _INT_TAG and _LEADING_ZERO.match(text):
        return (
            f"`{text}` unquoted is read by YAML as the octal number {value}; "
            f'quote it ("{text}") if you meant text, or drop the leading zero'
        )
    if node.tag == _BOOL_TAG and text not in ("true", "false"):
        word = "true" if value else "false"
        hint = " (e.g. the country code of Norway)" if text.lower() == "no" else ""
        return (
            f"`{text}` unquoted is read by YAML as the boolean {word}; write true or false for a yes/no "
            f'setting, or quote it ("{text}") if you meant text{hint}'
        )
    return None
