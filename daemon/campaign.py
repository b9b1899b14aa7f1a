"""The campaign domain model: what a marketer writes in ``config/campaigns/*.yaml``.

Pure: no I/O. Loading YAML and locating errors lives in ``daemon.config``; this module only says
what a valid campaign is. Every model forbids unknown keys and is frozen.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

CHANNELS = ("email", "sms", "im")
Channel = Literal["email", "sms", "im"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_SLOT_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DURATION_RE = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- small value types


def parse_duration(value: Any) -> timedelta:
    """``"10m"``, ``"1h30m"``, ``"90s"``, ``"2d"`` → timedelta. Bare numbers are refused (unit unknown)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or isinstance(value, int | float):
        raise ValueError(f"a duration needs a unit, e.g. '{value}m' (s, m, h or d)")
    if not isinstance(value, str):
        raise ValueError("a duration is text such as '10m', '1h30m' or '90s'")
    m = _DURATION_RE.match(value)
    if not value.strip() or not m or not any(m.groups()):
        raise ValueError(f"'{value}' is not a duration; write e.g. '10m', '1h30m' or '90s'")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def _check_slot(value: str) -> str:
    if not _SLOT_RE.match(value):
        raise ValueError(f"slot '{value}' is not HH:MM (24-hour, two digits each, e.g. '07:30')")
    return value


def _check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{value}' is not an IANA time zone (e.g. 'Asia/Shanghai', 'America/New_York')") from None
    return value


def _check_country(value: str) -> str:
    if not re.fullmatch(r"[A-Z]{2}", value):
        raise ValueError(f"'{value}' is not an ISO 3166 alpha-2 country code such as 'CN' or 'US'")
    return value


def _parse_percent(value: Any) -> float:
    if isinstance(value, str):
        m = _PERCENT_RE.match(value)
        if not m:
            raise ValueError(f"'{value}' is not a percentage such as '5%'")
        value = float(m.group(1)) / 100
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a percentage is written like '5%'")
    if not 0 <= value < 1:
        raise ValueError("a holdout must be at least 0% and below 100%")
    return float(value)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
SlotTime = Annotated[str, AfterValidator(_check_slot)]
ZoneName = Annotated[str, AfterValidator(_check_zone)]
CountryCode = Annotated[str, AfterValidator(_check_country)]
Percent = Annotated[float, BeforeValidator(_parse_percent)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Scalar = Union[str, int, float, bool, date]


# ---------------------------------------------------------------- audience (segments)


class AttributeCondition(Model):
    """A test on a contact field (gender, age, country, ...) or an imported attribute.

    Exactly one operator: equals, not_equals, in, between, gte, lte, gt, lt, contains, exists.
    """

    attribute: Name
    equals: Scalar | None = None
    not_equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    between: tuple[Scalar, Scalar] | None = None
    gte: Scalar | None = None
    lte: Scalar | None = None
    gt: Scalar | None = None
    lt: Scalar | None = None
    contains: str | None = None
    exists: bool | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> AttributeCondition:
        ops = [name for name in self.operator_names() if getattr(self, name) is not None]
        if len(ops) != 1:
            allowed = ", ".join(n.rstrip("_") for n in self.operator_names())
            raise ValueError(f"give exactly one operator for attribute '{self.attribute}' ({allowed})")
        if self.between is not None and _gt(self.between[0], self.between[1]):
            raise ValueError(f"between [{self.between[0]}, {self.between[1]}]: the low bound is above the high bound")
        return self

    @staticmethod
    def operator_names() -> tuple[str, ...]:
        return ("equals", "not_equals", "in_", "between", "gte", "lte", "gt", "lt", "contains", "exists")

    @property
    def operator(self) -> tuple[str, Any]:
        for name in self.operator_names():
            value = getattr(self, name)
            if value is not None:
                return name.rstrip("_"), value
        raise AssertionError("validated model has an operator")


def _gt(a: Any, b: Any) -> bool:
    try:
        return a > b
    except TypeError:
        return False


class PurchaseFilter(Model):
    category: Name | list[Name] | None = None
    sku: Name | list[Name] | None = None
    within_days: int | None = Field(default=None, gt=0, le=36500)
    min_amount: Decimal | None = Field(default=None, ge=0)
    min_count: int = Field(default=1, ge=1)


class PurchasedCondition(Model):
    """Bought something (in a category / of a SKU) within N days."""

    purchased: PurchaseFilter


class SearchFilter(Model):
    terms: list[Name] = Field(min_length=1)
    within_days: int | None = Field(default=None, gt=0, le=36500)


class SearchedCondition(Model):
    """Searched for any of the terms (case-insensitive substring) within N days."""

    searched: SearchFilter


class TagCondition(Model):
    """Has this tag."""

    tag: Name


class AnyTagCondition(Model):
    """Has at least one of these tags."""

    any_tag: list[Name] = Field(min_length=1)


class ConsentCondition(Model):
    """Has granted consent for this channel (always required for the channel it is sent on)."""

    consent: Channel


class AllOf(Model):
    all: list[Condition] = Field(min_length=1)


class AnyOf(Model):
    any: list[Condition] = Field(min_length=1)


class NotCondition(Model):
    not_: Condition = Field(alias="not")


_CONDITION_KEYS = {
    "attribute": "attribute",
    "purchased": "purchased",
    "searched": "searched",
    "tag": "tag",
    "any_tag": "any_tag",
    "consent": "consent",
    "all": "all",
    "any": "any",
    "not": "not",
}


def condition_kind(value: Any) -> str | None:
    """Which condition a mapping is, by the first key that names one (None: no such key)."""
    if isinstance(value, BaseModel):
        return {
            AttributeCondition: "attribute",
            PurchasedCondition: "purchased",
            SearchedCondition: "searched",
            TagCondition: "tag",
            AnyTagCondition: "any_tag",
            ConsentCondition: "consent",
            AllOf: "all",
            AnyOf: "any",
            NotCondition: "not",
        }.get(type(value))
    if isinstance(value, dict):
        for key in value:
            if key in _CONDITION_KEYS:
                return _CONDITION_KEYS[key]
    return None


Condition = Annotated[
    Union[
        Annotated[AttributeCondition, Tag("attribute")],
        Annotated[PurchasedCondition, Tag("purchased")],
        Annotated[SearchedCondition, Tag("searched")],
        Annotated[TagCondition, Tag("tag")],
        Annotated[AnyTagCondition, Tag("any_tag")],
        Annotated[ConsentCondition, Tag("consent")],
        Annotated[AllOf, Tag("all")],
        Annotated[AnyOf, Tag("any")],
        Annotated[NotCondition, Tag("not")],
    ],
    Discriminator(
        condition_kind,
        custom_error_type="unknown_condition",
        custom_error_message=(
            "a condition needs one of: attribute, purchased, searched, tag, any_tag, consent, all, any, not"
        ),
    ),
]


class Audience(Model):
    """Who the campaign is for. Conditions under ``all`` must all hold; under ``any`` at least one."""

    all: list[Condition] | None = Field(default=None, min_length=1)
    any: list[Condition] | None = Field(default=None, min_length=1)
    not_: Condition | None = Field(default=None, alias="not")
    exclude_tags: list[Name] = Field(default_factory=list)


# ---------------------------------------------------------------- schedule


class MissedSlot(Model):
    grace: Duration = timedelta(minutes=15)
    then: Literal["next_slot", "skip"] = "next_slot"


class Schedule(Model):
    start: date
    end: date
    slots: list[SlotTime] = Field(default_factory=lambda: ["07:30", "17:00"], min_length=1)
    timezone: Literal["recipient"] | ZoneName = "recipient"
    fallback_timezone: ZoneName | None = None
    default_country: CountryCode | None = None
    days: Literal["every_day", "workdays"] | list[Weekday] = "workdays"
    per_recipient: Literal["once", "every_slot"] = "once"
    arrive_within: Duration = timedelta(minutes=10)
    missed_slot: MissedSlot = Field(default_factory=MissedSlot)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date_only(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
            raise ValueError(f"'{value}' is not a date; write YYYY-MM-DD, e.g. 2027-05-06")
        return value

    @field_validator("slots")
    @classmethod
    def _unique_slots(cls, slots: list[str]) -> list[str]:
        dupes = sorted({s for s in slots if slots.count(s) > 1})
        if dupes:
            raise ValueError(f"slot {', '.join(dupes)} is listed twice")
        return sorted(slots)

    @field_validator("days")
    @classmethod
    def _unique_days(cls, days: Any) -> Any:
        if isinstance(days, list):
            if not days:
                raise ValueError("days needs at least one weekday, or 'every_day' / 'workdays'")
            if len(set(days)) != len(days):
                raise ValueError("a weekday is listed twice in days")
        return days

    @field_validator("arrive_within")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(hours=6):
            raise ValueError("arrive_within must be more than 0 and at most 6h")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Schedule:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


# ---------------------------------------------------------------- coupons, links, content, costs


class GeneratedCoupons(Model):
    prefix: Annotated[str, Field(pattern=r"^[A-Z0-9]{0,12}$")] = ""
    length: int = Field(default=10, ge=6, le=32)


class Coupon(Model):
    generate: GeneratedCoupons | None = None
    pool: Name | None = None
    on_exhausted: Literal["pause", "skip", "send_without"] = "pause"
    expires: date | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Coupon:
        if (self.generate is None) == (self.pool is None):
            raise ValueError("a coupon needs exactly one source: 'generate' or 'pool'")
        return self


class LandingPage(Model):
    url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+[^\s]*$", max_length=2000)]
    utm: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")], Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict
    )


class EmailContent(Model):
    from_: Annotated[str, Field(alias="from", min_length=3, max_length=300)]
    reply_to: str | None = None
    subject: Annotated[str, Field(min_length=1, max_length=500)]
    html: Name
    text: Name | None = None


class SmsContent(Model):
    body: Name


class ImContent(Model):
    body: Name
    provider: Name | None = None


class Content(Model):
    email: EmailContent | None = None
    sms: SmsContent | None = None
    im: ImContent | None = None


class Costs(Model):
    email: Decimal = Field(default=Decimal(0), ge=0)
    sms: Decimal = Field(default=Decimal(0), ge=0)
    im: Decimal = Field(default=Decimal(0), ge=0)
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    margin: Decimal | None = Field(default=None, ge=0, le=1)


# ---------------------------------------------------------------- the campaign


class Campaign(Model):
    id: Annotated[str, Field(pattern=_ID_RE.pattern)]
    name: Name
    channels: list[Channel] = Field(min_length=1)
    audience: Audience
    schedule: Schedule
    coupon: Coupon | None = None
    landing_page: LandingPage
    content: Content
    costs: Costs = Field(default_factory=Costs)
    holdout: Percent = 0.0

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, channels: list[str]) -> list[str]:
        if len(set(channels)) != len(channels):
            raise ValueError("a channel is listed twice")
        return channels

    @model_validator(mode="after")
    def _content_per_channel(self) -> Campaign:
        missing = [ch for ch in self.channels if getattr(self.content, ch) is None]
        if missing:
            raise ValueError(f"content.{missing[0]} is required because channels lists '{missing[0]}'")
        return self

    def template_names(self) -> dict[tuple[str, ...], str]:
        """Template files this campaign names, keyed by their path in the YAML."""
        names: dict[tuple[str, ...], str] = {}
        c = self.content
        if c.email:
            names[("content", "email", "html")] = c.email.html
            if c.email.text:
                names[("content", "email", "text")] = c.email.text
        if c.sms:
            names[("content", "sms", "body")] = c.sms.body
        if c.im:
            names[("content", "im", "body")] = c.im.body
        return names


for _model in (AllOf, AnyOf, NotCondition, Audience, Campaign):
    _model.model_rebuild()
