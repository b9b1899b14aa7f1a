"""Feedback applied to the store (SQLite and PostgreSQL): the ledger row, the events, the
suppression list; repeats and forgeries change nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.bounces.classify import Kind, classify
from topslot.bounces.record import Result, find_delivery, record_feedback
from topslot.store.schema import campaigns, contacts, deliveries, events, suppressions

from .corpus import KEYRING, RCPT, message

NOW = datetime(2027, 5, 6, 1, 0, tzinfo=UTC)
DUE = datetime(2027, 5, 5, 23, 30, tzinfo=UTC)


async def seed(engine: AsyncEngine, rows: dict[int, tuple[int, str, str]]) -> None:
    """Deliveries ``id: (contact id, email, state)`` of one email campaign."""
    async with engine.begin() as conn:
        await conn.execute(
            insert(campaigns), [{"id": "spring", "name": "Spring", "config_hash": "x", "loaded_at": NOW}]
        )
        people = {cid: email for cid, email, _ in rows.values()}
        await conn.execute(
            insert(contacts),
            [{"id": cid, "external_id": f"c{cid}", "email": email, "created_at": NOW, "updated_at": NOW}
             for cid, email in people.items()],
        )  # fmt: skip
        await conn.execute(
            insert(deliveries),
            [{"id": did, "campaign_id": "spring", "contact_id": cid, "channel": "email", "slot_date": date(2027, 5, 6),
              "slot": f"07:{30 + did % 20:02d}", "due_utc": DUE, "timezone": "Asia/Shanghai", "tz_source": "contact", "state": state, "created_at": NOW, "updated_at": NOW}
             for did, (cid, _, state) in rows.items()],
        )  # fmt: skip


async def apply(engine: AsyncEngine, name: str, delivery_id: int, rcpt: str = RCPT, soft_limit: int = 3):  # type: ignore[no-untyped-def]
    feedback = classify(message(name, delivery_id, rcpt))
    return await record_feedback(
        engine, feedback, find_delivery(feedback, KEYRING, "bounce"), NOW, soft_limit=soft_limit
    )


async def state(engine: AsyncEngine, delivery_id: int) -> tuple[str, str | None]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(deliveries.c.state, deliveries.c.last_error).where(deliveries.c.id == delivery_id)
            )
        ).one()
    return row.state, row.last_error


async def suppressed(engine: AsyncEngine) -> dict[str, str]:
    async with engine.connect() as conn:
        return {r.address: r.reason for r in await conn.execute(select(suppressions.c.address, suppressions.c.reason))}


async def test_a_hard_bounce_bounces_the_row_and_suppresses_the_address_once(engine: AsyncEngine) -> None:
    await seed(engine, {1: (1, RCPT, "sent"), 2: (2, "kai@example.org", "unknown")})
    first = await apply(engine, "postfix-user-unknown", 1)
    assert (first.result, first.kind, first.delivery_id, first.matched_by, first.suppressed) == (
        Result.RECORDED, Kind.HARD_BOUNCE, 1, "verp", 1,
    )  # fmt: skip
    assert await state(engine, 1) == (
        "bounced",
        "hard_bounce 5.1.1 smtp; 550 5.1.1 <mei.lin@example.net>: Recipient address rejected: "
        "User unknown in virtual mailbox table",
    )
    assert await suppressed(engine) == {RCPT: "hard_bounce"}
    again = await apply(engine, "postfix-user-unknown", 1)  # the relay sent it twice
    assert again.result is Result.REPEAT
    async with engine.connect() as conn:
        kinds = [(r.kind, r.label) for r in await conn.execute(select(events.c.kind, events.c.label))]
    assert kinds == [("bounce", "hard_bounce")]
    # an `unknown` row (the connection dropped after the dot) is proven sent by its bounce
    assert (await apply(engine, "exim-user-unknown", 2, "kai@example.org")).result is Result.RECORDED
    assert (await state(engine, 2))[0] == "bounced"


async def test_soft_bounces_suppress_only_when_they_repeat(engine: AsyncEngine) -> None:
    await seed(engine, {d: (1, RCPT, "sent") for d in (1, 2, 3)})
    for delivery_id, expected in ((1, {}), (2, {}), (3, {RCPT: "soft_bounces"})):
        recorded = await apply(engine, "gmail-over-quota", delivery_id)
        assert recorded.kind is Kind.SOFT_BOUNCE and (await state(engine, delivery_id))[0] == "bounced"
        assert await suppressed(engine) == expected


async def test_blocked_mail_bounces_but_the_address_stays(engine: AsyncEngine) -> None:
    await seed(engine, {1: (1, RCPT, "sent")})
    recorded = await apply(engine, "qq-ip-blocked", 1)
    assert (recorded.kind, recorded.suppressed) == (Kind.BLOCKED, 0)
    assert (await state(engine, 1))[0] == "bounced" and await suppressed(engine) == {}


async def test_a_complaint_suppresses_and_keeps_the_row_sent(engine: AsyncEngine) -> None:
    await seed(engine, {1: (1, RCPT, "sent"), 2: (2, "ana@example.com", "sent")})
    assert (await apply(engine, "yahoo-arf-complaint", 1)).result is Result.RECORDED
    redacted = await apply(engine, "microsoft-arf-redacted", 2)  # matched by the signed unsubscribe token
    assert (redacted.result, redacted.matched_by) == (Result.RECORDED, "unsubscribe_token")
    assert await suppressed(engine) == {RCPT: "complaint", "ana@example.com": "complaint"}
    assert (await state(engine, 1))[0] == "sent"


async def test_forgeries_auto_replies_and_strangers_change_nothing(engine: AsyncEngine) -> None:
    await seed(engine, {1: (1, RCPT, "sent")})
    assert (await apply(engine, "forged-bounce", 1)).result is Result.UNMATCHED
    assert (await apply(engine, "out-of-office", 1)).result is Result.IGNORED
    assert (await apply(engine, "postfix-delayed", 1)).result is Result.IGNORED
    assert (await apply(engine, "postfix-user-unknown", 999)).result is Result.UNMATCHED  # no such delivery
    # the Message-ID alone (no VERP, no token) counts only when the bounce names the address it went to
    bare = classify(message("forged-bounce", 1).replace(b"To: bounce+", b"To: nobody+"))
    wrong = classify(message("forged-bounce", 1, "someone@else.example").replace(b"To: bounce+", b"To: nobody+"))
    assert (
        await record_feedback(engine, wrong, find_delivery(wrong, KEYRING, "bounce"), NOW, soft_limit=3)
    ).result is Result.UNMATCHED
    assert await state(engine, 1) == ("sent", None) and await suppressed(engine) == {}
    match = find_delivery(bare, KEYRING, "bounce")
    assert match is not None and match.by == "message_id"
    assert (await record_feedback(engine, bare, match, NOW, soft_limit=3)).result is Result.RECORDED


async def test_a_bounce_quicker_than_the_record_of_its_send_waits(engine: AsyncEngine) -> None:
    """A local relay may bounce before the dispatcher has recorded the send: nothing is done yet."""
    await seed(engine, {1: (1, RCPT, "sending")})
    early = await apply(engine, "postfix-user-unknown", 1)
    assert (early.result, early.delivery_id) == (Result.PENDING, 1)
    assert await state(engine, 1) == ("sending", None) and await suppressed(engine) == {}
    async with engine.begin() as conn:  # the dispatcher records the send
        await conn.execute(update(deliveries).where(deliveries.c.id == 1).values(state="sent"))
    assert (await apply(engine, "postfix-user-unknown", 1)).result is Result.RECORDED
    assert (await state(engine, 1))[0] == "bounced"
