"""The campaign model's own rules (loading and error locations are tested in tests/config)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from topslot.campaign import Campaign, FieldError, format_duration, parse_duration
from topslot.yaml_source import load_yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "config/campaigns/mothers-day-2027.yaml"


@pytest.fixture
def data() -> dict:
    return load_yaml(EXAMPLE).data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(minutes=90)),
        ("90s", timedelta(seconds=90)),
        ("2d", timedelta(days=2)),
    ],
)
def test_durations_round_trip(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("bad", [10, "", "ten minutes", True])
def test_bad_durations_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_example_defaults_and_normalisation(data: dict) -> None:
    data["schedule"]["slots"] = ["17:00", "07:30"]

    campaign = Campaign.model_validate(data)

    assert campaign.schedule.slots == ["07:30", "17:00"]
    assert campaign.schedule.arrive_within == timedelta(minutes=10)
    assert campaign.schedule.missed_slot.grace == timedelta(minutes=15)
    assert campaign.holdout == 0.0
    assert campaign.model_dump(mode="json")["schedule"]["arrive_within"] == "10m"


def test_model_level_errors_blame_a_field(data: dict) -> None:
    data["schedule"]["end"] = data["schedule"]["start"] - timedelta(days=1)

    with pytest.raises(ValidationError) as raised:
        Campaign.model_validate(data)

    (err,) = raised.value.errors()
    assert isinstance(err["ctx"]["error"], FieldError) and err["ctx"]["error"].loc == ("end",)


def test_holdout_percentages(data: dict) -> None:
    assert Campaign.model_validate({**data, "holdout": "5%"}).holdout == pytest.approx(0.05)
    with pytest.raises(ValidationError):
        Campaign.model_validate({**data, "holdout": "100%"})


def test_exists_is_strictly_boolean(data: dict) -> None:
    data["audience"]["all"].append({"attribute": "email", "exists": "y"})
    with pytest.raises(ValidationError):
        Campaign.model_validate(data)


def test_landing_url_replaces_existing_utm_and_keeps_other_params(data: dict) -> None:
    data["landing_page"] = {
        "url": "https://a.example/p?x=1&utm_source=old",
        "utm": {"utm_source": "ts", "medium": "{channel}"},
    }

    url = Campaign.model_validate(data).landing_url("email")

    assert url == "https://a.example/p?x=1&utm_source=ts&utm_medium=email"
