"""An SMS bucket through the dispatcher with the test kit's scripted messenger: each provider answer
lands in its ledger state, the row records the provider and the segments, STOP suppresses."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from dispatch.fixtures import DUE, NOW, campaign, settings
from topslot.campaign import Campaign
from topslot.channels.base import Message, TextMessage
from topslot.channels.testing import FixedMessengers, RecordingMessenger, ScriptedMessenger
from topslot.clock import FakeClock
from topslot.delivery import SuppressionReason
from topslot.dispatch.journal import read_journal
from topslot.dispatch.service import DispatchService
from topslot.errors import AmbiguousSendError, PermanentSendError, TransientSendError
from topslot.scheduling.scheduler import BucketScheduler
from topslot.settings import Settings
from topslot.store.contacts import import_contacts
from topslot.store.schema import contacts, deliveries, suppressions

PHONES = {
    "+14155550101": None,  # accepted
    "+14155550102": PermanentSendError(
        "21610 recipient replied STOP", code=21610, suppress=True, suppress_reason=SuppressionReason.SMS_STOP
    ),
    "+14155550103": PermanentSendError("21211 invalid 'To' number", code=21211),
    "+14155550104": TransientSendError("20429 too many requests", code=20429, retry_after=1),
    "+14155550105": AmbiguousSendError("no answer after the request was written"),
}
BODY = "Mother's Day: your code {{ coupon }} {{ track(landing_url) }}"


def sms_campaign():  # type: ignore[no-untyped-def]
    return campaign(
        id="sms-test",
        channels=["sms"],
        audience={"all": [{"consent": "sms"}]},
        content={"sms": {"body": "t/sms.txt.j2"}},
    )


async def import_phones(engine: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "phones.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["external_id", "phone", "first_name", "country", "timezone", "consent_sms"])
        for i, phone in enumerate(PHONES):
            writer.writerow([f"p{i}", phone, f"Name{i}", "US", "UTC", "yes"])
    assert (await import_contacts(engine, path, now=NOW)).ok


async def planned(
    engine: AsyncEngine, s: Settings, service: DispatchService, clock: FakeClock
) -> tuple[BucketScheduler, Campaign]:
    """The SMS campaign given to ``service`` and planned, the clock a minute before its bucket."""
    scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
    c = sms_campaign()
    await service.on_campaigns_changed({c.id: c})
    await scheduler.on_campaigns_changed({c.id: c})
    clock.set(DUE - timedelta(minutes=1))
    return scheduler, c


async def rows_by_phone(engine: AsyncEngine) -> dict[str, dict]:  # type: ignore[type-arg]
    query = select(deliveries, contacts.c.phone).join(contacts, contacts.c.id == deliveries.c.contact_id)
    async with engine.connect() as conn:
        return {r["phone"]: dict(r) for r in (await conn.execute(query)).mappings()}


async def test_each_answer_lands_in_its_state_with_provider_and_segments(engine, tmp_path) -> None:  # noqa: ANN001
    s = settings(tmp_path, None)
    (s.templates_dir / "t" / "sms.txt.j2").write_text(BODY, encoding="utf-8")
    await import_phones(engine, tmp_path)
    messenger = ScriptedMessenger("sms", {p: a for p, a in PHONES.items() if a is not None}, provider="twilio")
    clock = FakeClock(NOW)
    service = DispatchService(engine, s, clock, node="test-node", messengers=FixedMessengers({"sms": messenger}))
    scheduler, c = await planned(engine, s, service, clock)
    try:
        assert await scheduler.fire_bucket(c.id, "sms", DUE) == 5
        rows = await rows_by_phone(engine)
        assert {p: r["state"] for p, r in rows.items()} == {
            "+14155550101": "sent",
            "+14155550102": "failed",
            "+14155550103": "failed",
            "+14155550104": "retry_wait",
            "+14155550105": "unknown",
        }
        sent = rows["+14155550101"]
        assert (sent["provider"], sent["provider_id"], sent["segments"]) == ("twilio", "twilio-1", 1)
        (message,) = messenger.sent
        assert isinstance(message, TextMessage) and message.to == "+14155550101"
        assert message.body.startswith(f"Mother's Day: your code {sent['coupon_code']} http://127.0.0.1:8080/")
        async with engine.connect() as conn:
            query = select(suppressions.c.channel, suppressions.c.address, suppressions.c.reason)
            suppressed = set((await conn.execute(query)).all())
        assert suppressed == {("sms", "+14155550102", "sms_stop")}  # STOP suppresses (START may lift it)
    finally:
        await service.close()


@pytest.mark.parametrize("drops_repeats", [False, True])
async def test_hand_overs_are_fsynced_unless_the_provider_drops_repeats(
    engine: AsyncEngine, tmp_path: Path, drops_repeats: bool
) -> None:
    """Every message is on the journal before it leaves; only a provider that drops a repeated
    message (an idempotency key it honours) is spared the fsync."""
    s = settings(tmp_path, None)
    (s.templates_dir / "t" / "sms.txt.j2").write_text(BODY, encoding="utf-8")
    await import_phones(engine, tmp_path)
    clock = FakeClock(NOW)
    on_record: list[set[int]] = []  # what the journal held as each message left
    messenger = RecordingMessenger("sms", provider="gateway", drops_repeats=drops_repeats)
    service = DispatchService(engine, s, clock, node="test-node", messengers=FixedMessengers({"sms": messenger}))
    assert service.journal is not None
    journal = service.journal

    def journaled(message: Message) -> str:
        on_record.append(set(read_journal(journal.path) or {}))
        return f"gw-{message.delivery_id}"

    messenger.answer = lambda message: journaled  # type: ignore[method-assign]
    scheduler, c = await planned(engine, s, service, clock)
    try:
        assert await scheduler.fire_bucket(c.id, "sms", DUE) == 5
        sent = [m.delivery_id for m in messenger.sent]
        assert len(sent) == 5 and all(d in seen for d, seen in zip(sent, on_record, strict=True))
        assert {r["state"] for r in (await rows_by_phone(engine)).values()} == {"sent"}
        assert (journal.syncs == 0) is drops_repeats  # in its helper process, or not at all
    finally:
        await service.close()


async def test_without_twilio_sms_go_to_the_outbox_and_say_so(engine, tmp_path) -> None:  # noqa: ANN001
    s = settings(tmp_path, None)
    (s.templates_dir / "t" / "sms.txt.j2").write_text(BODY, encoding="utf-8")
    await import_phones(engine, tmp_path)
    clock = FakeClock(NOW)
    service = DispatchService(engine, s, clock, node="test-node")  # the registry: no twilio configured
    scheduler, c = await planned(engine, s, service, clock)
    try:
        await scheduler.fire_bucket(c.id, "sms", DUE)
        rows = await rows_by_phone(engine)
        assert {r["provider"] for r in rows.values()} == {"outbox"} and {r["state"] for r in rows.values()} == {"sent"}
        assert len((s.outbox_dir / "sms.jsonl").read_text().splitlines()) == 5
    finally:
        await service.close()


def test_the_kit_records_in_order() -> None:
    kit = RecordingMessenger("sms")
    assert kit.addresses() == [] and kit.provider == "recording"
