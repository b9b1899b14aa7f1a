"""Stream records out of a CSV (header row) or JSON Lines file, one at a time, with line numbers.

The file's lines come from ``topslot.imports.lines`` (encoding, bad lines, limits). A record that
cannot be read at all (a bad line, a CSV field over the limit, JSON that ``loads_bounded`` refuses:
not valid, too deep, NaN, a NUL ...) is a ``Record`` with ``error`` set; the next record is read as usual.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from topslot.imports.limits import MAX_FIELD_CHARS, MAX_JSON_DEPTH, MAX_JSON_DIGITS
from topslot.imports.lines import BadLine, csv_problem, open_lines, resolve_encoding
from topslot.json_depth import BadJson, loads_bounded

FileFormat = Literal["csv", "jsonl"]
_EXTENSIONS: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SNIFF_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Record:
    """One input row: its fields by normalised name, where it starts, and where each field sits."""

    line: int
    fields: dict[str, Any]
    columns: dict[str, int] = field(default_factory=dict)  # field name → 1-based column (CSV)
    error: str | None = None  # the row could not be read at all
    typed: bool = False  # values carry their own types (JSON); CSV values are all text

    def column(self, name: str) -> int:
        return self.columns.get(name, 1)


def normalise_key(name: str) -> str:
    """``"First Name"`` → ``first_name``."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def detect_format(path: Path, encoding: str = "utf-8-sig") -> FileFormat:
    """By extension (.csv, .jsonl, .ndjson), else by the first non-blank character."""
    by_ext = _EXTENSIONS.get(path.suffix.lower())
    if by_ext:
        return by_ext
    with path.open("rb") as f:
        head = f.read(_SNIFF_BYTES).decode(encoding, errors="replace")
    return "jsonl" if head.lstrip().lstrip("\ufeff").startswith("{") else "csv"


def read_records(path: Path, encoding: str | None = None) -> Iterator[Record]:
    """Every data row of ``path``, streamed (the file is never loaded whole).

    ``encoding`` as for ``resolve_encoding``: raises ``ValueError`` (unknown name) or
    ``InvalidInput`` (the file is not UTF-8) before the first record.
    """
    codec = resolve_encoding(path, encoding)
    fmt = detect_format(path, codec)
    with open_lines(path, codec) as lines:
        yield from (_read_jsonl(lines) if fmt == "jsonl" else _read_csv(lines))


# ---------------------------------------------------------------- CSV


class _CsvState:
    """What ``csv.reader`` does not keep about the record it is reading: the first bad line among
    its lines (fed to the reader as an empty line, so that the record is reported instead of
    parsed) and its lines holding a quote (which alone can change whether it is inside quotes)."""

    __slots__ = ("bad", "quoting")

    def __init__(self) -> None:
        self.bad: str | None = None
        self.quoting: list[str] = []

    def next_record(self) -> str | None:
        """The bad line's message of the record just read (or None); forgets it for the next one."""
        bad, self.bad = self.bad, None
        if self.quoting:
            self.quoting = []
        return bad


def _csv_feed(lines: Iterable[str | BadLine], state: _CsvState) -> Iterator[str]:
    for item in lines:
        if isinstance(item, BadLine):
            state.bad = state.bad or item.message
            yield "\n"
        else:
            if '"' in item:
                state.quoting.append(item)
            yield item


def _skip_quoted_rest(feed: Iterator[str], state: _CsvState) -> int:
    """After an error inside a quoted field, read on to the end of its record, so that the rest of
    the field is not taken for new rows; how many lines were read."""
    quoted = False
    for text in state.quoting:
        quoted = _quoted_at_end(text, quoted)
    skipped = 0
    while quoted:
        following = next(feed, None)
        if following is None:
            break
        text = following
        skipped += 1
        quoted = _quoted_at_end(text, quoted)
    return skipped


_IN_QUOTES = re.compile(r'[^"]*(?:""[^"]*)*')  # the inside of a quoted CSV field, up to its closing quote
_UNQUOTED = re.compile(r"[^,]*")


def _quoted_at_end(line: str, quoted: bool) -> bool:
    """Whether a CSV line ends inside a quoted field, given whether it started inside one."""
    pos, end = 0, len(line)
    while True:
        if quoted:
            pos = _IN_QUOTES.match(line, pos).end()  # type: ignore[union-attr]
            if pos >= end:
                return True
            quoted = False
            pos += 1  # the closing quote; text after it up to the delimiter belongs to the field
        elif pos < end and line[pos] == '"':
            quoted = True
            pos += 1
            continue
        pos = _UNQUOTED.match(line, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            return False
        pos += 1  # the delimiter


def _read_csv(lines: Iterable[str | BadLine]) -> Iterator[Record]:
    state = _CsvState()
    feed = _csv_feed(lines, state)
    reader = csv.reader(feed)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        _skip_quoted_rest(feed, state)
        yield Record(1, {}, {}, f"the header row cannot be read: {csv_problem(exc)}")
        return
    bad = state.next_record()
    if header is None:
        return
    if bad:
        yield Record(1, {}, {}, f"the header row cannot be read: {bad}")
        return
    names = [normalise_key(h) for h in header]
    columns = {name: i + 1 for i, name in enumerate(names) if name}
    skipped = 0  # lines read past the reader (the rest of a bad quoted field)
    start = reader.line_num + 1
    while True:
        try:
            for values in reader:
                line, start = start, reader.line_num + skipped + 1
                if state.bad or state.quoting:
                    bad = state.next_record()
                    if bad:
                        yield Record(line, {}, columns, bad)
                        continue
                if not values or all(not v.strip() for v in values):
                    continue
                if len(values) > len(names):
                    yield Record(line, {}, columns, f"{len(values)} fields but the header has {len(names)}")
                    continue
                yield Record(line, {name: v for name, v in zip(names, values, strict=False) if name}, columns)
            return
        except csv.Error as exc:
            skipped += _skip_quoted_rest(feed, state)
            line, start = start, reader.line_num + skipped + 1
            yield Record(line, {}, columns, state.next_record() or csv_problem(exc))


# ---------------------------------------------------------------- JSON Lines


def _read_jsonl(lines: Iterable[str | BadLine]) -> Iterator[Record]:
    for line_no, text in enumerate(lines, start=1):
        if isinstance(text, BadLine):
            yield Record(line_no, {}, {}, text.message)
            continue
        if not text.strip():
            continue
        try:
            value = loads_bounded(
                text, max_depth=MAX_JSON_DEPTH, max_text_chars=MAX_FIELD_CHARS, max_int_digits=MAX_JSON_DIGITS
            )
        except BadJson as exc:
            yield Record(line_no, {}, {}, str(exc))
            continue
        if not isinstance(value, dict):
            yield Record(line_no, {}, {}, "each line must be a JSON object")
            continue
        yield Record(line_no, {normalise_key(k): v for k, v in value.items()}, typed=True)
