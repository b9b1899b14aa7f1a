"""The suppression list by hand, and forgetting a contact, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from tracking.fixtures import make_world

from topslot.store.forget import FORGOTTEN_PREFIX, forget_contact
from topslot.store.schema import (
    consents,
    contact_tags,
    contacts,
    conversions,
    deliveries,
    events,
    purchases,
    suppressions,
)
from topslot.store.suppressions import (
    add_suppression,
    find_suppression,
    import_suppressions,
    iter_suppressions,
    remove_suppression,
)

NOW = datetime(2027, 5, 1, tzinfo=UTC)


async def _import(engine: AsyncEngine, path: Path):  # type: ignore[no-untyped-def]
    return await import_suppressions(
        engine, path, now=NOW, channel=None, reason="manual", source="import:x", default_country="US", batch_size=2
    )


async def test_import_is_idempotent_and_keeps_good_rows(engine: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(
        "Email Address\nA@example.com\nbad\nb@example.com\na@example.com\nc@example.com\n", encoding="utf-8"
    )
    first = await _import(engine, path)
    assert (first.imported, first.ignored, first.rejected) == (3, 1, 1)
    assert [str(p) for p in first.problems] == [
        f"{path}:3:1: email 'bad' is not valid: An email address must have an @-sign."
    ]
    again = await _import(engine, path)
    assert (again.imported, again.ignored, again.rejected) == (0, 4, 1)
    stored = [r async for r in iter_suppressions(engine, page=2)]
    assert [(r.channel, r.address, r.reason, r.source) for r in stored] == [
        ("email", f"{x}@example.com", "manual", "import:x") for x in "abc"
    ]


async def test_add_keeps_the_first_reason_remove_and_export_order(engine: AsyncEngine) -> None:
    first = await add_suppression(engine, "sms", "+12125550123", reason="sms_stop", source="twilio", now=NOW)
    again = await add_suppression(engine, "sms", "+12125550123", reason="manual", source="cli", now=NOW)
    assert first.reason == again.reason == "sms_stop"
    await add_suppression(engine, "email", "Z@example.com", reason="manual", source=None, now=NOW)
    assert [(r.channel, r.address) async for r in iter_suppressions(engine)] == [
        ("email", "z@example.com"),
        ("sms", "+12125550123"),
    ]
    assert [r.address async for r in iter_suppressions(engine, "sms")] == ["+12125550123"]
    removed = await remove_suppression(engine, "email", "z@example.com")
    assert removed is not None and removed.reason == "manual"
    assert await remove_suppression(engine, "email", "z@example.com") is None
    assert await find_suppression(engine, "email", "Z@EXAMPLE.com") is None


async def test_forget_erases_personal_data_and_keeps_aggregates(engine: AsyncEngine, tmp_path: Path) -> None:
    world = await make_world(engine, tmp_path)
    who = world.people["newyork"]
    delivery = world.delivery["newyork"]
    async with engine.begin() as conn:
        await conn.execute(insert(contact_tags).values(contact_id=who, tag="vip"))
        await conn.execute(
            insert(purchases).values(contact_id=who, order_id="o1", sku="s1", amount=12, purchased_at=NOW)
        )
        await conn.execute(
            insert(events).values(
                delivery_id=delivery, campaign_id=world.campaign.id, kind="click", occurred_at=NOW,
                ip="192.0.2.1", user_agent="Mozilla", referer="https://mail.example.com/", label="human",
            )
        )  # fmt: skip
        await conn.execute(
            insert(conversions).values(
                order_id="o1", contact_ref="newyork", contact_id=who, revenue=12, occurred_at=NOW, received_at=NOW
            )
        )
        email = await conn.scalar(select(contacts.c.email).where(contacts.c.id == who))
    async with engine.connect() as conn:
        deliveries_before = (await conn.execute(select(deliveries.c.id).where(deliveries.c.contact_id == who))).all()

    done = await forget_contact(engine, "newyork", NOW)
    assert done is not None and done.contact_id == who and done.suppressed == 1 and done.tags == 1
    assert done.external_id.startswith(FORGOTTEN_PREFIX) and done.events_scrubbed == 1
    async with engine.connect() as conn:
        row = (await conn.execute(select(contacts).where(contacts.c.id == who))).one()
        assert row.external_id == done.external_id
        assert all(getattr(row, c) is None for c in ("email", "first_name", "timezone", "attributes", "im_ids"))
        assert not (await conn.execute(select(contact_tags).where(contact_tags.c.contact_id == who))).all()
        assert not (await conn.execute(select(consents).where(consents.c.contact_id == who))).all()
        assert (await conn.scalar(select(purchases.c.amount).where(purchases.c.contact_id == who))) == 12
        click = (await conn.execute(select(events).where(events.c.kind == "click"))).one()
        assert (click.ip, click.user_agent, click.referer, click.label) == (None, None, None, "human")
        kept = (await conn.execute(select(deliveries.c.id).where(deliveries.c.contact_id == who))).all()
        assert kept == deliveries_before
        assert (await conn.scalar(select(conversions.c.contact_ref))) is None
        assert (await conn.scalar(select(conversions.c.revenue))) == 12
        reason = await conn.scalar(
            select(suppressions.c.reason).where(suppressions.c.channel == "email", suppressions.c.address == email)
        )
    assert reason == "forgotten"
    assert await forget_contact(engine, "newyork", NOW) is None  # the external id is gone
    again = await forget_contact(engine, str(who), NOW)  # by internal id: nothing more to do
    assert again is not None and again.external_id == done.external_id and again.suppressed == 0
