"""Stream records out of a CSV (header row) or JSON Lines file, one at a time, with line numbers."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

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


def detect_format(path: Path) -> FileFormat:
    """By extension (.csv, .jsonl, .ndjson), else by the first non-blank character."""
    by_ext = _EXTENSIONS.get(path.suffix.lower())
    if by_ext:
        return by_ext
    with path.open("r", encoding="utf-8-sig", errors="replace") as f:
        head = f.read(_SNIFF_BYTES).lstrip()
    return "jsonl" if head.startswith("{") else "csv"


def read_records(path: Path) -> Iterator[Record]:
    """Every data row of ``path``, streamed (the file is never loaded whole)."""
    fmt = detect_format(path)
    yield from (_read_jsonl(path) if fmt == "jsonl" else _read_csv(path))


def _read_csv(path: Path) -> Iterator[Record]:
    with path.open("r", encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        names = [normalise_key(h) for h in header]
        columns = {name: i + 1 for i, name in enumerate(names) if name}
        start = reader.line_num + 1
        for values in reader:
            line, start = start, reader.line_num + 1
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) > len(names):
                yield Record(line, {}, columns, f"{len(values)} fields but the header has {len(names)}")
                continue
            fields = {name: value for name, value in zip(names, values, strict=False) if name}
            yield Record(line, fields, columns)


def _read_jsonl(path: Path) -> Iterator[Record]:
    with path.open("r", encoding="utf-8-sig") as f:
        for line_no, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                yield Record(line_no, {}, {}, f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(value, dict):
                yield Record(line_no, {}, {}, "each line must be a JSON object")
                continue
            yield Record(line_no, {normalise_key(k): v for k, v in value.items()}, typed=True)
