"""What the multi-channel end-to-end tests share (test_end_to_end_sms.py, test_end_to_end_im.py): their
contacts imported from a CSV, the second campaign (a day later, one channel), the ledger read back by
(contact, channel), the fake Twilio's settings, and the check of the SMTP inbox."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from channels.fake_twilio import FakeTwilio
from dispatch.fixtures import NOW, campaign
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.store.contacts import import_contacts
from topslot.store.schema import contacts, deliveries

DUE2 = datetime(2027, 5, 7, 7, 30, tzinfo=UTC)  # the second campaign's slot, a day later


async def import_people(
    engine: AsyncEngine, tmp_path: Path, header: list[str], rows: Iterable[list[str]]
) -> dict[str, int]:
    """``rows`` under ``header`` as people.csv, imported (every row must import); external id → contact id."""
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    report = await import_contacts(engine, path, now=NOW)
    assert report.ok, report.problems
    async with engine.connect() as conn:
        return {r.external_id: r.id for r in await conn.execute(select(contacts.c.external_id, contacts.c.id))}


def second_campaign(channel: str, content: dict[str, Any]) -> Campaign:
    """"fathers-day": ``channel`` only (``content``), to everyone with its consent, at ``DUE2``, its own coupons."""
    return campaign(
        id="fathers-day",
        channels=[channel],
        audience={"all": [{"consent": channel}]},
        schedule={
            "start": DUE2.date(),
            "end": DUE2.date(),
            "slots": ["07:30"],
            "timezone": "UTC",
            "days": "every_day",
            "missed_slot": {"grace": "15m", "then": "skip"},
        },  # fmt: skip
        coupon={"generate": {"prefix": "FD", "length": 10}},
        content={channel: content},
    )


async def ledger_rows(engine: AsyncEngine, campaign_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(contact name, channel) → the delivery row of ``campaign_id``."""
    query = (
        select(deliveries, contacts.c.external_id)
        .join(contacts, contacts.c.id == deliveries.c.contact_id)
        .where(deliveries.c.campaign_id == campaign_id)
    )
    async with engine.connect() as conn:
        return {(r["external_id"], r["channel"]): dict(r) for r in (await conn.execute(query)).mappings()}


async def select_all(engine: AsyncEngine, query: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(query)).mappings()]


def twilio_settings(fake: FakeTwilio) -> dict[str, Any]:
    """``twilio:`` settings for the fake Twilio: its account, token and number, no rate limit to speak of."""
    return {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": fake.phone_number,
        "base_url": fake.url,
        "rate_per_second": 10_000.0,
        "timeout_seconds": 5.0,
    }


def assert_each_email_once(received: list[bytes], rows: dict[tuple[str, str], dict[str, Any]], to: list[str]) -> None:
    """The SMTP inbox holds exactly one email to each address of ``to``, each with the coupon of the
    email row of its contact (named by the address's local part)."""
    mails = [message_from_bytes(raw, policy=policy.default) for raw in received]
    assert sorted(m["To"].addresses[0].addr_spec for m in mails) == sorted(to)
    for m in mails:
        name = m["To"].addresses[0].addr_spec.split("@")[0]
        assert rows[(name, "email")]["coupon_code"] in m.get_body(("plain",)).get_content()
