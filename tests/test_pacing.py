"""Quiet hours: windows over midnight, per-country rules, and the campaign check."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest
from planning.test_planner import campaign

from topslot.pacing import LocalWindow, QuietRules, quiet_hours_problems, window_text
from topslot.settings import Settings

NY = ZoneInfo("America/New_York")


def test_a_window_over_midnight_holds_the_evening_and_the_early_morning() -> None:
    w = LocalWindow.parse("21:00-08:00")
    assert [w.contains(time(h, m)) for h, m in [(20, 59), (21, 0), (23, 59), (0, 0), (7, 59), (8, 0), (12, 0)]] == [
        False, True, True, True, True, False, False,
    ]  # fmt: skip
    day = LocalWindow.parse("12:00-13:30")
    assert [day.contains(time(h, m)) for h, m in [(11, 59), (12, 0), (13, 29), (13, 30)]] == [False, True, True, False]


def test_opening_is_the_end_of_the_window_on_the_same_or_the_next_day() -> None:
    w = LocalWindow.parse("21:00-08:00")
    assert w.opening(datetime(2027, 5, 6, 7, 30, tzinfo=NY)) == datetime(2027, 5, 6, 8, 0, tzinfo=NY)
    assert w.opening(datetime(2027, 5, 6, 22, 15, tzinfo=NY)) == datetime(2027, 5, 7, 8, 0, tzinfo=NY)
    outside = datetime(2027, 5, 6, 17, 0, tzinfo=NY)
    assert w.opening(outside) is outside


@pytest.mark.parametrize("text", ["21:00", "25:00-08:00", "21:00-21:00", "9pm-8am", ""])
def test_bad_windows_say_how_to_write_one(text: str) -> None:
    with pytest.raises(ValueError, match="21:00-08:00|none"):
        LocalWindow.parse(text)


def test_none_and_off_mean_no_quiet_hours() -> None:
    assert window_text(None) is None and window_text("none") is None and window_text(" OFF ") is None
    assert window_text("21:00 - 08:00") == "21:00-08:00"


def test_settings_replace_the_channel_defaults_per_channel_and_country() -> None:
    defaults = Settings().quiet_hours.rules()
    assert str(defaults.window("sms", "US")) == "21:00-08:00"
    assert str(defaults.window("im", None)) == "21:00-08:00"
    assert defaults.window("email", "US") is None
    rules = Settings(
        quiet_hours={
            "sms": "20:00-09:00",
            "email": "22:00-07:00",
            "countries": {"CN": {"sms": "22:00-08:00"}, "DE": {"sms": None}},
        }
    ).quiet_hours.rules()
    assert str(rules.window("sms", "US")) == "20:00-09:00"
    assert str(rules.window("sms", "CN")) == "22:00-08:00"
    assert rules.window("sms", "DE") is None
    assert str(rules.window("email", "CN")) == "22:00-07:00"  # CN overrides SMS only
    assert set(rules.windows("sms")) == {None, "CN"}  # DE has none: left out


def test_a_settings_window_that_is_wrong_is_refused_at_its_key() -> None:
    with pytest.raises(Exception, match="quiet_hours"):
        Settings(quiet_hours={"sms": "9pm-8am"})


def test_an_sms_slot_inside_quiet_hours_refuses_the_campaign_unless_it_says_shift_or_skip() -> None:
    rules = QuietRules.defaults()
    c = campaign()  # email + SMS at 07:30 in each recipient's zone
    problems = quiet_hours_problems(c, rules)
    assert problems == [
        (
            ("schedule", "slots", 0),
            "the SMS slot 07:30 falls inside SMS quiet hours 21:00-08:00 (settings quiet_hours); set quiet_hours: "
            "shift (send at 08:00) or skip, or choose another slot",
        )
    ]
    for mode in ("shift", "skip"):
        assert quiet_hours_problems(c.model_copy(update={"quiet_hours": mode}), rules) == []
    assert quiet_hours_problems(c, QuietRules.none()) == []


def test_a_country_rule_is_named_in_the_problem() -> None:
    rules = QuietRules({"sms": None}, {"FR": {"sms": "07:00-09:00"}})
    [(where, message)] = quiet_hours_problems(campaign(), rules)
    assert where == ("schedule", "slots", 0)
    assert "quiet hours 07:00-09:00 for recipients in FR" in message
