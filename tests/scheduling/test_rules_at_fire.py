"""What a bucket decides when it fires, from the ledger and events of that moment: quiet hours
(a late bucket never sends at night) and whether a fallback channel is still needed."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from structlog.testing import capture_logs

from scheduling.ledger_fixtures import NOW, campaign, populate, rows
from topslot.campaign import Campaign
from topslot.clock import FakeClock
from topslot.scheduling.scheduler import BucketScheduler
from topslot.settings import Settings
from topslot.store import ledger
from topslot.store.contacts import import_contacts
from topslot.store.schema import contacts, deliveries, events

NY_EVENING = datetime(2027, 5, 7, 0, 30, tzinfo=UTC)  # 20:30 EDT on 6 May


def quiet_settings(tmp_path: Path, **quiet: Any) -> Settings:
    return Settings(
        config_dir=tmp_path, var_dir=tmp_path / "var", default_timezone="UTC", default_country="US", quiet_hours=quiet
    )


async def test_a_late_bucket_does_not_send_inside_quiet_hours(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    s = quiet_settings(tmp_path, email="21:00-08:00")
    c = campaign(slots=["20:30"], missed_slot={"grace": "1h"})  # 20:30 is outside the window: valid
    claimed: list[int] = []

    async def on_claimed(campaign_, channel, due, batch) -> None:  # noqa: ANN001
        claimed.extend(x.delivery_id for x in batch)

    clock = FakeClock(NOW)
    scheduler = BucketScheduler(engine, s, clock, on_claimed=on_claimed)
    await scheduler.on_campaigns_changed({c.id: c})
    assert NY_EVENING in {b.due_utc for b in await ledger.planned_buckets(engine, c.id)}
    clock.set(NY_EVENING + timedelta(minutes=40))  # the daemon was down: 21:10 in New York, inside the grace
    with capture_logs() as logs:
        assert await scheduler.fire_bucket(c.id, "email", NY_EVENING) == 0
    ny = [r for r in await rows(engine) if r["due_utc"] == NY_EVENING]
    assert len(ny) == 2 and {(r["state"], r["skip_reason"]) for r in ny} == {("skipped", "quiet_hours")}
    assert claimed == []
    assert [e["rows"] for e in logs if e["event"] == "quiet_hours_skipped"] == [2]


async def test_a_late_bucket_on_a_channel_without_quiet_hours_is_sent(engine, tmp_path) -> None:
    # email has none by default: nothing is read for them, nothing skipped, whatever the hour
    await populate(engine, tmp_path)
    c = campaign(slots=["20:30"], missed_slot={"grace": "1h"})
    clock = FakeClock(NOW)
    scheduler = BucketScheduler(engine, quiet_settings(tmp_path), clock)
    await scheduler.on_campaigns_changed({c.id: c})
    clock.set(NY_EVENING + timedelta(minutes=40))  # 21:10 in New York
    with capture_logs() as logs:
        assert await scheduler.fire_bucket(c.id, "email", NY_EVENING) == 2
    assert {r["state"] for r in await rows(engine) if r["due_utc"] == NY_EVENING} == {"claimed"}
    assert not [e for e in logs if e["event"] == "quiet_hours_skipped"]


async def test_an_on_time_bucket_outside_quiet_hours_is_sent(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    s = quiet_settings(tmp_path, email="21:00-08:00")
    c = campaign(slots=["20:30"])
    scheduler = BucketScheduler(engine, s, FakeClock(NOW))
    await scheduler.on_campaigns_changed({c.id: c})
    scheduler.clock.set(NY_EVENING - timedelta(minutes=5))  # type: ignore[attr-defined]
    assert await scheduler.fire_bucket(c.id, "email", NY_EVENING) == 2


# ---------------------------------------------------------------- fallback


async def two_channel_people(engine, tmp_path: Path) -> dict[str, int]:  # noqa: ANN001
    path = tmp_path / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["external_id", "email", "phone", "gender", "timezone", "country", "consent_email", "consent_sms"]
        )
        for name, phone in (("clicked", "+12125550101"), ("machine", "+12125550102"), ("silent", "+12125550103")):
            writer.writerow([name, f"{name}@example.com", phone, "female", "America/New_York", "US", "yes", "yes"])
    report = await import_contacts(engine, path, now=NOW)
    assert report.ok, report.problems
    async with engine.connect() as conn:
        return {r.external_id: r.id for r in await conn.execute(select(contacts.c.external_id, contacts.c.id))}


def fallback_campaign() -> Campaign:
    base = campaign(slots=["07:30", "17:00"]).model_dump(by_alias=True)
    base.update(
        channels=["email", "sms"],
        channel_strategy="fallback",
        quiet_hours="shift",
        content={**base["content"], "sms": {"body": "x.txt.j2"}},
    )
    return Campaign.model_validate(base)


async def test_the_fallback_goes_only_to_contacts_without_a_human_open_or_click(engine, tmp_path) -> None:
    ids = await two_channel_people(engine, tmp_path)
    c = fallback_campaign()
    scheduler = BucketScheduler(engine, quiet_settings(tmp_path), FakeClock(NOW))
    await scheduler.on_campaigns_changed({c.id: c})
    planned = await rows(engine)
    email = {r["contact_id"]: r for r in planned if r["channel"] == "email"}
    sms = {r["contact_id"]: r for r in planned if r["channel"] == "sms"}
    assert {r["slot"] for r in email.values()} == {"07:30"}
    assert {(r["slot"], r["fallback_of"]) for r in sms.values()} == {("17:00", "email")}
    async with engine.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.channel == "email").values(state="sent"))
        seen = NOW + timedelta(days=1, hours=13)
        await conn.execute(
            insert(events).values(campaign_id=c.id, occurred_at=seen),
            [
                {"delivery_id": email[ids["clicked"]]["id"], "kind": "click", "label": "human"},
                {"delivery_id": email[ids["machine"]]["id"], "kind": "open", "label": "machine_open"},
            ],
        )
    due = next(iter(sms.values()))["due_utc"]
    scheduler.clock.set(due - timedelta(minutes=1))  # type: ignore[attr-defined]
    with capture_logs() as logs:
        assert await scheduler.fire_bucket(c.id, "sms", due) == 2
    after = {r["contact_id"]: (r["state"], r["skip_reason"]) for r in await rows(engine) if r["channel"] == "sms"}
    assert after == {
        ids["clicked"]: ("skipped", "engaged"),
        ids["machine"]: ("claimed", None),  # a machine open is not a person reading it
        ids["silent"]: ("claimed", None),
    }
    assert [e["rows"] for e in logs if e["event"] == "fallback_not_needed"] == [1]
