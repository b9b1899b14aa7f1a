"""Outboxes: senders that write messages to files instead of a provider (the demo's transports, and
a way to look at exactly what would have been sent).

- ``MaildirOutbox``: one ``.eml`` file per email in ``<outbox_dir>/new/`` (Maildir's atomic
  delivery: write and fsync in ``tmp/``, then link into ``new/``). The file is named from the
  delivery id (``42.eml``); a second send of the same delivery never overwrites the first, it lands
  beside it as ``42.2.eml`` — duplicates stay visible. The envelope is recorded the way a local
  delivery agent does it, as ``Return-Path:`` and ``Delivered-To:`` lines on top.
- ``JsonlTextOutbox``: one JSON line per SMS/IM in ``<outbox_dir>/sms.jsonl`` (or ``im.jsonl``;
  an IM line also has its ``card``: title, link, button, coupon, and a WhatsApp ``template``),
  appended with a single ``O_APPEND`` write, so concurrent senders never interleave lines.

Both are ``Messenger``s with ``provider = "outbox"`` (``topslot.channel.OUTBOX_PROVIDER``): the ledger and
the report label what they took as outbox writes, not paid sends. They are the registry's fallback for a
channel whose provider is not configured.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from topslot.channel import OUTBOX_PROVIDER, Channel
from topslot.channels.base import EmailEnvelope, Message, TextMessage, handing_over
from topslot.channels.registry import Provider
from topslot.clock import Clock, SystemClock
from topslot.durable import fsync_directory
from topslot.errors import TransientSendError
from topslot.settings import Settings

_tmp_names = itertools.count(1)


def _header_value(value: str) -> str:
    return value.replace("\r", "").replace("\n", "")


class MaildirOutbox:
    """A ``Messenger`` for email that delivers into a Maildir."""

    channel: Channel = "email"
    provider = OUTBOX_PROVIDER
    rate_per_second: float | None = None
    drops_repeats = False

    def __init__(self, directory: Path, *, fsync: bool = True):
        self.directory = Path(directory)
        self.fsync = fsync
        self._ready = False
        self._closed = False

    async def send(self, message: Message) -> str:
        if self._closed:
            raise TransientSendError("outbox is closed", code="closed")
        if not isinstance(message, EmailEnvelope):
            raise TypeError("the Maildir outbox takes emails")
        await handing_over()
        try:
            return await asyncio.to_thread(self._deliver, message)
        except OSError as exc:
            raise TransientSendError(f"outbox write failed: {exc}", code="outbox") from exc

    async def close(self) -> None:
        self._closed = True

    def path_of(self, provider_id: str) -> Path:
        """Where the message with this provider id (its file name) lies."""
        return self.directory / "new" / provider_id

    def _deliver(self, message: EmailEnvelope) -> str:
        if not self._ready:
            for sub in ("tmp", "new", "cur"):
                (self.directory / sub).mkdir(parents=True, exist_ok=True)
            self._ready = True
        envelope = (
            f"Return-Path: <{_header_value(message.mail_from)}>\r\nDelivered-To: {_header_value(message.rcpt_to)}\r\n"
        ).encode()
        tmp = self.directory / "tmp" / f"{message.delivery_id}.{os.getpid()}.{next(_tmp_names)}.eml"
        try:
            with open(tmp, "wb") as file:
                file.write(envelope)
                file.write(message.data)
                if self.fsync:
                    file.flush()
                    os.fsync(file.fileno())
            name = self._link_new(tmp, message.delivery_id)
        finally:
            tmp.unlink(missing_ok=True)
        if self.fsync:
            fsync_directory(self.directory / "new")
        return name

    def _link_new(self, tmp: Path, delivery_id: int) -> str:
        for attempt in itertools.count(1):
            name = f"{delivery_id}.eml" if attempt == 1 else f"{delivery_id}.{attempt}.eml"
            try:
                os.link(tmp, self.directory / "new" / name)  # atomic, and never replaces
            except FileExistsError:
                continue
            return name
        raise AssertionError("unreachable")


class JsonlTextOutbox:
    """A ``Messenger`` for SMS or IM that appends one JSON object per message to a ``.jsonl`` file."""

    provider = OUTBOX_PROVIDER
    rate_per_second: float | None = None
    drops_repeats = False

    def __init__(self, path: Path, *, channel: Channel = "sms", clock: Clock | None = None):
        self.path = Path(path)
        self.channel: Channel = channel
        self._clock = clock or SystemClock()
        self._fd: int | None = None
        self._closed = False

    async def send(self, message: Message) -> str:
        if self._closed:
            raise TransientSendError("outbox is closed", code="closed")
        if not isinstance(message, TextMessage):
            raise TypeError("the text outbox takes SMS and IM messages")
        record: dict[str, Any] = {
            "delivery_id": message.delivery_id,
            "channel": self.channel,
            "to": message.to,
            "body": message.body,
            "written_at": self._clock.now().isoformat().replace("+00:00", "Z"),
        }
        if message.card is not None:  # an IM card: what the button would open
            record["card"] = asdict(message.card)
        if message.template is not None:  # a WhatsApp template: what would be sent instead of the body
            record["template"] = {"sid": message.template.sid, "variables": dict(message.template.variables)}
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        await handing_over()
        try:
            self._append(line)
        except OSError as exc:
            raise TransientSendError(f"outbox write failed: {exc}", code="outbox") from exc
        return f"{self.path.name}:{message.delivery_id}"

    async def close(self) -> None:
        self._closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view) :]


def _outbox_dir(settings: Settings) -> Path:
    assert settings.outbox_dir is not None  # resolved by Settings
    return settings.outbox_dir


MAILDIR = Provider(
    "email", OUTBOX_PROVIDER, configured=lambda s: True, rate=lambda s: None,
    build=lambda s, clock, limits: MaildirOutbox(_outbox_dir(s)),
)  # fmt: skip
SMS_FILE = Provider(
    "sms", OUTBOX_PROVIDER, configured=lambda s: True, rate=lambda s: None,
    build=lambda s, clock, limits: JsonlTextOutbox(_outbox_dir(s) / "sms.jsonl", channel="sms", clock=clock),
)  # fmt: skip
IM_FILE = Provider(
    "im", OUTBOX_PROVIDER, configured=lambda s: True, rate=lambda s: None,
    build=lambda s, clock, limits: JsonlTextOutbox(_outbox_dir(s) / "im.jsonl", channel="im", clock=clock),
)  # fmt: skip
