from __future__ import annotations

from pathlib import Path

import yaml

from topslot.campaign import Campaign
from topslot.runtime.registry import CampaignRegistry


def campaign(campaign_text, cid: str, name: str = "Spring offer") -> Campaign:  # type: ignore[no-untyped-def]
    return Campaign.model_validate(yaml.safe_load(campaign_text(cid, name)))


def test_load_update_keep_and_unload(campaign_text, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    reg = CampaignRegistry()

    first = reg.apply({"a": campaign(campaign_text, "a"), "b": campaign(campaign_text, "b")}, {"a": a, "b": b}, {a, b})
    assert (first.loaded, first.changed) == (["a", "b"], True)

    same = reg.apply({"a": campaign(campaign_text, "a"), "b": campaign(campaign_text, "b")}, {"a": a, "b": b}, {a, b})
    assert not same.changed

    edited = reg.apply({"a": campaign(campaign_text, "a", "New"), "b": campaign(campaign_text, "b")}, {"a": a, "b": b}, {a, b})
    assert edited.updated == ["a"] and reg.active["a"].name == "New"

    # b's file is broken now: it is not among the valid ones but still on disk → kept
    broken = reg.apply({"a": campaign(campaign_text, "a", "New")}, {"a": a}, {a, b})
    assert broken.kept == ["b"] and not broken.changed and set(reg.active) == {"a", "b"}

    # b's file removed → unloaded
    removed = reg.apply({"a": campaign(campaign_text, "a", "New")}, {"a": a}, {a})
    assert removed.unloaded == ["b"] and set(reg.active) == {"a"} and reg.source_of("b") is None


def test_a_file_that_now_defines_another_campaign_unloads_the_old_one(campaign_text, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = tmp_path / "a.yaml"
    reg = CampaignRegistry()
    reg.apply({"old": campaign(campaign_text, "old")}, {"old": a}, {a})
    changes = reg.apply({"new": campaign(campaign_text, "new")}, {"new": a}, {a})
    assert changes.loaded == ["new"] and changes.unloaded == ["old"] and set(reg.active) == {"new"}


def test_a_new_version_of_the_same_model_is_an_update(campaign_text, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from topslot.campaign_version import CampaignVersion

    a = tmp_path / "a.yaml"
    reg = CampaignRegistry()
    v1 = CampaignVersion("1" * 64, datetime(2027, 1, 1, tzinfo=UTC))
    v2 = CampaignVersion("2" * 64, datetime(2027, 1, 2, tzinfo=UTC))
    reg.apply({"a": campaign(campaign_text, "a")}, {"a": a}, {a}, {"a": v1})
    assert not reg.apply({"a": campaign(campaign_text, "a")}, {"a": a}, {a}, {"a": v1}).changed
    template_edited = reg.apply({"a": campaign(campaign_text, "a")}, {"a": a}, {a}, {"a": v2})
    assert template_edited.updated == ["a"] and reg.version_of("a") == v2
    assert reg.apply({}, {}, set()).unloaded == ["a"] and reg.version_of("a") is None
