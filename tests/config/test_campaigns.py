"""Loading a directory of campaign files, including the shipped example."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from topslot.campaign import Campaign
from topslot.config.campaigns import campaign_files, load_campaign_file, load_campaigns
from topslot.errors import InvalidInput

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "config" / "campaigns"
TEMPLATES = REPO / "templates"
BROKEN = Path(__file__).parent / "broken"


def test_shipped_example_is_valid_and_complete() -> None:
    campaign, problems = load_campaign_file(EXAMPLES / "mothers-day-2027.yaml", TEMPLATES)

    assert problems == []
    assert isinstance(campaign, Campaign)
    assert campaign.id == "mothers-day-2027"
    assert campaign.channels == ["email", "sms"]
    assert campaign.schedule.slots == ["07:30", "17:00"]
    assert campaign.audience.exclude_tags == ["staff"]
    assert campaign.coupon is not None and campaign.coupon.generate is not None
    assert campaign.coupon.generate.prefix == "MOM"
    assert campaign.landing_url("sms").endswith("utm_source=topslot&utm_medium=sms&utm_campaign=mothers-day-2027")


def test_directory_load_keeps_only_campaigns_without_problems(tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / "mothers-day-2027.yaml", tmp_path / "a.yaml")
    shutil.copy(BROKEN / "unquoted_slot.yaml", tmp_path / "b.yml")
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "notes.txt").write_text("ignored")

    result = load_campaigns(tmp_path, TEMPLATES)

    assert [p.name for p in result.files] == ["a.yaml", "b.yml"]
    assert list(result.campaigns) == ["mothers-day-2027"]
    assert result.sources == {"mothers-day-2027": tmp_path / "a.yaml"}
    assert {Path(p.path).name for p in result.problems} == {"b.yml"}
    assert not result.ok
    with pytest.raises(InvalidInput) as raised:
        result.raise_for_problems()
    assert raised.value.problems == sorted(result.problems)


def test_trap_alone_keeps_the_campaign_out_even_if_pydantic_accepts_it(tmp_path: Path) -> None:
    text = (EXAMPLES / "mothers-day-2027.yaml").read_text()
    text = text.replace("exclude_tags: [staff]", "exclude_tags: [staff]\n  not: {attribute: country, equals: NO}")
    (tmp_path / "c.yaml").write_text(text)

    campaign, problems = load_campaign_file(tmp_path / "c.yaml", TEMPLATES)

    assert campaign is None
    assert len(problems) == 1 and "Norway" in problems[0].message


def test_missing_directory_is_a_problem(tmp_path: Path) -> None:
    result = load_campaigns(tmp_path / "nope", TEMPLATES)

    assert result.campaigns == {} and "no such directory" in result.problems[0].message


def test_campaign_files_are_sorted_yaml_only(tmp_path: Path) -> None:
    for name in ("z.yaml", "a.yml", "m.YAML.bak", ".x.yaml"):
        (tmp_path / name).write_text("")

    assert [p.name for p in campaign_files(tmp_path)] == ["a.yml", "z.yaml"]


def test_template_problems_are_reported_even_when_the_model_is_invalid(tmp_path: Path) -> None:
    text = (BROKEN / "template_undefined.yaml").read_text().replace('["07:30", "17:00"]', '["7:3"]')
    (tmp_path / "x.yaml").write_text(text)

    _, problems = load_campaign_file(tmp_path / "x.yaml", BROKEN.parent / "templates")

    messages = [p.message for p in problems]
    assert any("slot '7:3' is not HH:MM" in m for m in messages)
    assert any("'contact' has no attribute 'nickname'" in m for m in messages)
