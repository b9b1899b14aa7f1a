"""Human engagement per slot, read from the ledger and its events (what slot_choice: learned learns)."""

from __future__ import annotations

from datetime import timedelta

from scheduling.ledger_fixtures import NOW, campaign, populate, rows, settings
from sqlalchemy import insert, select, update

from topslot.scheduling.plan_run import plan_campaign
from topslot.store import ledger
from topslot.store.engagement import HUMAN, contact_histories, population_history
from topslot.store.schema import deliveries, events
from topslot.tracking.classify import HUMAN as CLASSIFIED_HUMAN


def test_the_human_label_is_the_classifiers() -> None:
    assert HUMAN == CLASSIFIED_HUMAN


async def test_histories_count_sent_messages_per_slot_and_the_humanly_engaged_ones(engine, tmp_path) -> None:
    ids = await populate(engine, tmp_path)
    c = campaign(per_recipient="every_slot", slots=["07:30", "17:00"])  # 2 days × 2 slots each
    await ledger.record_campaign(engine, c, "hash", NOW)
    await plan_campaign(engine, c, settings(tmp_path), NOW, write=True)
    got = await rows(engine)
    sh = [r for r in got if r["contact_id"] == ids["shanghai"]]
    ny = [r for r in got if r["contact_id"] == ids["newyork"]]
    async with engine.begin() as conn:
        sent = [r["id"] for r in sh + ny if r["slot_date"].day == 6]  # day one was sent; day two is not yet
        await conn.execute(update(deliveries).where(deliveries.c.id.in_(sent)).values(state="sent"))
        evening = next(r["id"] for r in sh if r["slot_date"].day == 6 and r["slot"] == "17:00")
        morning = next(r["id"] for r in ny if r["slot_date"].day == 6 and r["slot"] == "07:30")
        await conn.execute(
            insert(events).values(campaign_id=c.id, occurred_at=NOW),
            [
                {"delivery_id": evening, "kind": "click", "label": "human"},
                {"delivery_id": evening, "kind": "open", "label": None},  # unlabelled counts as human; once
                {"delivery_id": morning, "kind": "open", "label": "machine_open"},  # not a person
            ],
        )
    since = NOW - timedelta(days=30)
    got_h = await contact_histories(engine, [ids["shanghai"], ids["newyork"], ids["london"]], ["07:30", "17:00"], since)
    assert got_h == {
        ids["shanghai"]: {"07:30": (1, 0), "17:00": (1, 1)},
        ids["newyork"]: {"07:30": (1, 0), "17:00": (1, 0)},
    }
    assert await population_history(engine, ["07:30", "17:00"], since) == {"07:30": (2, 0), "17:00": (2, 1)}
    assert await population_history(engine, ["07:30"], NOW + timedelta(days=30)) == {}  # outside the period
    async with engine.connect() as conn:
        assert (await conn.execute(select(deliveries.c.slot_basis).distinct())).scalars().all() == ["first"]


async def test_a_learned_plan_reads_the_history(engine, tmp_path) -> None:
    ids = await populate(engine, tmp_path)
    earlier = campaign(slots=["07:30", "17:00"], per_recipient="every_slot")
    await ledger.record_campaign(engine, earlier, "hash", NOW)
    await plan_campaign(engine, earlier, settings(tmp_path), NOW, write=True)
    async with engine.begin() as conn:
        await conn.execute(update(deliveries).values(state="sent"))
        evening = [r["id"] for r in await rows(engine) if r["slot"] == "17:00" and r["contact_id"] == ids["london"]]
        await conn.execute(
            insert(events).values(campaign_id=earlier.id, occurred_at=NOW, kind="click", label="human"),
            [{"delivery_id": d} for d in evening],
        )
    data = campaign(slots=["07:30", "17:00"]).model_dump(by_alias=True)
    data.update(id="learned-test", slot_choice="learned", learned={"exploration": "0%"})
    from topslot.campaign import Campaign

    later = Campaign.model_validate(data)
    await ledger.record_campaign(engine, later, "hash", NOW)
    outcome = await plan_campaign(engine, later, settings(tmp_path), NOW, write=True)
    chosen = {r["contact_id"]: (r["slot"], r["slot_basis"]) for r in await rows(engine) if r["campaign_id"] == later.id}
    assert chosen[ids["london"]] == ("17:00", "history")  # clicked every evening message
    # No click at all: each slot's estimate is the population's, shrunk by the misses; the evening,
    # where the population clicked, still wins (0.5 / 4 against 0 / 4).
    assert chosen[ids["shanghai"]] == ("17:00", "history")
    assert outcome.summary.slot_bases["email"] == {"17:00": {"history": 4}}
