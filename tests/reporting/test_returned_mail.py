"""Bounces and complaints in the report (SQLite and PostgreSQL): counts, rates over the email
handed over, the warnings above 0.1 % complaints and 2 % hard bounces, and ``--by domain``."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from reporting.seed import CAMPAIGN, COSTS, NAME, T0, WINDOW, seed
from topslot.reporting.data import ReportQuery, build_report
from topslot.reporting.model import ReturnedMail
from topslot.reporting.records import group_record
from topslot.store.schema import contacts, events

# email handed over in the seed: d1 (delivered), d2 (sent), d4 (bounced), d5 (sent)
FEEDBACK = [
    (4, "bounce", "hard_bounce"),
    (2, "bounce", "soft_bounce"),
    (2, "bounce", "soft_bounce"),
    (5, "complaint", "complaint"),
]


async def _seeded(engine: AsyncEngine) -> None:
    await seed(engine)
    async with engine.begin() as conn:
        await conn.execute(
            insert(events),
            [{"delivery_id": d, "campaign_id": CAMPAIGN, "kind": kind, "label": label, "reason": label,
              "occurred_at": T0 + timedelta(hours=1), "method": "MAIL"} for d, kind, label in FEEDBACK],
        )  # fmt: skip
        await conn.execute(update(contacts).where(contacts.c.id == 5).values(email="C5@QQ.example"))


async def test_counts_rates_and_warnings(engine: AsyncEngine) -> None:
    await _seeded(engine)
    report = await build_report(engine, ReportQuery(CAMPAIGN, "channel", window=WINDOW, costs=COSTS), T0, name=NAME)
    assert report.total.returned == ReturnedMail(email_sent=4, hard_bounces=1, soft_bounces=1, blocked=0, complaints=1)
    email, sms = report.groups
    assert email.returned == report.total.returned and sms.returned == ReturnedMail()
    record = group_record(report.total)
    assert (record["hard_bounce_rate"], record["soft_bounce_rate"], record["complaint_rate"]) == (
        Decimal("0.2500"), Decimal("0.2500"), Decimal("0.2500"),
    )  # fmt: skip
    assert group_record(sms)["complaint_rate"] is None  # nothing handed over by mail: no rate
    assert report.notes == [
        "the campaign: spam complaints are 25.00 % of the email handed over (1 of 4), above 0.1 %: mailbox "
        "providers filter such senders (Gmail and Yahoo block at 0.3 %)",
        "the campaign: hard bounces are 25.00 % of the email handed over (1 of 4), above 2 %: the list holds "
        "dead addresses (they are suppressed now)",
        "channel email: spam complaints are 25.00 % of the email handed over (1 of 4), above 0.1 %: mailbox "
        "providers filter such senders (Gmail and Yahoo block at 0.3 %)",
        "channel email: hard bounces are 25.00 % of the email handed over (1 of 4), above 2 %: the list holds "
        "dead addresses (they are suppressed now)",
    ]


async def test_by_recipient_domain(engine: AsyncEngine) -> None:
    await _seeded(engine)
    report = await build_report(engine, ReportQuery(CAMPAIGN, "domain", window=WINDOW, costs=COSTS), T0, name=NAME)
    groups = {g.key: g for g in report.groups}
    assert set(groups) == {"example.com", "qq.example"}  # lower-cased
    assert groups["qq.example"].returned == ReturnedMail(email_sent=1, complaints=1)
    assert groups["example.com"].returned == ReturnedMail(email_sent=3, hard_bounces=1, soft_bounces=1)
    assert groups["qq.example"].deliveries.sent == 1
