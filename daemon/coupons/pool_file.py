"""Reading a coupon pool file, pure apart from iterating its lines: one code per line, or a CSV
with a ``code`` column. Every code is validated; blank lines and ``#`` comments (plain format) are
skipped. Streams: the file is never held in memory.

The lines come from ``topslot.imports.lines`` (``open_pool_file``): the same encodings, limits and
``BadLine`` s as the other imports; each bad line is one problem and the next line is read.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from topslot.errors import Problem
from topslot.imports.lines import BadLine, csv_problem

POOL_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MIN_CODE_LENGTH, MAX_CODE_LENGTH = 3, 64
POOL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
GENERATED_POOL_PREFIX = "gen:"


@dataclass(frozen=True, slots=True)
class PoolLine:
    line: int
    code: str


def check_pool_name(pool: str) -> str | None:
    """Why ``pool`` cannot name an imported pool, or None."""
    if not POOL_NAME_RE.match(pool):
        return f"pool name '{pool}' must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
    return None


def check_code(code: str) -> str | None:
    """Why ``code`` cannot be a pool code, or None."""
    if not MIN_CODE_LENGTH <= len(code) <= MAX_CODE_LENGTH:
        return f"code '{code[:80]}' must be {MIN_CODE_LENGTH}-{MAX_CODE_LENGTH} characters long, not {len(code)}"
    if not POOL_CODE_RE.match(code):
        bad = next((c for c in code if not (c.isascii() and (c.isalnum() or c in "_-"))), code[0])
        if not bad.isprintable():  # never echo a control character to the terminal
            what = "a NUL character" if bad == "\x00" else f"the control character U+{ord(bad):04X}"
            return f"the code has {what}: use letters A-Z, digits, '-' and '_'"
        return f"code '{code}' has '{bad}': use letters A-Z, digits, '-' and '_' (starting with a letter or digit)"
    return None


def read_pool_lines(lines: Iterable[str | BadLine], path: str) -> Iterator[PoolLine | Problem]:
    """Every code of a pool file with its line number, or a ``Problem`` for a bad line.

    ``lines``: one item per physical line, its text or a ``BadLine`` (``topslot.imports.lines.open_lines``).
    The format is decided by the first non-blank line: a header with a ``code`` column (any
    case, commas or semicolons) makes it CSV; anything else is one code per line.
    """
    numbered = enumerate(lines, start=1)
    for number, text in numbered:
        if isinstance(text, BadLine):
            yield Problem(path, number, 1, text.message)
            continue
        stripped = text.strip().lstrip("\ufeff")
        if not stripped or stripped.startswith("#"):
            continue
        delimiter = ";" if ";" in stripped and "," not in stripped else ","
        header = _csv_row(stripped, delimiter)
        if isinstance(header, str):
            yield Problem(path, number, 1, header)
            continue
        header = [h.strip().lower() for h in header]
        if "code" in header:
            yield from _csv_codes(numbered, header.index("code") + 1, delimiter, path)
            return
        if len(header) > 1:
            yield Problem(path, number, 1, "a CSV pool file needs a 'code' column in its header row")
            return
        yield _checked(path, number, 1, stripped)
        break
    for number, text in numbered:
        if isinstance(text, BadLine):
            yield Problem(path, number, 1, text.message)
            continue
        stripped = text.strip()
        if stripped and not stripped.startswith("#"):
            yield _checked(path, number, 1, stripped)


def _csv_codes(
    numbered: Iterator[tuple[int, str | BadLine]], column: int, delimiter: str, path: str
) -> Iterator[PoolLine | Problem]:
    for number, text in numbered:
        if isinstance(text, BadLine):
            yield Problem(path, number, 1, text.message)
            continue
        if not text.strip():
            continue
        row = _csv_row(text, delimiter)
        if isinstance(row, str):
            yield Problem(path, number, 1, row)
        elif len(row) < column:
            yield Problem(path, number, 1, f"no value in the 'code' column (column {column})")
        else:
            yield _checked(path, number, column, row[column - 1].strip())


def _csv_row(text: str, delimiter: str) -> list[str] | str:
    """The fields of one CSV line, or why it cannot be read (a field over the limit)."""
    try:
        return next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error as exc:
        return csv_problem(exc)


def _checked(path: str, line: int, column: int, code: str) -> PoolLine | Problem:
    why = check_code(code)
    return Problem(path, line, column, why) if why else PoolLine(line, code)
