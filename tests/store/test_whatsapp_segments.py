"""Who can get WhatsApp (IM through provider ``whatsapp``), on SQLite and PostgreSQL: the contact's
``im_whatsapp`` id, else its phone; IM consent; not suppressed at ``whatsapp:<id>`` on the IM list
(an SMS suppression of the same number is another channel's)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.channel import spec_of
from topslot.store import tracking_events as te
from topslot.store.schema import consents, contacts
from topslot.store.segments import channel_eligible, has_address, is_suppressed

NOW = datetime(2027, 5, 6, 12, 0, tzinfo=UTC)

PEOPLE: dict[str, dict[str, Any]] = {
    # external id: phone, im_ids, consents granted, suppressions (channel, address)
    "phone-only": {"phone": "+14155550101"},
    "own-id": {"phone": "+14155550102", "im_ids": {"whatsapp": "+8613800138000"}},
    "nothing": {},
    "im-suppressed": {"phone": "+14155550104", "suppressed": [("im", "whatsapp:+14155550104")]},
    "sms-suppressed": {"phone": "+14155550105", "suppressed": [("sms", "+14155550105")]},
    "sms-consent-only": {"phone": "+14155550106", "consents": ("sms",)},
    "phone-suppressed-but-own-id": {
        "phone": "+14155550107",
        "im_ids": {"whatsapp": "+8613800138001"},
        "suppressed": [("im", "whatsapp:+14155550107")],  # not the address WhatsApp goes to
    },
    "other-network-suppressed": {"phone": "+14155550108", "suppressed": [("im", "telegram:+14155550108")]},
    "telegram-only": {"phone": "+14155550109", "im_ids": {"telegram": "777"}},
}


async def people(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        for name, p in PEOPLE.items():
            contact_id = (
                await conn.execute(
                    insert(contacts)
                    .values(
                        external_id=name,
                        phone=p.get("phone"),
                        im_ids=p.get("im_ids"),
                        created_at=NOW,
                        updated_at=NOW,
                    )
                    .returning(contacts.c.id)
                )
            ).scalar_one()
            for channel in p.get("consents", ("sms", "im")):
                await conn.execute(
                    insert(consents),
                    {
                        "contact_id": contact_id,
                        "channel": channel,
                        "granted": True,
                        "source": "crm",
                        "recorded_at": NOW,
                    },
                )
            for channel, address in p.get("suppressed", ()):
                await te.suppress_addresses(conn, channel, [address], "hard_bounce", "test", NOW)


async def who(engine: AsyncEngine, condition: Any) -> set[str]:
    async with engine.connect() as conn:
        return set((await conn.execute(select(contacts.c.external_id).where(condition))).scalars())


async def test_a_phone_stands_in_for_a_missing_whatsapp_id(engine: AsyncEngine) -> None:
    await people(engine)
    everyone = set(PEOPLE) - {"nothing"}
    assert await who(engine, has_address("im", "whatsapp")) == everyone
    assert await who(engine, has_address("im", "telegram")) == {"telegram-only"}  # no phone stands in there


async def test_whatsapp_eligibility_needs_im_consent_and_no_im_suppression_of_that_address(
    engine: AsyncEngine,
) -> None:
    await people(engine)

    assert await who(engine, is_suppressed("im", "whatsapp")) == {"im-suppressed"}
    assert await who(engine, channel_eligible("im", "whatsapp")) == {
        "phone-only",
        "own-id",
        "sms-suppressed",  # an SMS suppression of the number is not a WhatsApp one
        "phone-suppressed-but-own-id",  # WhatsApp goes to its own id, which is not suppressed
        "other-network-suppressed",
        "telegram-only",  # its phone stands in for WhatsApp
    }


@pytest.mark.parametrize("name", ["phone-only", "own-id"])
async def test_the_address_the_dispatcher_sends_to_is_the_one_the_segment_checks(
    engine: AsyncEngine, name: str
) -> None:
    await people(engine)
    async with engine.connect() as conn:
        row = (await conn.execute(select(contacts).where(contacts.c.external_id == name))).one()
    address = spec_of("im").address(row._mapping, "whatsapp")
    assert address is not None and address.startswith("whatsapp:+")
    async with engine.begin() as conn:
        await te.suppress_addresses(conn, "im", [address], "im_blocked", "63014", NOW)

    assert name in await who(engine, is_suppressed("im", "whatsapp"))
    assert name not in await who(engine, channel_eligible("im", "whatsapp"))


async def test_a_whatsapp_stop_excludes_the_contact_from_whatsapp_and_not_from_sms(engine: AsyncEngine) -> None:
    await people(engine)

    done = await te.opt_out_im(
        engine, "whatsapp", ["+14155550101", "14155550101"], NOW, reason="sms_stop", source="twilio_inbound:SM1"
    )

    assert (done.suppressed, done.contacts, done.consents_withdrawn) == (1, 1, 1)
    assert "phone-only" not in await who(engine, channel_eligible("im", "whatsapp"))
    assert "phone-only" in await who(engine, channel_eligible("sms"))
    again = await te.opt_out_im(
        engine, "whatsapp", ["+14155550101"], NOW, reason="sms_stop", source="twilio_inbound:SM2"
    )
    assert (again.suppressed, again.consents_withdrawn) == (0, 0)  # idempotent
