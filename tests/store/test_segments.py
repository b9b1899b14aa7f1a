"""Each audience condition kind selects exactly the expected contacts, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from segment_population import NOW, load_population
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.ages import age_on
from topslot.campaign import Audience
from topslot.store.schema import contacts
from topslot.store.segments import SegmentError, audience_filter, years_before

CASES: list[tuple[dict[str, Any], set[str]]] = [
    # real columns
    ({"all": [{"attribute": "gender", "equals": "female"}]}, {"c01", "c02", "c03", "c05", "c06", "c09"}),
    ({"all": [{"attribute": "gender", "equals": "F"}]}, {"c01", "c02", "c03", "c05", "c06", "c09"}),
    ({"all": [{"attribute": "gender", "not_equals": "female"}]}, {"c04", "c08"}),
    ({"not": {"attribute": "gender", "equals": "female"}}, {"c04", "c07", "c08"}),
    ({"all": [{"attribute": "gender", "exists": False}]}, {"c07"}),
    ({"all": [{"attribute": "country", "in": ["US", "CN"]}]}, {"c01", "c02"}),
    ({"all": [{"attribute": "country", "equals": "gb"}]}, {"c03"}),
    ({"all": [{"attribute": "email", "contains": "EXAMPLE.NET"}]}, {"c02"}),
    ({"all": [{"attribute": "email", "exists": False}]}, {"c05", "c08", "c09"}),
    ({"all": [{"attribute": "birth_date", "lt": date(1980, 1, 1)}]}, {"c05", "c06"}),
    ({"all": [{"attribute": "first_name", "gte": "G"}]}, {"c07", "c08", "c09"}),
    # age from birth_date on 2027-05-06, else the age column
    ({"all": [{"attribute": "age", "between": [30, 50]}]}, {"c01", "c02", "c04", "c05", "c08"}),
    ({"all": [{"attribute": "age", "gte": 50}]}, {"c05", "c06"}),
    ({"all": [{"attribute": "age", "gt": 50}]}, {"c06"}),
    ({"all": [{"attribute": "age", "lt": 30}]}, {"c03", "c09"}),
    ({"all": [{"attribute": "age", "lte": 29.5}]}, {"c03", "c09"}),
    ({"all": [{"attribute": "age", "equals": 30}]}, {"c02", "c08"}),
    ({"all": [{"attribute": "age", "in": [27, 51]}]}, {"c06", "c09"}),
    ({"all": [{"attribute": "age", "not_equals": 30}]}, {"c01", "c03", "c04", "c05", "c06", "c09"}),
    ({"all": [{"attribute": "age", "exists": False}]}, {"c07"}),
    # JSON attributes: numbers as numbers, strings as strings, booleans as booleans
    ({"all": [{"attribute": "loyalty", "gte": 5}]}, {"c01", "c04"}),
    ({"all": [{"attribute": "loyalty", "equals": "5"}]}, {"c03"}),
    ({"all": [{"attribute": "loyalty", "between": [2, 5]}]}, {"c01", "c02"}),
    ({"all": [{"attribute": "loyalty", "not_equals": 5}]}, {"c02", "c04"}),
    ({"all": [{"attribute": "tier", "equals": "gold"}]}, {"c01"}),
    ({"all": [{"attribute": "tier", "contains": "GOLD"}]}, {"c01", "c03"}),
    ({"all": [{"attribute": "tier", "in": ["gold", "silver"]}]}, {"c01", "c02"}),
    ({"all": [{"attribute": "vip", "equals": True}]}, {"c01"}),
    ({"all": [{"attribute": "vip", "equals": False}]}, {"c04"}),
    ({"all": [{"attribute": "vip", "exists": True}]}, {"c01", "c04"}),
    ({"all": [{"attribute": "score", "lt": 4}]}, {"c05"}),
    ({"all": [{"attribute": "score", "gt": 4}]}, {"c01"}),
    ({"all": [{"attribute": "zip", "equals": "0123"}]}, {"c01"}),
    ({"all": [{"attribute": "nickname", "contains": "50%"}]}, {"c09"}),
    ({"all": [{"attribute": "Nick Name", "exists": True}]}, set()),
    ({"all": [{"attribute": "nickname", "exists": True}]}, {"c08", "c09"}),
    # tags and consent
    ({"all": [{"tag": "vip"}]}, {"c01", "c04"}),
    ({"all": [{"tag": "VIP"}]}, {"c01", "c04"}),
    ({"all": [{"any_tag": ["staff", "newsletter"]}]}, {"c02", "c04", "c08"}),
    ({"not": {"tag": "vip"}}, {"c02", "c03", "c05", "c06", "c07", "c08", "c09"}),
    ({"all": [{"consent": "email"}]}, {"c01", "c02", "c04", "c06"}),
    ({"all": [{"consent": "sms"}]}, {"c02", "c04", "c05"}),
    # purchases
    ({"all": [{"purchased": {"category": "cosmetics", "within_days": 365}}]}, {"c01", "c03", "c05", "c06"}),
    ({"all": [{"purchased": {"category": "Cosmetics"}}]}, {"c01", "c02", "c03", "c05", "c06"}),
    ({"all": [{"purchased": {"sku": "DRESS-9"}}, {"attribute": "gender", "equals": "male"}]}, {"c04"}),
    ({"all": [{"purchased": {"sku": ["LIP-2", "LIP-3"]}}]}, {"c03", "c05"}),
    ({"all": [{"purchased": {"category": "cosmetics", "min_count": 2}}]}, {"c05"}),
    ({"all": [{"purchased": {"category": "cosmetics", "min_amount": 25}}]}, {"c01", "c05", "c06"}),
    ({"all": [{"purchased": {"category": "cosmetics", "min_amount": 40}}]}, {"c01"}),
    ({"all": [{"purchased": {"category": ["cosmetics", "skincare"], "min_amount": 220}}]}, {"c03"}),
    ({"all": [{"purchased": {"category": "cosmetics", "within_days": 60}}]}, {"c05"}),
    # searches: case-insensitive substring, LIKE wildcards taken literally
    ({"all": [{"searched": {"terms": ["lipstick"]}}]}, {"c04", "c07"}),
    ({"all": [{"searched": {"terms": ["lipstick"], "within_days": 30}}]}, {"c04"}),
    ({"all": [{"searched": {"terms": ["50%_"]}}]}, {"c04"}),
    ({"all": [{"searched": {"terms": ["50%"]}}]}, {"c04"}),
    ({"all": [{"searched": {"terms": ["MOTHER'S DAY", "nothing"]}}]}, {"c01"}),
    # combinations
    (
        {
            "all": [
                {"attribute": "gender", "equals": "female"},
                {"attribute": "age", "between": [30, 50]},
                {"purchased": {"category": "cosmetics", "within_days": 365}},
            ],
            "exclude_tags": ["staff"],
        },
        {"c01", "c05"},
    ),
    ({"any": [{"tag": "vip"}, {"attribute": "country", "equals": "JP"}]}, {"c01", "c04", "c06"}),
    (
        {"all": [{"any": [{"tag": "vip"}, {"tag": "staff"}]}, {"not": {"attribute": "gender", "equals": "male"}}]},
        {"c01", "c02"},
    ),
    ({"any": [{"attribute": "age", "lt": 30}], "not": {"attribute": "country", "equals": "IN"}}, {"c03"}),
    ({"exclude_tags": ["newsletter", "staff"]}, {"c01", "c03", "c05", "c06", "c07", "c09"}),
    ({}, {f"c{i:02d}" for i in range(1, 10)}),
]


async def test_every_condition_selects_exactly_the_expected_contacts(engine: AsyncEngine, tmp_path: Path) -> None:
    await load_population(engine, tmp_path)
    wrong = {}
    async with engine.connect() as conn:
        for audience, expected in CASES:
            where = audience_filter(Audience.model_validate(audience), NOW)
            got = set((await conn.execute(select(contacts.c.external_id).where(where))).scalars())
            if got != expected:
                wrong[str(audience)] = {"missing": sorted(expected - got), "unexpected": sorted(got - expected)}
    assert wrong == {}


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()])
def test_values_are_bound_parameters_never_sql_text(dialect: Any) -> None:
    hostile = "x'); DROP TABLE contacts; --"
    audience = Audience.model_validate(
        {
            "all": [
                {"attribute": hostile, "equals": hostile},
                {"attribute": "email", "contains": hostile},
                {"searched": {"terms": [hostile]}},
                {"tag": hostile},
            ]
        }
    )
    sql = str(select(contacts.c.id).where(audience_filter(audience, NOW)).compile(dialect=dialect))
    assert "DROP TABLE" not in sql


def test_bad_conditions_raise_segment_errors() -> None:
    for audience in (
        {"all": [{"attribute": "age", "contains": "3"}]},
        {"all": [{"attribute": "age", "gte": "thirty"}]},
        {"all": [{"attribute": "birth_date", "gte": "not a date"}]},
        {"all": [{"attribute": "vip", "gte": True}]},
    ):
        with pytest.raises(SegmentError):
            audience_filter(Audience.model_validate(audience), NOW)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        audience_filter(Audience.model_validate({}), NOW.replace(tzinfo=None))


@given(
    birth=st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)),
    today=st.dates(min_value=date(1950, 1, 1), max_value=date(2040, 12, 31)),
    years=st.integers(min_value=0, max_value=130),
)
def test_age_cutoff_matches_calendar_age(birth: date, today: date, years: int) -> None:
    # the SQL uses "born on or before years_before(today, n)" for "age >= n"
    assert (birth <= years_before(today, years)) == (age_on(birth, today) >= years)


def test_leap_day_birthdays() -> None:
    born = date(2000, 2, 29)
    assert age_on(born, date(2027, 2, 28)) == 26
    assert age_on(born, date(2027, 3, 1)) == 27
    assert years_before(date(2028, 2, 29), 1) == date(2027, 2, 28)
    assert years_before(date(2028, 2, 29), 4) == date(2024, 2, 29)
    assert years_before(date(2027, 5, 6), 30) + timedelta(days=1) == date(1997, 5, 7)
