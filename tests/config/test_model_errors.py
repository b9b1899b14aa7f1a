"""Pydantic errors → located, plain-English problems."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from topslot.campaign import Campaign
from topslot.config.model_errors import describe, label_of, validation_problems
from topslot.yaml_source import load_yaml_text

BASE = """\
id: t
name: T
channels: [sms]
audience:
  all:
    - {tag: vip}
schedule:
  start: 2027-05-06
  end: 2027-05-09
landing_page: {url: "https://shop.example.com/"}
content:
  sms: {body: x.j2}
"""


def problems_for(text: str) -> list[str]:
    doc = load_yaml_text(text, "t.yaml")
    with pytest.raises(ValidationError) as raised:
        Campaign.model_validate(doc.data)
    return [str(p) for p in validation_problems(raised.value, doc, Campaign)]


def test_base_is_valid() -> None:
    Campaign.model_validate(load_yaml_text(BASE, "t.yaml").data)


def test_union_with_no_matching_member_gets_one_merged_message() -> None:
    (problem,) = problems_for(BASE.replace("  end: 2027-05-09\n", "  end: 2027-05-09\n  days: weekdays\n"))

    assert problem.startswith("t.yaml:10:9: schedule.days: expected 'every_day' or 'workdays', or a list")
    assert problem.endswith("found the text 'weekdays'")


def test_union_error_prefers_the_member_that_got_furthest() -> None:
    text = BASE.replace("    - {tag: vip}", "    - {purchased: {category: [cosmetics, 5]}}")

    (problem,) = problems_for(text)

    assert problem.startswith("t.yaml:6:42: audience.all[0].purchased.category[1]: expected text")


def test_condition_tag_in_loc_is_not_taken_for_a_key() -> None:
    text = BASE.replace("    - {tag: vip}", "    - {attribute: age, gte: 30, lte: 50}")

    (problem,) = problems_for(text)

    assert problem.startswith("t.yaml:6:7: audience.all[0]: give exactly one operator for attribute 'age'")


def test_tag_condition_type_error_points_at_the_value() -> None:
    (problem,) = problems_for(BASE.replace("{tag: vip}", "{tag: [vip]}"))

    assert problem.startswith("t.yaml:6:8: audience.all[0].tag: expected text, found a list")


def test_condition_that_is_not_a_mapping() -> None:
    (problem,) = problems_for(BASE.replace("{tag: vip}", "vip"))

    assert problem.startswith("t.yaml:6:7: audience.all[0]: a condition is a mapping")


def test_unknown_key_without_close_match_lists_allowed_keys() -> None:
    (problem,) = problems_for(BASE + "zzz: 1\n")

    assert "unknown key 'zzz'; allowed here: id, name, channels" in problem


def test_missing_key_points_at_the_parent_key() -> None:
    (problem,) = problems_for(BASE.replace("  start: 2027-05-06\n", ""))

    assert problem == "t.yaml:7:1: schedule: missing required key 'start'"


def test_bounds_and_lengths_in_plain_words() -> None:
    text = BASE.replace("{tag: vip}", "{purchased: {within_days: 0}}").replace("channels: [sms]", "channels: []")

    got = problems_for(text)

    assert any("channels: needs at least 1 item(s)" in p for p in got)
    assert any("within_days: must be more than 0, found 0" in p for p in got)


def test_describe_and_label() -> None:
    assert describe(None) == "nothing (the value is empty)"
    assert describe(True) == "the boolean true"
    assert describe(450) == "the number 450"
    assert label_of(("audience", "all", 0, "equals")) == "audience.all[0].equals"
