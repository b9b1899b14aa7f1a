"""Provider receipts (Twilio status callbacks) in the store, and the SMS opt-out / opt-in helpers,
on SQLite and PostgreSQL: sent → delivered | bounced, first final receipt wins, suppressions, and
receipts that beat the dispatcher's commit of the message SID."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from store.sending_rows import add_campaign, add_contact, add_leased_row
from topslot.delivery import Decision, SuppressionReason
from topslot.delivery import DeliveryState as S
from topslot.store import receipts
from topslot.store import tracking_events as te
from topslot.store.db import IMMEDIATE
from topslot.store.dispatch import Outcome, record_outcomes
from topslot.store.receipts import Receipt, Result, pending_receipts, record_receipt
from topslot.store.schema import consents, deliveries, suppressions

NOW = datetime(2027, 5, 6, 12, 0, tzinfo=UTC)
OWNER = "node-a/1"
CAMPAIGN = "spring"
PHONES = {"alice": "+14155550101", "bob": "+14155550102", "bob2": "+14155550102", "carol": "+14155550103"}


def sid(n: int) -> str:
    return f"SM{n:032x}"


async def sms_world(engine: AsyncEngine, state: str = S.SENDING) -> dict[str, tuple[int, int]]:
    """A campaign, four contacts with SMS consent (bob and bob2 share a phone) and one SMS row each
    in ``state``, leased to ``OWNER``; returns name → (contact id, delivery id)."""
    out: dict[str, tuple[int, int]] = {}
    async with engine.begin() as conn:
        await add_campaign(conn, CAMPAIGN, "Spring", NOW)
        for name, phone in PHONES.items():
            contact_id = await add_contact(
                conn, NOW, consent=["sms"], external_id=name, phone=phone, email=f"{name}@example.com"
            )
            delivery_id = await add_leased_row(
                conn, campaign_id=CAMPAIGN, contact_id=contact_id, channel="sms", owner=OWNER, at=NOW,
                timezone="America/New_York", tz_source="phone", state=state,
            )  # fmt: skip
            out[name] = (contact_id, delivery_id)
    return out


async def mark_sent(engine: AsyncEngine, delivery_id: int, provider_id: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.id == delivery_id)
            .values(state=S.SENT, provider="twilio", provider_id=provider_id, lease_owner=None)
        )


async def record_sent(engine: AsyncEngine, sends: dict[int, tuple[int, str]], at: datetime = NOW) -> None:
    """What the dispatcher does after a chunk's sends return: delivery id → (contact id, SID)."""
    outcomes = [
        Outcome(d, c, Decision(S.SENT, provider_id=p), channel="sms", provider="twilio", segments=1)
        for d, (c, p) in sends.items()
    ]
    await record_outcomes(engine, CAMPAIGN, outcomes, OWNER, at)


async def ledger(engine: AsyncEngine, delivery_id: int) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(select(deliveries).where(deliveries.c.id == delivery_id))).one()


async def suppressed(engine: AsyncEngine) -> list[tuple[str, str, str, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(suppressions).order_by(suppressions.c.address))
        return [(r.channel, r.address, r.reason, r.source) for r in rows]


async def sms_consents(engine: AsyncEngine) -> dict[int, tuple[bool, str | None]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(consents).where(consents.c.channel == "sms"))
        return {r.contact_id: (r.granted, r.source) for r in rows}


def delivered(n: int) -> Receipt:
    return Receipt("twilio", sid(n), S.DELIVERED)


def bounced(n: int, error: str = "30003 unreachable destination handset", suppress: str | None = None) -> Receipt:
    source = f"twilio_status:{sid(n)}:30005" if suppress else None
    return Receipt("twilio", sid(n), S.BOUNCED, error=error, suppress=suppress, source=source)


# ---------------------------------------------------------------- receipts on recorded rows


async def test_delivered_receipt_moves_the_sent_row_and_repeats_change_nothing(engine: AsyncEngine) -> None:
    world = await sms_world(engine)
    _, d = world["alice"]
    await mark_sent(engine, d, sid(1))
    first = await record_receipt(engine, delivered(1), NOW + timedelta(seconds=5))
    again = await record_receipt(engine, delivered(1), NOW + timedelta(seconds=9))
    late_bounce = await record_receipt(engine, bounced(1), NOW + timedelta(seconds=20))
    assert first == receipts.Recorded(Result.APPLIED, delivery_id=d)
    assert again.result == late_bounce.result == Result.REPEAT
    row = await ledger(engine, d)
    assert (row.state, row.last_error, row.updated_at) == (S.DELIVERED, None, NOW + timedelta(seconds=5))
    assert await pending_receipts(engine) == [] and await suppressed(engine) == []


async def test_bounce_records_the_error_and_a_later_delivered_does_not_undo_it(engine: AsyncEngine) -> None:
    world = await sms_world(engine)
    _, d = world["alice"]
    await mark_sent(engine, d, sid(2))
    assert (await record_receipt(engine, bounced(2), NOW)).result == Result.APPLIED
    assert (await record_receipt(engine, delivered(2), NOW)).result == Result.REPEAT
    row = await ledger(engine, d)
    assert (row.state, row.last_error) == (S.BOUNCED, "30003 unreachable destination handset")
    assert await suppressed(engine) == []  # a plain bounce does not suppress


async def test_a_dead_number_is_suppressed_for_sms_once(engine: AsyncEngine) -> None:
    world = await sms_world(engine)
    _, d = world["carol"]
    await mark_sent(engine, d, sid(3))
    receipt = bounced(3, "30005 unknown destination handset", suppress=SuppressionReason.SMS_UNDELIVERABLE)
    done = await record_receipt(engine, receipt, NOW)
    assert (done.result, done.delivery_id, done.suppressed) == (Result.APPLIED, d, 1)
    assert (await record_receipt(engine, receipt, NOW)).suppressed == 0
    assert await suppressed(engine) == [("sms", PHONES["carol"], "sms_undeliverable", f"twilio_status:{sid(3)}:30005")]
    assert (await sms_consents(engine))[world["carol"][0]] == (True, "crm")  # a bounce is not a refusal


async def test_a_receipt_for_a_row_in_another_state_changes_nothing(engine: AsyncEngine) -> None:
    world = await sms_world(engine)
    _, d = world["alice"]
    async with engine.begin() as conn:
        await conn.execute(update(deliveries).where(deliveries.c.id == d).values(state=S.UNKNOWN, provider_id=sid(4)))
    assert (await record_receipt(engine, delivered(4), NOW)).result == Result.NOT_SENT
    assert (await ledger(engine, d)).state == S.UNKNOWN
    assert await pending_receipts(engine) == []


def test_a_receipt_is_delivered_or_bounced() -> None:
    with pytest.raises(ValueError):
        Receipt("twilio", sid(1), S.SENT)
    with pytest.raises(ValueError):
        Receipt("twilio", "", S.DELIVERED)


# ---------------------------------------------------------------- receipts that beat the commit


async def test_a_receipt_before_the_row_is_recorded_is_applied_when_it_is(engine: AsyncEngine) -> None:
    world = await sms_world(engine)
    (ca, da), (cc, dc), (cb, db) = world["alice"], world["carol"], world["bob"]
    early = await record_receipt(engine, delivered(10), NOW)
    dead = bounced(11, "30005 unknown destination handset", suppress=SuppressionReason.SMS_UNDELIVERABLE)
    assert (await record_receipt(engine, dead, NOW)).result == Result.PENDING
    assert early.result == Result.PENDING
    assert (await record_receipt(engine, bounced(10), NOW)).result == Result.PENDING  # the first one stays parked
    assert [(r.provider_id, r.state) for r in await pending_receipts(engine)] == [
        (sid(10), S.DELIVERED),
        (sid(11), S.BOUNCED),
    ]
    assert (await ledger(engine, da)).state == S.SENDING  # nothing touched before the row is recorded

    await record_sent(engine, {da: (ca, sid(10)), dc: (cc, sid(11)), db: (cb, sid(12))}, NOW + timedelta(seconds=2))
    alice, carol, bob = [await ledger(engine, x) for x in (da, dc, db)]
    assert (alice.state, alice.provider_id, alice.provider) == (S.DELIVERED, sid(10), "twilio")
    assert (carol.state, carol.last_error) == (S.BOUNCED, "30005 unknown destination handset")
    assert bob.state == S.SENT
    assert await pending_receipts(engine) == []
    assert [(a, r) for _, a, r, _ in await suppressed(engine)] == [(PHONES["carol"], "sms_undeliverable")]


async def test_a_lost_lease_keeps_the_receipt_waiting(engine: AsyncEngine) -> None:
    world = await sms_world(engine)
    c, d = world["alice"]
    await record_receipt(engine, delivered(20), NOW)
    outcome = Outcome(d, c, Decision(S.SENT, provider_id=sid(20)), channel="sms", provider="twilio")
    await record_outcomes(engine, CAMPAIGN, [outcome], "another-node/9", NOW)  # not our lease: nothing recorded
    assert [r.provider_id for r in await pending_receipts(engine)] == [sid(20)]


async def test_old_parked_receipts_are_purged_and_the_table_is_bounded(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sms_world(engine)
    await record_receipt(engine, delivered(30), NOW)
    later = NOW + receipts.PENDING_TTL + timedelta(minutes=1)
    assert (await record_receipt(engine, delivered(31), later)).result == Result.PENDING
    assert [r.provider_id for r in await pending_receipts(engine)] == [sid(31)]
    monkeypatch.setattr(receipts, "MAX_PENDING", 1)
    assert (await record_receipt(engine, delivered(32), later)).result == Result.DROPPED
    assert [r.provider_id for r in await pending_receipts(engine)] == [sid(31)]


async def test_a_receipt_racing_an_open_record_transaction_is_not_lost(engine: AsyncEngine) -> None:
    """The chunk's transaction has written `sent` + SID and looked for parked receipts (none), but not
    committed yet, when the callback arrives: the callback waits for it, then applies."""
    world = await sms_world(engine)
    c, d = world["alice"]
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.id == d).values(state=S.SENT, provider="twilio", provider_id=sid(40))
        )
        assert await receipts.apply_pending(conn, [sid(40)], NOW) == 0
        callback = asyncio.create_task(record_receipt(engine, delivered(40), NOW))
        await asyncio.sleep(0.3)
        assert not callback.done()  # waiting for this transaction (SQLite: its write lock; PostgreSQL: the lock)
    done = await asyncio.wait_for(callback, 15)
    assert (done.result, done.delivery_id) == (Result.APPLIED, d)
    assert (await ledger(engine, d)).state == S.DELIVERED
    assert await pending_receipts(engine) == []


async def test_a_receipt_parked_while_the_record_transaction_is_open_is_applied_by_it(engine: AsyncEngine) -> None:
    """The chunk's transaction has written `sent` + SID but not yet looked for parked receipts."""
    world = await sms_world(engine)
    c, d = world["alice"]
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.id == d).values(state=S.SENT, provider="twilio", provider_id=sid(41))
        )
        callback = asyncio.create_task(record_receipt(engine, delivered(41), NOW))
        await asyncio.sleep(0.3)  # PostgreSQL: it parks the receipt and commits; SQLite: it waits for the lock
        await receipts.apply_pending(conn, [sid(41)], NOW)
    done = await asyncio.wait_for(callback, 15)
    assert done.result in (Result.APPLIED, Result.PENDING)
    assert (await ledger(engine, d)).state == S.DELIVERED
    assert await pending_receipts(engine) == []


# ---------------------------------------------------------------- SMS opt-out and opt-in by phone


async def test_opt_out_suppresses_the_phone_and_withdraws_every_holders_consent(engine: AsyncEngine) -> None:
    world = await sms_world(engine)
    first = await te.opt_out_address(
        engine, "sms", f" {PHONES['bob']} ", NOW, reason=SuppressionReason.SMS_STOP, source="twilio_inbound:SMx"
    )
    again = await te.opt_out_address(engine, "sms", PHONES["bob"], NOW, reason=SuppressionReason.SMS_STOP, source="y")
    assert first == te.OptedOut(suppressed=1, contacts=2, consents_withdrawn=2)
    assert again == te.OptedOut(suppressed=0, contacts=2, consents_withdrawn=0)
    assert await suppressed(engine) == [("sms", PHONES["bob"], "sms_stop", "twilio_inbound:SMx")]
    got = await sms_consents(engine)
    assert got[world["bob"][0]] == got[world["bob2"][0]] == (False, "twilio_inbound:SMx")
    assert got[world["alice"][0]] == (True, "crm")


async def test_opt_out_of_a_number_no_contact_has_still_suppresses_it(engine: AsyncEngine) -> None:
    await sms_world(engine)
    done = await te.opt_out_address(engine, "sms", "+447700900123", NOW, reason=SuppressionReason.SMS_STOP, source="s")
    assert done == te.OptedOut(suppressed=1, contacts=0, consents_withdrawn=0)


async def test_lifting_removes_only_a_stop_and_leaves_consent_alone(engine: AsyncEngine) -> None:
    world = await sms_world(engine)
    await te.opt_out_address(engine, "sms", PHONES["bob"], NOW, reason=SuppressionReason.SMS_STOP, source="s")
    async with engine.begin() as conn:
        await te.suppress_addresses(conn, "sms", [PHONES["carol"]], SuppressionReason.SMS_UNDELIVERABLE, "30005", NOW)
    bob = await te.lift_suppression(engine, "sms", PHONES["bob"], reasons={SuppressionReason.SMS_STOP})
    carol = await te.lift_suppression(engine, "sms", PHONES["carol"], reasons={SuppressionReason.SMS_STOP})
    nobody = await te.lift_suppression(engine, "sms", PHONES["alice"], reasons={SuppressionReason.SMS_STOP})
    assert bob == te.Lifted(1, None)
    assert carol == te.Lifted(0, "sms_undeliverable")
    assert nobody == te.Lifted(0, None)
    assert [(a, r) for _, a, r, _ in await suppressed(engine)] == [(PHONES["carol"], "sms_undeliverable")]
    assert (await sms_consents(engine))[world["bob"][0]][0] is False  # START does not grant consent again
