"""The campaign domain model: what a marketer writes in ``config/campaigns/*.yaml``.

Pure: no I/O. Loading YAML and locating errors lives in ``topslot.config``; this module only says
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
    PlainSerializer,
    StrictBool,
    StringConstraints,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from topslot.channel import Channel
from topslot.links.urls import normalise_url
from topslot.links.utm import with_utm
from topslot.patterns import ContentSid, ProviderName

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_SLOT_RE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DURATION_RE = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FieldError(ValueError):
    """A model-level check that blames one field: ``loc`` is relative to the model that raises it.

    ``topslot.config`` appends ``loc`` to pydantic's location so the message points at that key.
    """

    def __init__(self, message: str, *loc: str | int):
        super().__init__(message)
        self.loc = loc


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


def format_duration(value: timedelta) -> str:
    """timedelta → the shortest text ``parse_duration`` reads back (``"1h30m"``, ``"90s"`` → ``"1m30s"``)."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


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
        raise ValueError("a share must be at least 0% and below 100%")
    return float(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": r"^(\d+d)?(\d+h)?(\d+m)?(\d+s)?$", "examples": ["10m", "1h30m", "90s"]}
    ),
]
SlotTime = Annotated[
    str,
    AfterValidator(_check_slot),
    WithJsonSchema({"type": "string", "pattern": _SLOT_RE.pattern, "examples": ["07:30", "17:00"]}),
]
ZoneName = Annotated[
    str,
    AfterValidator(_check_zone),
    WithJsonSchema({"type": "string", "description": "IANA time zone", "examples": ["Asia/Shanghai"]}),
]
CountryCode = Annotated[
    str, AfterValidator(_check_country), WithJsonSchema({"type": "string", "pattern": "^[A-Z]{2}$"})
]
Percent = Annotated[
    float,
    BeforeValidator(_parse_percent),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"},
                {"type": "number", "minimum": 0, "maximum": 1},
            ]
        }
    ),
]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Scalar = str | int | float | bool | date


# ---------------------------------------------------------------- audience (segments)


class AttributeCondition(Model):
    """A test on a contact field (gender, age, country, ...) or an imported attribute.

    Exactly one operator: equals, not_equals, in, between, gte, lte, gt, lt, contains, exists.
    """

    attribute: Name = Field(description="Contact field (first_name, gender, age, country, ...) or imported attribute")
    equals: Scalar | None = Field(default=None, description="Equal to this value")
    not_equals: Scalar | None = Field(default=None, description="Different from this value (or missing)")
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1, description="One of these values")
    between: tuple[Scalar, Scalar] | None = Field(default=None, description="[low, high], both included")
    gte: Scalar | None = Field(default=None, description="Greater than or equal to")
    lte: Scalar | None = Field(default=None, description="Less than or equal to")
    gt: Scalar | None = Field(default=None, description="Greater than")
    lt: Scalar | None = Field(default=None, description="Less than")
    contains: str | None = Field(default=None, description="Text contains this (case-insensitive)")
    exists: StrictBool | None = Field(default=None, description="true: the contact has a value; false: none")

    @model_validator(mode="after")
    def _one_operator(self) -> AttributeCondition:
        ops = [name for name in self.operator_names() if getattr(self, name) is not None]
        if len(ops) != 1:
            allowed = ", ".join(n.rstrip("_") for n in self.operator_names())
            raise ValueError(f"give exactly one operator for attribute '{self.attribute}' ({allowed})")
        if self.between is not None and _gt(self.between[0], self.between[1]):
            raise FieldError(
                f"between [{self.between[0]}, {self.between[1]}]: the low bound is above the high bound", "between"
            )
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
    """Which purchases count. Omitted keys do not filter."""

    category: Name | list[Name] | None = Field(default=None, description="Product category, or a list of them")
    sku: Name | list[Name] | None = Field(default=None, description="Product SKU, or a list of them")
    within_days: int | None = Field(default=None, gt=0, le=36500, description="Only purchases in the last N days")
    min_amount: Decimal | None = Field(default=None, ge=0, description="Only purchases of at least this amount")
    min_count: int = Field(default=1, ge=1, description="At least this many matching purchases")


class PurchasedCondition(Model):
    """Bought something (in a category / of a SKU) within N days."""

    purchased: PurchaseFilter


class SearchFilter(Model):
    """Which searches count."""

    terms: list[Name] = Field(min_length=1, description="Search terms; any one matches (case-insensitive substring)")
    within_days: int | None = Field(default=None, gt=0, le=36500, description="Only searches in the last N days")


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
    """Every condition in the list holds."""

    all: list[Condition] = Field(min_length=1)


class AnyOf(Model):
    """At least one condition in the list holds."""

    any: list[Condition] = Field(min_length=1)


class NotCondition(Model):
    """The condition does not hold."""

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
    Union[  # noqa: UP007 - a union of Annotated members reads best spelled out
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

    all: list[Condition] | None = Field(default=None, min_length=1, description="Every condition must hold")
    any: list[Condition] | None = Field(default=None, min_length=1, description="At least one must hold")
    not_: Condition | None = Field(default=None, alias="not", description="This condition must not hold")
    exclude_tags: list[Name] = Field(default_factory=list, description="Contacts with any of these tags are left out")


# ---------------------------------------------------------------- schedule


class MissedSlot(Model):
    """What to do when a slot's time has passed before it was sent (daemon down, file added late)."""

    grace: Duration = Field(
        default=timedelta(minutes=15),
        description="Still send if at most this late",
        json_schema_extra={"default": "15m"},
    )
    then: Literal["next_slot", "skip"] = Field(
        default="next_slot", description="Later than grace: move to the next eligible slot, or skip"
    )


class Schedule(Model):
    """When messages arrive: each slot in each recipient's local time, on the chosen days."""

    start: date = Field(description="First day (inclusive, local date), YYYY-MM-DD")
    end: date = Field(description="Last day (inclusive, local date), YYYY-MM-DD")
    slots: list[SlotTime] = Field(
        default_factory=lambda: ["07:30", "17:00"], min_length=1, description='Local arrival times, quoted "HH:MM"'
    )
    timezone: Literal["recipient"] | ZoneName = Field(
        default="recipient", description="'recipient' (each contact's own zone) or one IANA zone for everybody"
    )
    fallback_timezone: ZoneName | None = Field(
        default=None, description="Zone for contacts whose zone cannot be found (default: the settings' zone)"
    )
    default_country: CountryCode | None = Field(
        default=None, description="Holiday calendar for contacts without a country (default: the settings')"
    )
    days: Literal["every_day", "workdays"] | list[Weekday] = Field(
        default="workdays", description="every_day, workdays (recipient's country's holidays) or [mon, tue, ...]"
    )
    per_recipient: Literal["once", "every_slot"] = Field(
        default="once", description="once: the first eligible slot; every_slot: every eligible slot start..end"
    )
    arrive_within: Duration = Field(
        default=timedelta(minutes=10),
        description="Hand the whole slot to the channel in this window before it",
        json_schema_extra={"default": "10m"},
    )
    missed_slot: MissedSlot = Field(default_factory=MissedSlot)
    low_confidence_zone: Literal["fallback", "skip", "country_center"] = Field(
        default="fallback",
        description="A contact whose zone is only guessed (a country with several zones, or nothing): plan "
        "in the fallback zone, skip the contact, or use the country's representative zone "
        "(America/Chicago for US)",
    )

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
            raise FieldError(f"end {self.end} is before start {self.start}", "end")
        return self


# ---------------------------------------------------------------- coupons, links, content, costs


class GeneratedCoupons(Model):
    """Generate a unique random code per recipient."""

    prefix: Annotated[str, Field(pattern=r"^[A-Z0-9]{0,12}$")] = Field(
        default="", description="Uppercase letters/digits put in front of every code"
    )
    length: int = Field(
        default=10,
        ge=6,
        le=32,
        description="Characters after the prefix, the last a check character (10 tells 33 million contacts apart)",
    )


class Coupon(Model):
    """One unique coupon code per recipient: generated, or taken from an imported pool."""

    generate: GeneratedCoupons | None = None
    pool: Name | None = Field(default=None, description="Name of an imported coupon pool")
    on_exhausted: Literal["pause", "skip", "send_without"] = Field(
        default="pause", description="When the pool runs out: pause the campaign, skip the recipient, or send without"
    )
    expires: date | None = Field(default=None, description="Last day the codes are valid")

    @model_validator(mode="after")
    def _one_source(self) -> Coupon:
        if (self.generate is None) == (self.pool is None):
            raise ValueError("a coupon needs exactly one source: 'generate' or 'pool'")
        return self


class LandingPage(Model):
    """Where the message's main link goes; every link is rewritten into a signed tracked link."""

    url: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+[^\s]*$", max_length=2000)] = Field(
        description="http(s) address of the landing page"
    )
    utm: dict[Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")], Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict, description="UTM parameters added to the URL (utm_ prefix added); {channel} is replaced"
    )

    @field_validator("url")
    @classmethod
    def _linkable(cls, value: str) -> str:
        normalise_url(value)  # raises InvalidLink (a ValueError) for credentials, bad ports or hosts
        return value


class Tracking(Model):
    """What is tracked. The unsubscribe link is always signed and always works, whatever this says."""

    opens: StrictBool = Field(default=True, description="Add an open-tracking pixel to HTML email")
    clicks: StrictBool = Field(
        default=True, description="Rewrite links into signed tracked links; false: links go straight to their page"
    )


class EmailContent(Model):
    """The email: sender, subject (a template string) and template files under templates/."""

    from_: Annotated[str, Field(alias="from", min_length=3, max_length=300)] = Field(
        description='Sender, e.g. "Example Shop <news@shop.example.com>"'
    )
    reply_to: str | None = Field(default=None, description="Reply-To address")
    subject: Annotated[str, Field(min_length=1, max_length=500)] = Field(
        description="Subject line; a Jinja2 template like the files"
    )
    html: Name = Field(description="HTML template file, relative to templates/")
    text: Name | None = Field(default=None, description="Plain-text template file, relative to templates/")


class SmsContent(Model):
    """The SMS text."""

    body: Name = Field(description="SMS template file, relative to templates/")


class ImContent(Model):
    """The instant message: a text body and a card (title, the tracked landing link as a button, the
    coupon); for WhatsApp an approved template (content SID) and its variables."""

    body: Name = Field(description="IM template file, relative to templates/")
    provider: ProviderName | None = Field(
        default=None,
        description="IM provider name from the settings (im: <name>); contacts carry their id on it as im_<name>",
    )
    title: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Card title; a Jinja2 template string like the subject"
    )
    button: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        default="Shop now", description="Label of the button that opens the (tracked) landing page"
    )
    content_sid: ContentSid | None = Field(
        default=None, description="WhatsApp: the approved template's content SID (HX...)"
    )
    variables: dict[Annotated[str, Field(pattern=r"^[0-9]{1,2}$")], Annotated[str, Field(max_length=1024)]] = Field(
        default_factory=dict,
        description='WhatsApp: the template\'s variables by number, each a Jinja2 template string, e.g. {"1": '
        '"{{ contact.first_name }}", "2": "{{ coupon }}", "3": "{{ track(landing_url) }}"}',
    )


class Content(Model):
    """What is sent on each channel; every channel in ``channels`` needs its section."""

    email: EmailContent | None = None
    sms: SmsContent | None = None
    im: ImContent | None = None


MAX_CATEGORIES = 500
CategoryName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")]
Margin = Annotated[Decimal, Field(ge=0, le=1)]


class Costs(Model):
    """Cost of one message per channel, for ROI reports."""

    email: Decimal = Field(default=Decimal(0), ge=0, description="Cost of one email")
    sms: Decimal = Field(default=Decimal(0), ge=0, description="Cost of one SMS segment")
    im: Decimal = Field(default=Decimal(0), ge=0, description="Cost of one instant message")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = Field(default="USD", description="ISO 4217 code")
    margin: Decimal | None = Field(
        default=None, ge=0, le=1, description="Gross margin (0-1) to turn revenue into profit"
    )
    fixed: Decimal = Field(
        default=Decimal(0),
        ge=0,
        description="Fixed cost of the whole campaign (creative, agency, tools), added once to its promotion cost",
    )
    category_margins: dict[CategoryName, Margin] = Field(
        default_factory=dict,
        max_length=MAX_CATEGORIES,
        description=(
            "Gross margin (0-1) per product category: an order whose event names a category listed here "
            "uses it (an order's own margin comes first, costs.margin is the fallback)"
        ),
    )

    def margin_of(self, own: Decimal | None, category: str | None) -> Decimal | None:
        """The margin an order is counted at: its own, else its category's, else ``margin``."""
        if own is not None:
            return own
        if category is not None and category in self.category_margins:
            return self.category_margins[category]
        return self.margin


class Attribution(Model):
    """How conversions are credited to this campaign (coupon codes always count, whenever used)."""

    click_window: Duration = Field(
        default=timedelta(days=7),
        description="An order counts for the campaign if placed at most this long after a click on its link",
        json_schema_extra={"default": "7d"},
    )

    @field_validator("click_window")
    @classmethod
    def _window(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(days=365):
            raise ValueError("click_window must be more than 0 and at most 365d")
        return value


class CampaignCompliance(Model):
    """Legal markings topslot adds to this campaign's messages."""

    cn_ad_prefix: StrictBool = Field(
        default=True,
        description="Start the email subject with the settings' compliance.cn_ad_prefix (e.g. 【广告】) "
        "for recipients whose country is CN, as Chinese law asks of commercial email",
    )


# ---------------------------------------------------------------- pacing and slot choice


class FrequencyCap(Model):
    """At most ``max`` messages on a channel to one contact within any ``per``, all campaigns together."""

    max: int = Field(ge=1, le=1000, description="Messages allowed within the period")
    per: Duration = Field(description="The period, e.g. '7d'", json_schema_extra={"examples": ["7d", "24h"]})

    @field_validator("per")
    @classmethod
    def _period(cls, value: timedelta) -> timedelta:
        if not timedelta(hours=1) <= value <= timedelta(days=366):
            raise ValueError("per must be at least 1h and at most 366d")
        return value

    def __str__(self) -> str:
        return f"{self.max} per {format_duration(self.per)}"


class LearnedSlots(Model):
    """How ``slot_choice: learned`` weighs a contact's history of human opens and clicks per slot."""

    exploration: Percent = Field(
        default=0.1, description="Share of recipients given a random slot, to keep learning (e.g. '10%')"
    )
    prior_weight: float = Field(
        default=2.0,
        gt=0,
        le=1000,
        description="How many messages' worth of the population's rate each contact's estimate starts from",
    )
    history: Duration = Field(
        default=timedelta(days=365),
        description="Only messages sent within this period count",
        json_schema_extra={"default": "365d"},
    )


# ---------------------------------------------------------------- the campaign


class Campaign(Model):
    """One marketing campaign: one file in config/campaigns/."""

    model_config = ConfigDict(title="topslot campaign")

    id: Annotated[str, Field(pattern=_ID_RE.pattern)] = Field(
        description="Unique id: lowercase letters, digits, - and _; never change it once sending started"
    )
    name: Name = Field(description="Human-readable name for plans and reports")
    channels: list[Channel] = Field(min_length=1, description="Channels to send on: email, sms, im")
    audience: Audience
    schedule: Schedule
    coupon: Coupon | None = None
    landing_page: LandingPage
    tracking: Tracking = Field(default_factory=Tracking)
    content: Content
    costs: Costs = Field(default_factory=Costs)
    holdout: Percent = Field(default=0.0, description="Share of the audience kept out as a control group, e.g. '5%'")
    attribution: Attribution = Field(default_factory=Attribution)
    compliance: CampaignCompliance = Field(default_factory=CampaignCompliance)
    quiet_hours: Literal["refuse", "shift", "skip"] = Field(
        default="refuse",
        description="A slot inside a channel's quiet hours (settings quiet_hours) for some recipients: refuse "
        "the campaign, shift those messages to when the quiet hours end, or skip them",
    )
    frequency_cap: dict[Channel, FrequencyCap | None] = Field(
        default_factory=dict,
        description="Per channel, replaces the settings' frequency_caps for this campaign's messages "
        "(null: no cap for them)",
    )
    channel_strategy: Literal["all", "first_available", "fallback"] = Field(
        default="all",
        description="all: every listed channel; first_available: the first listed channel the contact can "
        "receive; fallback: the first at the first slot, the next at a later slot only if the first got no "
        "human open or click by then",
    )
    slot_choice: Literal["first", "split", "learned"] = Field(
        default="first",
        description="first: the first eligible slot; split: each recipient assigned one slot at random (a "
        "fair comparison of the slots); learned: the slot with the recipient's better record of human "
        "opens and clicks",
    )
    learned: LearnedSlots = Field(default_factory=LearnedSlots)

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
            sections = " and ".join(f"content.{ch}" for ch in missing)
            listed = ", ".join(missing)
            verb = "is" if len(missing) == 1 else "are"
            raise FieldError(f"{sections} {verb} required because channels lists {listed}", "content")
        if self.slot_choice != "first" and len(self.schedule.slots) < 2:
            raise FieldError(f"slot_choice: {self.slot_choice} needs at least two slots to choose from", "slot_choice")
        if self.channel_strategy == "fallback" and len(self.channels) < 2:
            raise FieldError("channel_strategy: fallback needs at least two channels", "channel_strategy")
        if self.channel_strategy == "fallback" and self.schedule.per_recipient != "once":
            raise FieldError(
                "channel_strategy: fallback sends each channel once; it needs per_recipient: once", "channel_strategy"
            )
        unused = sorted(set(self.frequency_cap) - set(self.channels))
        if unused:
            raise FieldError(f"frequency_cap names {', '.join(unused)}, which channels does not list", "frequency_cap")
        return self

    def landing_url(self, channel: str) -> str:
        """The landing page URL with its UTM parameters (see ``topslot.links.utm.with_utm``)."""
        return with_utm(self.landing_page.url, self.landing_page.utm, channel)

    def provider_for(self, channel: str) -> str | None:
        """The provider this campaign asks for on ``channel`` (``content.im.provider``), if any."""
        return getattr(getattr(self.content, channel, None), "provider", None)


for _model in (AllOf, AnyOf, NotCondition, Audience, Campaign):
    _model.model_rebuild()
