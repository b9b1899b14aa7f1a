"""Suppression rows (pure apart from reading the file): an unsubscribe list from topslot or another tool.

Accepted files:

- CSV with a header row naming the address column: ``address``, ``email`` (``Email Address``,
  ``E-mail``: Mailchimp, listmonk), ``phone`` (``phone_number``, ``mobile``); optional ``channel``
  (email | sms | im) and ``reason`` (a ``SuppressionReason``: ``topslot suppressions export``
  writes both) and ``source``; other columns are ignored;
- a plain list, one address per line and no header (what many tools export);
- JSON Lines with the same keys.

Each address is validated and normalised for its channel: email with email-validator (as contacts
are imported) then lower-cased, phones to E.164 (national numbers read in the default country), IM
as ``provider:id``. The channel is the row's ``channel``, else ``--channel``, else what the column
says (email / phone), else what the address looks like (``@``: email; ``provider:id``: im; else sms).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from topslot.channel import CHANNELS, spec_of
from topslot.delivery import SuppressionReason
from topslot.errors import Problem
from topslot.imports import fields as f
from topslot.imports.lines import BadLine, open_lines, resolve_encoding
from topslot.imports.reader import Record, detect_format, normalise_key, read_records

EMAIL_COLUMNS = ("email", "email_address", "e_mail", "e_mail_address", "emailaddress", "mail")
PHONE_COLUMNS = ("phone", "phone_number", "mobile", "mobile_number", "msisdn", "number")
ADDRESS_COLUMNS = ("address", *EMAIL_COLUMNS, *PHONE_COLUMNS)
_IM_ADDRESS = re.compile(r"^([a-z][a-z0-9_]{0,30}):(\S{1,280})$")
MAX_ADDRESS = 320
MAX_SOURCE = 200
REASONS = tuple(r.value for r in SuppressionReason)


@dataclass(frozen=True, slots=True)
class SuppressionRow:
    line: int
    channel: str
    address: str  # as the suppression list stores it (ChannelSpec.suppression_address)
    reason: str
    source: str | None


def normalise_address(channel: str, value: str, default_country: str | None) -> str:
    """The address as the channel's suppression list stores it, or ``ValueError`` saying why not."""
    value = value.strip()
    if channel == "email":
        clean = f.email(value)
    elif channel == "sms":
        clean = f.phone(value, default_country)
    elif channel == "im":
        match = _IM_ADDRESS.match(value)
        if not match:
            raise ValueError(f"IM address {f.shown(value)!r} is not provider:id (e.g. telegram:12345)")
        clean = value
    else:
        raise ValueError(f"channel {f.shown(value)!r} is not one of {', '.join(CHANNELS)}")
    if len(clean) > MAX_ADDRESS:
        raise ValueError(f"address is longer than {MAX_ADDRESS} characters")
    return spec_of(channel).suppression_address(clean)


def guess_channel(value: str, column: str) -> str:
    if column in EMAIL_COLUMNS:
        return "email"
    if column in PHONE_COLUMNS:
        return "sms"
    value = value.strip()
    if _IM_ADDRESS.match(value) and not value.startswith("+"):
        return "im" if "@" not in value else "email"
    return "email" if "@" in value else "sms"


def parse_suppression(
    record: Record,
    path: str,
    *,
    channel: str | None,
    reason: str,
    source: str | None,
    default_country: str | None,
) -> SuppressionRow | list[Problem]:
    """One suppression row, or the problems of the record."""
    if record.error:
        return [Problem(path, record.line, 1, record.error)]
    raw = record.fields
    column = next((c for c in ADDRESS_COLUMNS if f.text(raw.get(c)) is not None), None)
    if column is None:
        known = next((c for c in ADDRESS_COLUMNS if c in raw or c in record.columns), ADDRESS_COLUMNS[0])
        return [Problem(path, record.line, record.column(known), f"{known} is required")]
    value = raw[column]
    if not isinstance(value, str | int) or isinstance(value, bool):
        return [Problem(path, record.line, record.column(column), f"{column} must be text, not {f.json_type(value)}")]
    value = str(value)
    problems: list[Problem] = []
    row_channel = f.text(raw.get("channel"))
    if row_channel is not None:
        row_channel = row_channel.lower()
        if row_channel not in CHANNELS:
            message = f"channel {f.shown(row_channel)!r} is not one of {', '.join(CHANNELS)}"
            problems.append(Problem(path, record.line, record.column("channel"), message))
    chosen = row_channel or channel or guess_channel(value, column)
    row_reason = f.text(raw.get("reason"))
    if row_reason is not None and row_reason.lower() not in REASONS:
        message = f"reason {f.shown(row_reason)!r} is not one of {', '.join(REASONS)}"
        problems.append(Problem(path, record.line, record.column("reason"), message))
    address = ""
    if not problems:
        try:
            address = normalise_address(chosen, value, default_country)
        except ValueError as exc:
            problems.append(Problem(path, record.line, record.column(column), str(exc)))
    if problems:
        return problems
    row_source = f.text(raw.get("source")) or source
    return SuppressionRow(
        record.line,
        chosen,
        address,
        (row_reason or reason).lower(),
        row_source[:MAX_SOURCE] if row_source else None,
    )


def _is_header(first: str) -> bool:
    """Whether the first line of a CSV file is a header (it names an address column), rather than
    the first address of a plain one-address-per-line list."""
    names = {normalise_key(part) for part in first.split(",")}
    return bool(names & {*ADDRESS_COLUMNS, "channel"})


def _plain_records(path: Path, codec: str) -> Iterator[Record]:
    with open_lines(path, codec) as lines:
        for line_no, text in enumerate(lines, start=1):
            if isinstance(text, BadLine):
                yield Record(line_no, {}, {}, text.message)
            elif text.strip():
                yield Record(line_no, {"address": text.strip().strip('"').strip()})


def suppression_records(path: Path, encoding: str | None = None) -> Iterator[Record]:
    """The records of a suppression file: CSV with a header, a plain list, or JSON Lines."""
    codec = resolve_encoding(path, encoding)
    if detect_format(path, codec) == "csv":
        with open_lines(path, codec) as lines:
            first = next((t for t in lines if isinstance(t, str) and t.strip()), "")
        if first and not _is_header(first):
            yield from _plain_records(path, codec)
            return
    yield from read_records(path, codec)


def suppression_rows(
    path: Path,
    *,
    channel: str | None,
    reason: str,
    source: str | None,
    default_country: str | None,
    encoding: str | None = None,
) -> Iterator[SuppressionRow | list[Problem]]:
    for record in suppression_records(path, encoding):
        yield parse_suppression(
            record, str(path), channel=channel, reason=reason, source=source, default_country=default_country
        )
