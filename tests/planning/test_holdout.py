"""``holdout: N%``: a fixed share of the audience gets ``skipped``/``holdout`` rows on every channel,
counted in the plan's left-out reasons, and re-planning never revives them."""

from __future__ import annotations

from datetime import timedelta

from scheduling.ledger_fixtures import NOW as LEDGER_NOW
from scheduling.ledger_fixtures import campaign as ledger_campaign
from scheduling.ledger_fixtures import populate, rows, settings

from topslot.attribution.holdout import holdout_score, in_holdout
from topslot.campaign import Campaign
from topslot.planning.planner import PlanContact, Planner
from topslot.planning.summary import PlanSummaryBuilder
from topslot.scheduling.plan_run import plan_campaign
from topslot.store import ledger

from .test_planner import NOW, campaign

BOTH = ("email", "sms")


def with_holdout(c: Campaign, share: float) -> Campaign:
    return c.model_copy(update={"holdout": share})


def plan(c: Campaign, ids: range) -> tuple[Planner, list[dict]]:
    p = Planner(c, NOW, default_timezone="UTC", default_country="US")
    contacts = [PlanContact(i, "Asia/Shanghai", None, "CN", BOTH) for i in ids]
    return p, list(p.plan_batch(contacts))


def test_held_out_contacts_get_skipped_rows_on_every_channel() -> None:
    c = with_holdout(campaign(), 0.2)
    p, got = plan(c, range(1, 501))
    held = {i for i in range(1, 501) if in_holdout(c.id, i, 0.2)}
    assert 50 < len(held) < 150
    for r in got:
        if r["contact_id"] in held:
            assert (r["state"], r["skip_reason"]) == ("skipped", "holdout")
        else:
            assert r["state"] == "planned"
    assert {(r["contact_id"], r["channel"]) for r in got if r["skip_reason"] == "holdout"} == {
        (i, ch) for i in held for ch in BOTH
    }
    assert p.left_out["holdout"] == 2 * len(held)
    assert p.rows_planned == 2 * (500 - len(held)) and p.rows_skipped == 2 * len(held)
    # a re-plan (another planner, later) holds out exactly the same contacts
    _, again = plan(c, range(1, 501))
    assert [(r["contact_id"], r["state"]) for r in again] == [(r["contact_id"], r["state"]) for r in got]


def test_no_holdout_plans_everybody_and_holdout_rows_are_not_missed_slots() -> None:
    _, got = plan(campaign(), range(1, 101))
    assert all(r["state"] == "planned" for r in got)
    p, held = plan(with_holdout(campaign(), 0.5), range(1, 101))
    builder = PlanSummaryBuilder()
    for r in held:
        builder.add(r)
    summary = builder.build(1000.0, timedelta(minutes=10), left_out=p.left_out, now=NOW)
    assert all(not b.missed for b in summary.buckets)  # holdout is reported under left out, not as missed
    assert summary.left_out["holdout"] == sum(1 for r in held if r["skip_reason"] == "holdout")


async def test_holdout_rows_in_the_ledger_survive_re_plans(engine, tmp_path) -> None:
    ids = await populate(engine, tmp_path)
    eligible = [ids[k] for k in ("shanghai", "london", "newyork", "newyork2")]
    c = ledger_campaign()
    # a share between the 2nd and 3rd lowest scores: exactly two contacts are held out
    scores = sorted(holdout_score(c.id, i) for i in eligible)
    share = (scores[1] + scores[2]) / 2
    held = {i for i in eligible if holdout_score(c.id, i) < share}
    c = with_holdout(c, share)
    await ledger.record_campaign(engine, c, "hash", LEDGER_NOW)
    outcome = await plan_campaign(engine, c, settings(tmp_path), LEDGER_NOW, write=True)
    assert outcome.summary.left_out == {"no_consent": 1, "holdout": 2}
    assert outcome.summary.planned_by_channel == {"email": 2}
    state = {r["contact_id"]: (r["state"], r["skip_reason"]) for r in await rows(engine)}
    assert {i for i, s in state.items() if s == ("skipped", "holdout")} == held
    # re-plan, even with the holdout removed from the file: holdout rows are never revived
    for again in (c, with_holdout(c, 0.0)):
        await plan_campaign(engine, again, settings(tmp_path), LEDGER_NOW + timedelta(minutes=5), write=True)
        after = {r["contact_id"]: (r["state"], r["skip_reason"]) for r in await rows(engine)}
        assert after == state
