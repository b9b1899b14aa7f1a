"""A small email campaign against a real (scripted) SMTP server, for dispatcher tests."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.settings import Settings
from topslot.store.contacts import import_contacts
from topslot.store.schema import contacts, deliveries

NOW = datetime(2027, 5, 5, 12, 0, tzinfo=UTC)  # the campaign's single slot is 2027-05-06 07:30 UTC
DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)

HTML = """<html><head><style>p { color: #333; }</style></head><body>
<p>Hello {{ contact.first_name }},</p>
<p>Your code: <b>{{ coupon }}</b></p>
<p><a href="https://shop.example.com/offer">See the offer</a> or <a href="{{ landing_url }}">shop now</a>.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
<p>Example Shop, 1 Example Road, Springfield</p>
</body></html>
"""
TEXT = """Hello {{ contact.first_name }},
Your code: {{ coupon }}
Shop now: {{ landing_url }}
Unsubscribe: {{ unsubscribe_url }}
Example Shop, 1 Example Road, Springfield
"""


def write_templates(root: Path) -> Path:
    (root / "t").mkdir(parents=True, exist_ok=True)
    (root / "t" / "mail.html.j2").write_text(HTML, encoding="utf-8")
    (root / "t" / "mail.txt.j2").write_text(TEXT, encoding="utf-8")
    return root


def campaign(**overrides: Any) -> Campaign:
    data: dict[str, Any] = {
        "id": "dispatch-test",
        "name": "Dispatch test",
        "channels": ["email"],
        "audience": {"all": [{"consent": "email"}]},
        "schedule": {
            "start": date(2027, 5, 6),
            "end": date(2027, 5, 6),
            "slots": ["07:30"],
            "timezone": "UTC",
            "days": "every_day",
            "missed_slot": {"grace": "15m", "then": "skip"},
        },
        "coupon": {"generate": {"prefix": "TS", "length": 10}},
        "landing_page": {"url": "https://shop.example.com/landing?x=1", "utm": {"source": "topslot"}},
        "content": {
            "email": {
                "from": "Example Shop <news@shop.example.com>",
                "subject": "An offer for {{ contact.first_name }}",
                "html": "t/mail.html.j2",
                "text": "t/mail.txt.j2",
            }
        },
    }
    data.update(overrides)
    return Campaign.model_validate(data)


def settings(tmp_path: Path, smtp_port: int | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "config_dir": tmp_path,
        "templates_dir": write_templates(tmp_path / "templates"),
        "var_dir": tmp_path / "var",
        "default_timezone": "UTC",
        "default_country": "US",
        "tracking_base_url": "http://127.0.0.1:8080",
        "compliance": {"postal_address": "1 Example Road, Springfield", "sender_identity": "Example Shop"},
        "quiet_hours": {"sms": None, "im": None},  # these tests send at any hour; tests/test_pacing.py has the rules
    }
    if smtp_port is not None:
        values["smtp"] = {
            "local": {"host": "127.0.0.1", "port": smtp_port, "tls": "none", "pool_size": 4, "rate_per_second": 10_000}
        }
    values.update(overrides)
    return Settings(**values)


async def import_people(engine: AsyncEngine, tmp_path: Path, emails: list[str]) -> dict[str, int]:
    """Contacts with email consent, one per address; returns email → contact id."""
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["external_id", "email", "first_name", "country", "timezone", "consent_email"])
        for i, email in enumerate(emails):
            writer.writerow([f"p{i}", email, f"Name{i}", "US", "UTC", "yes"])
    report = await import_contacts(engine, path, now=NOW)
    assert report.ok, report.problems
    async with engine.connect() as conn:
        return {r.email: r.id for r in await conn.execute(select(contacts.c.email, contacts.c.id))}


async def ledger_by_email(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    query = select(deliveries, contacts.c.email).join(contacts, contacts.c.id == deliveries.c.contact_id)
    async with engine.connect() as conn:
        return {r["email"]: dict(r) for r in (await conn.execute(query)).mappings()}
