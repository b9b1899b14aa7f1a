"""Fast multipart/alternative assembly: the invariant header block is built once per campaign and
each message splices in its own headers and bodies (CRLF, lines ≤ 998; 7bit, 8bit, quoted-printable
or base64).

Non-ASCII text goes as ``8bit`` (RFC 6152) when its lines fit in 998 octets, so no per-message
quoted-printable encoding: every SMTP server topslot is likely to meet advertises 8BITMIME. The
SMTP pool re-encodes a message with ``seven_bit`` (quoted-printable or base64, exactly what the
assembler builds with ``eight_bit=False``) on a connection whose server does not advertise it.

About 50× faster than ``email.message.EmailMessage`` (see bench/render_mime.py). Every header value
is cleaned of CR, LF and other control characters before it is written, so contact data can never
start a new header.
"""

from __future__ import annotations

import binascii
import re
import zlib
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parseaddr
from typing import Protocol

_CONTROLS = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_ATOM_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')
_ADDR_SPEC = re.compile(r"^[^\s<>()\[\]\\,;:\"@]+@[^\s<>()\[\]\\,;:\"@]+$")
_URI_BAD = re.compile(r"[\x00-\x20<>\x7f]")
_WORD_BYTES = 45  # 45 bytes → 60 base64 chars: "=?utf-8?b?" + 60 + "?=" = 72 ≤ 75 (RFC 2047)
_FOLD_AT = 76
_LONGEST_LINE = 998  # RFC 5322, without the CRLF
_B64_LINE = 76
_LONGEST_WORD = 900  # an ASCII word longer than this cannot be folded: encode it instead


class HeaderValueError(ValueError):
    """An address that cannot be put in a header safely."""


class RenderedParts(Protocol):
    @property
    def subject(self) -> str: ...

    @property
    def html(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def headers(self) -> tuple[tuple[str, str], ...]: ...


def clean(value: str) -> str:
    """A header value on one line: control characters (CR, LF, tab, NUL, ...) become one space."""
    return _CONTROLS.sub(" ", value).strip()


def encode_words(value: str, used: int = 0) -> str:
    """RFC 2047 "B" encoded-words for non-ASCII text, folded so each line stays short.

    ``used``: characters already on the first line (the header name and ": ")."""
    data = value.encode("utf-8")
    size = len(data)
    words: list[str] = []
    start = 0
    while start < size:  # each word: as many whole characters as fit in _WORD_BYTES
        end = start + _WORD_BYTES
        if end < size:
            while data[end] & 0xC0 == 0x80:  # not on a continuation byte: a character stays whole
                end -= 1
        words.append(_word(data[start:end]))
        start = end
    return "\r\n ".join(words)


def _word(chunk: bytes | bytearray) -> str:
    return "=?utf-8?b?" + binascii.b2a_base64(bytes(chunk), newline=False).decode("ascii") + "?="


def fold_ascii(value: str, used: int) -> str:
    """Fold an ASCII value at spaces so lines stay near 78 characters (unfolding gives it back)."""
    if used + len(value) <= _FOLD_AT:
        return value
    lines: list[str] = []
    line = ""
    width = _FOLD_AT - used
    for word in value.split(" "):
        candidate = f"{line} {word}" if line else word
        if len(candidate) > width and line:
            lines.append(line)
            line, width = word, _FOLD_AT - 1
        else:
            line = candidate
    lines.append(line)
    return "\r\n ".join(lines)


def header_text(name: str, value: str) -> str:
    """An unstructured header value (Subject): cleaned, encoded when not ASCII, folded."""
    value = clean(value)
    used = len(name) + 2
    if value.isascii() and "=?" not in value and max(map(len, value.split(" ")), default=0) < _LONGEST_WORD:
        return fold_ascii(value, used)
    return encode_words(value, used)


def display_name(name: str) -> str:
    """A display name as a phrase: plain atoms, a quoted string, or encoded-words."""
    name = clean(name)
    if not name:
        return ""
    if not name.isascii() or "=?" in name:
        return encode_words(name)
    if _ATOM_SPECIALS.search(name):
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def address(addr: str, name: str | None = None) -> str:
    """``Name <addr>`` (or just ``addr``); HeaderValueError when addr is not a plain addr-spec."""
    addr = addr.strip()
    if not _ADDR_SPEC.match(addr) or not addr.isascii() or _CONTROLS.search(addr):
        raise HeaderValueError("not a plain e-mail address (or one with control characters or spaces)")
    phrase = display_name(name or "")
    return f"{phrase} <{addr}>" if phrase else addr


def list_unsubscribe(https_url: str, mailto: str | None = None) -> str:
    """The List-Unsubscribe value: ``<https://...>, <mailto:...>`` (RFC 2369 / RFC 8058)."""
    uris = [https_url] + ([mailto] if mailto else [])
    for uri in uris:
        if _URI_BAD.search(uri):
            raise HeaderValueError("an unsubscribe URI contains spaces, control characters or angle brackets")
    return ", ".join(f"<{uri}>" for uri in uris)


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


EIGHT_BIT = True
"""Whether ``MimeAssembler`` sends non-ASCII text as 8bit by default (benches set it to 0 to compare)."""


def encode_body(text: str, eight_bit: bool = False, short_lines: bool = False) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding, encoded body with CRLF lines): 7bit for ASCII text whose lines
    fit in 998 octets; with ``eight_bit``, 8bit for any other text whose lines fit in 998 octets and
    that holds no NUL; else base64 when most characters are multi-byte (CJK text is shorter so),
    else quoted-printable (lines ≤ 76). ``short_lines``: the caller knows that every line fits in
    998 octets (they are not measured)."""
    text = _lf(text)
    data = text.encode("utf-8")
    ascii_ = len(data) == len(text)
    if (ascii_ or eight_bit) and (short_lines or max(map(len, data.split(b"\n"))) <= _LONGEST_LINE):
        if ascii_:
            return b"7bit", data.replace(b"\n", b"\r\n") + b"\r\n"  # this CRLF belongs to the boundary
        if b"\x00" not in data:
            return b"8bit", data.replace(b"\n", b"\r\n") + b"\r\n"
    if len(data) - len(text) > len(text) // 3:
        encoded = binascii.b2a_base64(data, newline=False)
        lines = [encoded[i : i + _B64_LINE] for i in range(0, len(encoded), _B64_LINE)]
        return b"base64", b"\r\n".join(lines) + b"\r\n"
    return b"quoted-printable", quoted_printable(data) + b"\r\n"


def _part(text: str, eight_bit: bool, boundary: bytes, short_lines: bool) -> tuple[bytes, bytes]:
    """``encode_body``, quoted-printable when unencoded text would hold the boundary (it cannot
    then: quoted-printable writes "=" as "=3D")."""
    cte, body = encode_body(text, eight_bit, short_lines)
    if boundary in body and cte in (b"7bit", b"8bit"):
        return b"quoted-printable", quoted_printable(_lf(text).encode("utf-8")) + b"\r\n"
    return cte, body


_QP_LINES: dict[bytes, bytes] = {}
_QP_LINES_MAX = 4096


def quoted_printable(data: bytes) -> bytes:
    """``binascii.b2a_qp`` of LF text with CRLF line ends, one line at a time: quoted-printable
    encodes each line on its own, and most lines of a campaign's message are the same in every
    message, so each distinct line is encoded once (b2a_qp costs ~15 ns a byte, a lookup does not)."""
    cache = _QP_LINES
    out = []
    for line in data.split(b"\n"):
        encoded = cache.get(line)
        if encoded is None:
            encoded = binascii.b2a_qp(line, quotetabs=False, istext=True, header=False).replace(b"\n", b"\r\n")
            if len(cache) >= _QP_LINES_MAX:  # personalised lines come and go: start over now and then
                cache.clear()
            cache[line] = encoded
        out.append(encoded)
    return b"\r\n".join(out)


@dataclass(frozen=True, slots=True)
class Sender:
    address: str
    domain: str
    header: str


def parse_sender(from_: str) -> Sender:
    name, addr = parseaddr(clean(from_))
    if "@" not in addr:
        raise HeaderValueError(f"the From address {from_!r} has no @domain")
    return Sender(addr, addr.rpartition("@")[2].lower(), address(addr, name))


class MimeAssembler:
    """Builds one campaign's messages: the invariant headers once, the rest per message."""

    def __init__(self, *, from_: str, campaign_id: str, reply_to: str | None = None, eight_bit: bool | None = None):
        """``eight_bit``: send non-ASCII text parts as 8bit where they allow it (default ``EIGHT_BIT``)."""
        self.eight_bit = bool(EIGHT_BIT if eight_bit is None else eight_bit)
        self.sender = parse_sender(from_)
        self.campaign_id = campaign_id
        self.mail_from = self.sender.address
        lines = [f"From: {self.sender.header}"]
        if reply_to:
            reply_name, reply_addr = parseaddr(clean(reply_to))
            lines.append(f"Reply-To: {address(reply_addr, reply_name)}")
        lines += ["MIME-Version: 1.0", "List-Unsubscribe-Post: List-Unsubscribe=One-Click"]
        self._head = ("\r\n".join(lines) + "\r\n").encode("ascii")
        self._message_id_tail = f".{campaign_id}@{self.sender.domain}>"
        self._boundary_tail = f"_{zlib.crc32(campaign_id.encode()):08x}"
        self._date_cache: tuple[float, bytes] = (-1.0, b"")

    def message_id(self, delivery_id: int) -> str:
        return f"<d{delivery_id}{self._message_id_tail}"

    def _date(self, when: datetime) -> bytes:
        stamp = when.timestamp()
        cached_stamp, cached = self._date_cache
        if int(stamp) != int(cached_stamp):  # one format per second is plenty
            cached = format_datetime(when).encode("ascii")
            self._date_cache = (stamp, cached)
        return cached

    def assemble(
        self, rendered: RenderedParts, *, to: str, to_name: str | None = None, delivery_id: int, date: datetime
    ) -> bytes:
        """The complete message: RFC 5322 bytes with CRLF line endings."""
        # "=_" never occurs in quoted-printable or base64 text; 7bit and 8bit text holding the
        # boundary is sent quoted-printable instead (``_part``), so the boundary cannot clash
        boundary = f"=_ts{delivery_id}{self._boundary_tail}".encode("ascii")
        extra = b"".join(
            f"{clean(name)}: {header_text(name, value)}\r\n".encode("ascii") for name, value in rendered.headers
        )
        short = getattr(rendered, "short_lines", False)  # the renderer knows every line fits
        text_cte, text_body = _part(rendered.text, self.eight_bit, boundary, short)
        html_cte, html_body = _part(rendered.html, self.eight_bit, boundary, short)
        return b"".join(
            (
                self._head,
                b"To: ",
                address(to, to_name).encode("ascii"),
                b"\r\nSubject: ",
                header_text("Subject", rendered.subject).encode("ascii"),
                b"\r\nDate: ",
                self._date(date),
                b"\r\nMessage-ID: ",
                self.message_id(delivery_id).encode("ascii"),
                b"\r\n",
                extra,
                b'Content-Type: multipart/alternative; boundary="',
                boundary,
                b'"\r\n\r\n--',
                boundary,
                b'\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: ',
                text_cte,
                b"\r\n\r\n",
                text_body,
                b"--",
                boundary,
                b'\r\nContent-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: ',
                html_cte,
                b"\r\n\r\n",
                html_body,
                b"--",
                boundary,
                b"--\r\n",
            )
        )


_TOP_BOUNDARY = re.compile(rb'^Content-Type: multipart/alternative; boundary="([^"\r\n]+)"\r\n', re.MULTILINE)
_EIGHT_BIT_CTE = b"\r\nContent-Transfer-Encoding: 8bit"


def seven_bit(data: bytes) -> bytes:
    """A message of ``MimeAssembler`` with its 8bit parts re-encoded as ``encode_body`` does without
    ``eight_bit`` (quoted-printable or base64): for a server that does not advertise 8BITMIME.
    ``seven_bit(assemble(..., eight_bit=True)) == assemble(..., eight_bit=False)``. A message of any
    other shape, or without 8bit parts, is returned as it is.

    The message is cut at its boundary's delimiters (no part body can hold the boundary: see
    ``_part``), and each part at the blank line after its own headers (written by the assembler,
    never contact data), so text in a body is never taken for a header."""
    top = _TOP_BOUNDARY.search(data)
    if top is None or _EIGHT_BIT_CTE not in data:
        return data
    delimiter = b"\r\n--" + top.group(1)
    chunks = data.split(delimiter)
    for i in range(1, len(chunks) - 1):  # the parts: CRLF, headers, blank line, body without its last CRLF
        head, blank, body = chunks[i].partition(b"\r\n\r\n")
        if blank and head.endswith(_EIGHT_BIT_CTE):
            cte, encoded = encode_body(body.replace(b"\r\n", b"\n").decode("utf-8"))
            head = head[: -len(_EIGHT_BIT_CTE)] + b"\r\nContent-Transfer-Encoding: " + cte
            chunks[i] = head + blank + encoded[:-2]  # its last CRLF is the delimiter's
    return delimiter.join(chunks)
