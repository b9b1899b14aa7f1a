"""The frequency-cap rule (pure): which cap applies, what counts, and which planned rows it skips."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from scheduling.ledger_fixtures import campaign, settings

from topslot.campaign import FrequencyCap
from topslot.frequency import Counted, allowed, cap_plan_rows, effective_cap

DAY = timedelta(days=1)
T0 = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)
ONE_A_WEEK = FrequencyCap(max=1, per=timedelta(days=7))
TWO_A_WEEK = FrequencyCap(max=2, per=timedelta(days=7))


def test_the_campaign_override_wins_and_null_exempts(tmp_path) -> None:
    s = settings(tmp_path).model_copy(update={"frequency_caps": {"email": ONE_A_WEEK}})
    assert effective_cap(campaign(), s, "email") == ONE_A_WEEK
    assert effective_cap(campaign(), settings(tmp_path), "email") is None  # no caps by default
    own = campaign().model_copy(update={"frequency_cap": {"email": TWO_A_WEEK}})
    assert effective_cap(own, s, "email") == TWO_A_WEEK
    exempt = campaign().model_copy(update={"frequency_cap": {"email": None}})
    assert effective_cap(exempt, s, "email") is None
    assert effective_cap(campaign(), s, "sms") is None  # a channel without a cap


def test_messages_less_than_the_period_away_count_before_and_after() -> None:
    assert allowed(T0, [], ONE_A_WEEK)
    assert not allowed(T0, [T0 - 6 * DAY], ONE_A_WEEK)
    assert not allowed(T0, [T0 + 6 * DAY], ONE_A_WEEK)
    assert allowed(T0, [T0 - 7 * DAY, T0 + 7 * DAY], ONE_A_WEEK)  # exactly the period away: outside it
    assert allowed(T0, [T0 - DAY], TWO_A_WEEK)
    assert not allowed(T0, [T0 - DAY, T0 - 2 * DAY], TWO_A_WEEK)


def _row(contact: int, due: datetime, state: str = "planned") -> dict[str, object]:
    return {"contact_id": contact, "channel": "email", "slot_date": due.date(), "slot": "07:30", "due_utc": due,
            "state": state, "skip_reason": None if state == "planned" else "missed_slot", "late": False}  # fmt: skip


def test_a_plan_keeps_the_earliest_rows_of_a_contact_and_skips_the_rest() -> None:
    rows = [_row(1, T0 + 2 * DAY), _row(1, T0), _row(1, T0 + DAY), _row(2, T0), _row(3, T0 - DAY, "skipped")]
    out, capped = cap_plan_rows(rows, TWO_A_WEEK, Counted())
    states = {(r["contact_id"], r["due_utc"]): (r["state"], r["skip_reason"]) for r in out}
    assert states[(1, T0)] == states[(1, T0 + DAY)] == states[(2, T0)] == ("planned", None)
    assert states[(1, T0 + 2 * DAY)] == ("skipped", "frequency_cap")
    assert states[(3, T0 - DAY)] == ("skipped", "missed_slot")  # not a message: left as it is
    assert capped == 1
    assert rows[0]["state"] == "planned"  # the input is not changed


def test_counted_messages_and_handed_over_rows_of_the_campaign() -> None:
    counted = Counted(due={1: [T0 - DAY], 2: [T0]}, handed_over={(2, date(2027, 5, 6), "07:30")})
    out, capped = cap_plan_rows([_row(1, T0), _row(2, T0), _row(2, T0 + DAY)], ONE_A_WEEK, counted)
    # contact 1 had a message a day before; contact 2's first row is the one already handed over (the
    # plan does not rewrite it), its second one is over the cap
    assert [(r["contact_id"], r["state"]) for r in out] == [(1, "skipped"), (2, "planned"), (2, "skipped")]
    assert capped == 2
