"""File outboxes: Maildir delivery of .eml files and JSON lines for SMS/IM."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from topslot.channels.base import Card, ContentTemplate, EmailEnvelope, TextMessage
from topslot.channels.outbox import JsonlTextOutbox, MaildirOutbox
from topslot.clock import FakeClock

DATA = "From: shop@shop.example\r\nTo: ann@a.example\r\nSubject: 母亲节\r\n\r\nHi\r\n".encode()


async def test_each_message_becomes_one_eml_named_by_delivery_id(tmp_path: Path) -> None:
    outbox = MaildirOutbox(tmp_path / "outbox")
    names = await asyncio.gather(
        *(outbox.send(EmailEnvelope(i, "shop@shop.example", f"u{i}@a.example", DATA)) for i in range(1, 21))
    )
    await outbox.close()
    assert sorted(names) == sorted(f"{i}.eml" for i in range(1, 21))
    assert sorted(p.name for p in (tmp_path / "outbox" / "new").iterdir()) == sorted(names)
    assert list((tmp_path / "outbox" / "tmp").iterdir()) == []  # nothing half-written left behind
    content = outbox.path_of("7.eml").read_bytes()
    assert content == b"Return-Path: <shop@shop.example>\r\nDelivered-To: u7@a.example\r\n" + DATA


async def test_a_second_send_of_a_delivery_never_overwrites_the_first(tmp_path: Path) -> None:
    outbox = MaildirOutbox(tmp_path, fsync=False)
    first = await outbox.send(EmailEnvelope(42, "s@x.example", "a@a.example", b"one\r\n"))
    second = await outbox.send(EmailEnvelope(42, "s@x.example", "a@a.example", b"two\r\n"))
    assert (first, second) == ("42.eml", "42.2.eml")
    assert outbox.path_of(first).read_bytes().endswith(b"one\r\n")


async def test_envelope_addresses_cannot_inject_headers(tmp_path: Path) -> None:
    outbox = MaildirOutbox(tmp_path, fsync=False)
    name = await outbox.send(EmailEnvelope(1, "s@x.example\r\nBcc: evil@x.example", "a@a.example", b"x\r\n"))
    first_lines = outbox.path_of(name).read_bytes().split(b"\r\n")[:3]
    assert first_lines == [b"Return-Path: <s@x.exampleBcc: evil@x.example>", b"Delivered-To: a@a.example", b"x"]


async def test_text_outbox_appends_one_json_line_per_message(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 5, 10, 9, 0, tzinfo=UTC))
    outbox = JsonlTextOutbox(tmp_path / "outbox" / "sms.jsonl", clock=clock)
    ids = await asyncio.gather(*(outbox.send(TextMessage(i, f"+1415555{i:04d}", f"母亲节 {i}")) for i in range(50)))
    await outbox.close()
    await outbox.close()
    lines = (tmp_path / "outbox" / "sms.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 50 and ids[3] == "sms.jsonl:3"
    assert records[3] == {
        "delivery_id": 3,
        "channel": "sms",
        "to": "+14155550003",
        "body": "母亲节 3",
        "written_at": "2026-05-10T09:00:00Z",
    }


async def test_an_im_line_shows_its_card_and_template(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 5, 10, 9, 0, tzinfo=UTC))
    outbox = JsonlTextOutbox(tmp_path / "im.jsonl", channel="im", clock=clock)
    card = Card("Mother's Day", "https://t.example/c/abc", "Shop now", "MOM-7Q2K")
    template = ContentTemplate("HX" + "0" * 32, {"1": "Ada", "2": "MOM-7Q2K"})
    await outbox.send(TextMessage(9, "whatsapp:+14155550009", "Hi Ada", card, template, "mothers-day"))
    await outbox.send(TextMessage(10, "tg:1001", "Hi Bob"))  # no card: no card key
    await outbox.close()

    first, second = (json.loads(line) for line in (tmp_path / "im.jsonl").read_text(encoding="utf-8").splitlines())
    assert first["card"] == {
        "title": "Mother's Day",
        "link": "https://t.example/c/abc",
        "button": "Shop now",
        "coupon": "MOM-7Q2K",
    }
    assert first["template"] == {"sid": "HX" + "0" * 32, "variables": {"1": "Ada", "2": "MOM-7Q2K"}}
    assert (first["channel"], first["to"], first["body"]) == ("im", "whatsapp:+14155550009", "Hi Ada")
    assert "card" not in second and "template" not in second
