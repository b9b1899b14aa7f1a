"""A small population where every audience condition has a provable answer (see test_segments.py).

``NOW`` is 2027-05-06 12:00 UTC, so "today" for ages is 2027-05-06.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.store.contacts import import_contacts
from topslot.store.events import import_events
from topslot.store.schema import suppressions

NOW = datetime(2027, 5, 6, 12, 0, tzinfo=UTC)

PEOPLE: list[dict[str, Any]] = [
    {"external_id": "c01", "first_name": "Ann", "gender": "female", "birth_date": "1990-05-06", "country": "US",
     "email": "Ann@Example.com", "phone": "+1 202 555 0101", "tags": ["vip"], "consent_email": "yes",
     "consent_sms": "no", "consent_im": "yes", "im_telegram": "ann_tg",
     "loyalty": 5, "tier": "gold", "vip": True, "score": 4.5, "zip": "0123"},
    {"external_id": "c02", "first_name": "Bea", "gender": "F", "birth_date": "1997-05-06", "country": "CN",
     "email": "bea@example.net", "phone": "138 0013 8000", "tags": "staff", "consent_email": "granted",
     "consent_sms": "1", "consent_im": "no", "im_wechat": "bea_wx", "loyalty": 2, "tier": "silver"},
    {"external_id": "c03", "first_name": "Cat", "gender": "Woman", "birth_date": "1997-05-07", "country": "GB",
     "email": "cat@example.com", "consent_email": "no", "tier": "Gold Plus", "loyalty": "5"},
    {"external_id": "c04", "first_name": "Dan", "gender": "male", "age": 45, "country": "DE",
     "email": "dan@example.com", "phone": "+49 30 901820", "tags": "VIP;newsletter", "consent_email": "true",
     "consent_sms": "yes", "consent_im": "yes", "im_wechat": "dan_wx", "loyalty": 10, "vip": False},
    {"external_id": "c05", "first_name": "Eve", "gender": "f", "birth_date": "1976-05-07", "country": "FR",
     "phone": "01 23 45 67 89", "consent_sms": "yes", "score": 3},
    {"external_id": "c06", "first_name": "Fay", "gender": "female", "birth_date": "1976-05-06", "country": "JP",
     "email": "fay@example.com", "consent_email": "yes"},
    {"external_id": "c07", "first_name": "Gus", "country": "AU", "email": "gus@example.com"},
    {"external_id": "c08", "first_name": "Hal", "gender": "other", "age": 30, "country": "NZ",
     "tags": ["newsletter"], "nickname": "1500"},
    {"external_id": "c09", "first_name": "Ivy", "gender": "female", "birth_date": "2000-02-29", "country": "IN",
     "nickname": "50% Ivy"},
]  # fmt: skip

EVENTS = [
    "type,contact,order_id,sku,category,amount,currency,time,term",
    "purchase,c01,o1,LIP-1,cosmetics,50.00,USD,2026-06-01T10:00:00Z,",
    "purchase,c02,o2,LIP-1,cosmetics,20.00,CNY,2025-01-01T10:00:00+08:00,",
    "purchase,c03,o3,LIP-2,Cosmetics,20.00,GBP,2027-01-01T10:00:00Z,",
    "purchase,c03,o4,SKIN-1,skincare,200.00,GBP,2027-02-01T10:00:00Z,",
    "purchase,c04,o5,DRESS-9,womens-apparel,80.00,EUR,2027-04-01T10:00:00Z,",
    "purchase,c05,o6,LIP-1,cosmetics,10.00,EUR,2027-03-01T10:00:00Z,",
    "purchase,c05,o7,LIP-3,cosmetics,15.00,EUR,2027-04-01T10:00:00Z,",
    "purchase,c06,o8,LIP-1,cosmetics,30.00,JPY,2026-05-07T00:00:00Z,",
    "search,c01,,,,,,2027-04-30T08:00:00Z,Mother's Day gift",
    "search,c04,,,,,,2027-05-01T08:00:00Z,LIPSTICK 50%_off",
    "search,c07,,,,,,2025-01-01T08:00:00Z,lipstick",
    "search,c08,,,,,,2027-05-01T08:00:00Z,1500 things",
]

SUPPRESSED = [("email", "ann@example.com"), ("sms", "+8613800138000"), ("sms", "+4930901820")]


async def load_population(engine: AsyncEngine, tmp_path: Path) -> None:
    people = tmp_path / "people.jsonl"
    people.write_text("\n".join(json.dumps(p) for p in PEOPLE) + "\n", encoding="utf-8")
    report = await import_contacts(engine, people, now=NOW, default_country="US")
    assert report.problems == [] and report.imported == len(PEOPLE)
    events = tmp_path / "events.csv"
    events.write_text("\n".join(EVENTS) + "\n", encoding="utf-8")
    report = await import_events(engine, events)
    assert report.problems == [] and report.imported == len(EVENTS) - 1
    async with engine.begin() as conn:
        await conn.execute(
            insert(suppressions),
            [{"channel": c, "address": a, "reason": "test", "created_at": NOW} for c, a in SUPPRESSED],
        )


def campaign(audience: dict[str, Any], channels: list[str] | None = None, im_provider: str | None = None) -> Campaign:
    im: dict[str, Any] = {"body": "im.txt.j2"}
    if im_provider:
        im["provider"] = im_provider
    return Campaign.model_validate(
        {
            "id": "seg-test",
            "name": "Segment test",
            "channels": channels or ["email"],
            "audience": audience,
            "schedule": {"start": "2027-05-06", "end": "2027-05-09"},
            "landing_page": {"url": "https://shop.example.com/"},
            "content": {
                "email": {"from": "Shop <news@shop.example.com>", "subject": "Hi", "html": "e.html.j2"},
                "sms": {"body": "sms.txt.j2"},
                "im": im,
            },
        }
    )
