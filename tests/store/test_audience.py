"""Audience summary per channel and the keyset-paginated audience stream, on both engines."""

from __future__ import annotations

from pathlib import Path

from segment_population import NOW, campaign, load_population
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.store.audience import ChannelAudience, audience_summary, count_segment, stream_audience
from topslot.store.schema import suppressions


async def test_summary_counts_eligible_and_left_out_by_first_reason(engine: AsyncEngine, tmp_path: Path) -> None:
    await load_population(engine, tmp_path)
    women = campaign({"all": [{"attribute": "gender", "equals": "female"}]}, channels=["email", "sms"])
    summary = await audience_summary(engine, women, NOW)
    assert summary.segment == 6  # c01 c02 c03 c05 c06 c09
    assert summary.channels["email"] == ChannelAudience(
        "email", 2, {"no_address": 2, "no_consent": 1, "suppressed": 1}  # c02 c06 | c05 c09 | c03 | c01
    )
    assert summary.channels["sms"] == ChannelAudience(
        "sms", 1, {"no_address": 3, "no_consent": 1, "suppressed": 1}  # c05 | c03 c06 c09 | c01 | c02
    )
    assert await count_segment(engine, women, NOW) == 6


async def test_im_eligibility_with_and_without_a_provider(engine: AsyncEngine, tmp_path: Path) -> None:
    await load_population(engine, tmp_path)
    anyone = await audience_summary(engine, campaign({}, channels=["im"]), NOW)
    # c01 (telegram) and c04 (wechat) consented; c02 (wechat) did not; six have no IM id
    assert anyone.channels["im"] == ChannelAudience("im", 2, {"no_address": 6, "no_consent": 1, "suppressed": 0})
    wechat_campaign = campaign({}, channels=["im"], im_provider="wechat")
    wechat = await audience_summary(engine, wechat_campaign, NOW)
    assert wechat.channels["im"] == ChannelAudience("im", 1, {"no_address": 7, "no_consent": 1, "suppressed": 0})
    async with engine.begin() as conn:
        await conn.execute(
            insert(suppressions), {"channel": "im", "address": "wechat:dan_wx", "reason": "blocked", "created_at": NOW}
        )
    wechat = await audience_summary(engine, wechat_campaign, NOW)
    assert wechat.channels["im"] == ChannelAudience("im", 0, {"no_address": 7, "no_consent": 1, "suppressed": 1})


async def test_stream_yields_eligible_contacts_in_id_batches(engine: AsyncEngine, tmp_path: Path) -> None:
    await load_population(engine, tmp_path)
    everyone = campaign({}, channels=["email"])
    batches = [b async for b in stream_audience(engine, everyone, "email", NOW, batch_size=2)]
    # each batch is the eligible part of the next two contact ids; a range with nobody yields nothing
    assert [[m.external_id for m in b] for b in batches] == [["c02"], ["c04"], ["c06"]]
    ids = [m.id for b in batches for m in b]
    assert ids == sorted(ids)
    dan = batches[1][0]
    assert (dan.email, dan.phone, dan.country, dan.im_ids, dan.attributes) == (
        "dan@example.com", "+4930901820", "DE", {"wechat": "dan_wx"}, {"loyalty": 10, "vip": False},
    )  # fmt: skip
    sms = [m.external_id async for b in stream_audience(engine, everyone, "sms", NOW) for m in b]
    assert sms == ["c05"]
    ranges = [[m.external_id for m in b] async for b in stream_audience(engine, everyone, "email", NOW, batch_size=3)]
    assert ranges == [["c02"], ["c04", "c06"]]
