"""A tiny population and campaign for ledger, plan-run and scheduler tests."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.settings import Settings
from topslot.store.contacts import import_contacts
from topslot.store.schema import deliveries, suppressions

# Wednesday 2027-05-05 00:00 UTC: every slot of the campaign below is still ahead.
NOW = datetime(2027, 5, 5, 0, 0, tzinfo=UTC)

PEOPLE = [
    # external_id, email, gender, timezone, country, consent_email
    ("shanghai", "sh@example.com", "female", "Asia/Shanghai", "CN", "yes"),
    ("london", "ld@example.com", "female", "Europe/London", "GB", "yes"),
    ("newyork", "ny@example.com", "female", "America/New_York", "US", "yes"),
    ("newyork2", "ny2@example.com", "female", "America/New_York", "US", "yes"),
    ("man", "man@example.com", "male", "Europe/London", "GB", "yes"),
    ("noconsent", "nc@example.com", "female", "Europe/London", "GB", "no"),
]


def campaign(**schedule: Any) -> Campaign:
    base: dict[str, Any] = {
        "start": date(2027, 5, 6),
        "end": date(2027, 5, 7),
        "slots": ["07:30"],
        "days": "every_day",
        "per_recipient": "once",
        "fallback_timezone": "UTC",
    }
    base.update(schedule)
    return Campaign.model_validate(
        {
            "id": "ledger-test",
            "name": "Ledger test",
            "channels": ["email"],
            "audience": {"all": [{"attribute": "gender", "equals": "female"}]},
            "schedule": base,
            "landing_page": {"url": "https://shop.example.com/"},
            "content": {"email": {"from": "Shop <news@shop.example.com>", "subject": "Hi", "html": "x.html.j2"}},
        }
    )


def settings(tmp_path: Path) -> Settings:
    return Settings(config_dir=tmp_path, var_dir=tmp_path / "var", default_timezone="UTC", default_country="US")


async def populate(engine: AsyncEngine, tmp_path: Path, people: list[tuple[str, ...]] = PEOPLE) -> dict[str, int]:
    """Import ``people``; returns external_id → contact id."""
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["external_id", "email", "gender", "timezone", "country", "consent_email"])
        writer.writerows(people)
    report = await import_contacts(engine, path, now=NOW)
    assert report.ok, report.problems
    from topslot.store.schema import contacts

    async with engine.connect() as conn:
        return {row.external_id: row.id for row in await conn.execute(select(contacts.c.external_id, contacts.c.id))}


async def suppress(engine: AsyncEngine, address: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(suppressions).values(channel="email", address=address, reason="unsubscribed", created_at=NOW)
        )


async def rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(select(deliveries).order_by(deliveries.c.contact_id, deliveries.c.due_utc))
        return [dict(r) for r in result.mappings()]
