"""The physical lines of an imported file: decoded, bounded and checked, one at a time.

Every import command reads its file through here, so the rules are the same for all of them:

- **Encoding**: ``--encoding NAME`` if given, else what a byte-order mark says (UTF-8, UTF-16,
  UTF-32), else UTF-8. A file that is clearly not UTF-8 (its first line, or most of its first
  lines, do not decode) is refused as a whole with ONE problem that names the option.
- **Bad lines**: a line that does not decode, holds a NUL character or is longer than
  ``MAX_LINE_CHARS`` comes out as a ``BadLine`` in its place (line numbers stay right), and the
  next line is read as usual.
- **Streaming**: at most one line, itself bounded, is held in memory.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TextIO

from topslot.errors import InvalidInput, Problem
from topslot.imports.limits import MAX_FIELD_CHARS, MAX_LINE_CHARS, SNIFF_BYTES, SNIFF_LINES

# An undecodable byte sequence is read as this lone surrogate, which no codec ever decodes valid
# input to; a line holding one is a bad line. (Raising instead would lose the stream's position.)
UNDECODABLE = "\ud800"
_ERRORS = "topslot.mark_undecodable"
_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_EXAMPLES = "utf-8, gb18030, utf-16 or cp1252"
_HIGH_RUN = re.compile(rb"[\x80-\xff]+")

# The csv module's field limit is process-wide: pinned here so that every import has the documented one.
csv.field_size_limit(MAX_FIELD_CHARS)


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if isinstance(exc, UnicodeDecodeError):
        return UNDECODABLE, exc.end
    raise exc


codecs.register_error(_ERRORS, _mark_undecodable)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A physical line that cannot be used, in place of its text; ``message`` says why."""

    message: str


# ---------------------------------------------------------------- the encoding


def codec_name(name: str) -> str:
    """The codec for an ``--encoding`` value; ``ValueError`` if Python has no such text encoding.
    UTF-8 is read as ``utf-8-sig`` (a byte-order mark is skipped)."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise ValueError(f"unknown encoding {name!r}; use a name such as {_EXAMPLES}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ValueError(f"{name!r} is not a text encoding; use a name such as {_EXAMPLES}")
    return "utf-8-sig" if info.name == "utf-8" else info.name


def encoding_label(codec: str) -> str:
    """``utf-8-sig`` → ``UTF-8``, ``gb18030`` → ``GB18030`` (for messages)."""
    return "UTF-8" if codec in ("utf-8", "utf-8-sig") else codec.upper()


def resolve_encoding(path: Path, requested: str | None = None) -> str:
    """The codec to read ``path`` with: ``requested``, else the byte-order mark's, else UTF-8.

    Raises ``ValueError`` for an unknown ``requested`` name, and ``InvalidInput`` (one problem
    naming ``--encoding``) when, without ``requested``, the file is clearly not UTF-8.
    """
    if requested:
        return codec_name(requested)
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    line = _first_line_not_utf8(head, complete=len(head) < SNIFF_BYTES)
    if line is None:
        return "utf-8-sig"
    guess = _guess(head)
    if guess:
        message = f"the file is not UTF-8 (it looks like {guess[0]}); re-run with --encoding {guess[1]}"
    else:
        message = f"the file is not UTF-8; re-run with --encoding NAME (such as {_EXAMPLES})"
    raise InvalidInput([Problem(str(path), line, 1, message)])


def _first_line_not_utf8(head: bytes, *, complete: bool) -> int | None:
    """The first undecodable line if the start of a file shows it is not UTF-8, else None.

    Not UTF-8: UTF-16 without a byte-order mark, or the first non-blank line
    does not decode, or most of the first ``SNIFF_LINES`` non-blank lines do not. One bad line
    among good ones is a bad row, not a wrong encoding.
    """
    if _utf16_without_bom(head):
        return 1
    chunks = head.split(b"\n")
    cut = not complete  # the last chunk may end inside a character
    if cut and len(chunks) > 1:
        chunks.pop()
        cut = False
    numbered = [(n, chunk) for n, chunk in enumerate(chunks[:SNIFF_LINES], 1) if chunk.strip()]
    bad = [n for n, chunk in numbered if not _decodes(chunk, final=not cut)]
    if not bad:
        return None
    if bad[0] == numbered[0][0] or 2 * len(bad) > len(numbered):
        return bad[0]
    return None


def _utf16_without_bom(head: bytes) -> str | None:
    """``utf-16-le`` / ``utf-16-be`` if ``head`` looks like UTF-16 without a byte-order mark: NUL
    bytes (the high byte of ASCII characters) on at least a quarter of one byte parity and
    hardly any on the other (a run of NULs in a UTF-8 file has them on both: a bad line)."""
    odd, even = head[1::2].count(0), head[0::2].count(0)
    most, least = max(odd, even), min(odd, even)
    if most * 8 <= len(head) or least * 10 > most:
        return None
    return "utf-16-le" if odd > even else "utf-16-be"


def _decodes(chunk: bytes, *, final: bool) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(chunk, final)
    except UnicodeDecodeError:
        return False
    return True


def _guess(head: bytes) -> tuple[str, str] | None:
    """(label, codec) of what a non-UTF-8 start of file probably is, or None."""
    utf16 = _utf16_without_bom(head)
    if utf16:
        return "UTF-16 without a byte-order mark", utf16
    head = head[: head.rfind(b"\n") + 1] or head
    runs = _HIGH_RUN.findall(head)
    paired = sum(len(r) for r in runs if len(r) > 1)  # CJK encodings: bytes >= 0x80 come in pairs
    candidates = [("gb18030", "GB18030")] if 2 * paired >= sum(map(len, runs)) else []
    for codec, label in [*candidates, ("cp1252", "Windows-1252")]:
        try:
            head.decode(codec)
        except UnicodeDecodeError:
            continue
        return label, codec
    return None


# ---------------------------------------------------------------- lines


class TextLines:
    """The physical lines of a decoded text stream: each its text (line end included) or a
    ``BadLine``. One item per physical line, so ``enumerate(lines, 1)`` numbers them."""

    def __init__(self, stream: TextIO, codec: str):
        self._stream = stream
        self._not_decoded = (
            f"the line is not valid {encoding_label(codec)}; if the file is in another encoding, "
            "re-run with --encoding NAME"
        )

    def __iter__(self) -> Iterator[str | BadLine]:
        size = MAX_LINE_CHARS + 2  # the longest line, with "\r\n"
        read = partial(self._stream.readline, size)
        first = read()
        texts = chain([first.removeprefix("\ufeff")], iter(read, "")) if first else iter(())
        pending_lf = False  # the last line was cut by the size limit right after a "\r"
        for text in texts:
            if len(text) <= MAX_LINE_CHARS and not pending_lf and UNDECODABLE not in text and "\x00" not in text:
                yield text  # the fast path: every check in one line
                continue
            if pending_lf and text == "\n":  # the "\n" of that "\r\n"
                pending_lf = False
                continue
            pending_lf = len(text) == size and text.endswith("\r")
            if len(text) == size and not text.endswith(("\n", "\r")):
                pending_lf = self._skip_rest()
                yield BadLine(f"the line is longer than {MAX_LINE_CHARS:,} characters")
            elif len(text.rstrip("\r\n")) > MAX_LINE_CHARS:
                yield BadLine(f"the line is longer than {MAX_LINE_CHARS:,} characters")
            elif UNDECODABLE in text:
                yield BadLine(self._not_decoded)
            elif "\x00" in text:
                yield BadLine("the line contains a NUL character")
            else:
                yield text

    def _skip_rest(self) -> bool:
        """Read past the end of an over-long line, a bounded chunk at a time; whether it ended with "\r"."""
        for chunk in iter(partial(self._stream.readline, MAX_LINE_CHARS), ""):
            if chunk.endswith("\n"):
                return False
            if chunk.endswith("\r"):
                return True
        return False


@contextmanager
def open_lines(path: Path, encoding: str | None = None) -> Iterator[TextLines]:
    """The lines of ``path`` (see ``TextLines``), decoded as ``resolve_encoding`` decides."""
    codec = resolve_encoding(path, encoding)
    with path.open("r", encoding=codec, errors=_ERRORS, newline="") as stream:
        yield TextLines(stream, codec)


def csv_problem(exc: csv.Error) -> str:
    """What a ``csv.Error`` means for the person who wrote the file."""
    if "field larger than field limit" in str(exc):
        return f"a field is longer than {MAX_FIELD_CHARS:,} characters"
    return f"not valid CSV: {exc}"
