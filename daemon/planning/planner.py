"""The planning facade: a campaign × a stream of contacts → ledger row dicts, in constant memory.

All contacts that share a zone and a holiday country share the same slots, so the slots are
planned once per (zone, country) and each contact only costs a few dict look-ups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from daemon.attribution.holdout import in_holdout
from daemon.campaign import Campaign
from daemon.delivery import DeliveryState as S
from daemon.delivery import SkipReason, SlotBasis
from daemon.planning.slots import SlotPlan, plan_slots
from daemon.planning.timezone_resolution import TzSource, resolve_timezone
from daemon.planning.workdays import WorkdayCalendar, supported_countries
from daemon.planning.zones import available_zones, is_zone, region_for_phone

LedgerRow = dict[str, Any]


class PlanContact(NamedTuple):
    """What planning needs to know about one contact of the audience."""

    id: int | str
    timezone: str | None
    phone: str | None  # E.164
    country: str | None  # ISO 3166 alpha-2
    channels: tuple[str, ...]  # channels this contact may receive (consent, address, not suppressed)

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> PlanContact:
        return cls(
            id=row["id"] if "id" in row else row["contact_id"],
            timezone=row.get("timezone"),
            phone=row.get("phone"),
            country=row.get("country"),
            channels=tuple(row.get("channels") or ()),
        )


class _Placement(NamedTuple):
    zone: str
    tz_source: TzSource
    country: str
    rows: tuple[LedgerRow, ...]  # the per-contact part is added per contact
    days_off: tuple[tuple[str, int], ...]


class Planner:
    """Plans one campaign as seen at ``now``; feed it contacts batch by batch.

    ``plan_batch`` yields ledger row dicts ``{campaign_id, contact_id, channel, slot_date, slot,
    due_utc, timezone, tz_source, local_time, country, state, skip_reason, late}`` where ``state`` is
    ``planned`` or ``skipped`` (``skip_reason`` ``missed_slot``, or ``holdout`` for every row a
    held-out contact would have had: ``daemon.attribution.holdout``). Left-out counts (holiday,
    weekend, day_not_listed, missed_slot, no_channel, holdout) accumulate in ``left_out``, per
    contact × channel (× slot for ``every_slot``).
    """

    def __init__(
        self,
        campaign: Campaign,
        now: datetime,
        *,
        default_timezone: str,
        default_country: str,
        calendar: WorkdayCalendar | None = None,
    ):
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if not is_zone(default_timezone):
            raise ValueError(f"default time zone '{default_timezone}' is not an IANA zone")
        self.campaign = campaign
        self.schedule = campaign.schedule
        self.now = now.astimezone(UTC)
        self.default_timezone = default_timezone
        self.calendar = calendar or WorkdayCalendar(default_country)
        self.left_out: Counter[str] = Counter()
        self.contacts_seen = 0
        self.rows_planned = 0
        self.rows_skipped = 0
        self.zone_sources: Counter[tuple[str, str]] = Counter()  # (channel, tz_source) → recipients
        self._channels = tuple(campaign.channels)
        self._holdout = campaign.holdout
        self._zones = available_zones()
        self._countries = supported_countries()
        self._fixed_zone = self.schedule.timezone != "recipient"
        self._placements: dict[tuple[str, str, str], _Placement] = {}
        self._known: dict[tuple[str | None, str], _Placement] = {}
        self._slot_plans: dict[tuple[str, str], SlotPlan] = {}

    # ------------------------------------------------------------ public

    def plan(self, batches: Iterable[Iterable[PlanContact]]) -> Iterator[LedgerRow]:
        for batch in batches:
            yield from self.plan_batch(batch)

    def plan_batch(self, contacts: Iterable[PlanContact]) -> Iterator[LedgerRow]:
        campaign_channels = self._channels
        left_out = self.left_out
        for contact in contacts:
            self.contacts_seen += 1
            if contact.channels == campaign_channels:
                channels = campaign_channels
            else:
                channels = tuple(ch for ch in campaign_channels if ch in contact.channels)
                if not channels:
                    left_out["no_channel"] += 1
                    continue
            placement = self._placement(contact)
            for channel in channels:
                self.zone_sources[(channel, placement.tz_source)] += 1
            for reason, count in placement.days_off:
                left_out[reason] += count * len(channels)
            contact_id = contact.id
            if self._holdout and in_holdout(self.campaign.id, contact_id, self._holdout):
                yield from self._held_out(placement, contact_id, channels)
                continue
            for base in placement.rows:
                for channel in channels:
                    yield {**base, "contact_id": contact_id, "channel": channel}
                if base["state"] == S.PLANNED:
                    self.rows_planned += len(channels)
                else:
                    self.rows_skipped += len(channels)
                    left_out[SkipReason.MISSED_SLOT] += len(channels)

    def placement_for(self, contact: PlanContact) -> tuple[str, TzSource, str]:
        """(zone, tz_source, holiday country) chosen for a contact."""
        placement = self._placement(contact)
        return placement.zone, placement.tz_source, placement.country

    # ------------------------------------------------------------ internals

    def _held_out(self, placement: _Placement, contact_id: int | str, channels: tuple[str, ...]) -> Iterator[LedgerRow]:
        """A holdout contact's rows: what would have been planned is ``skipped`` / ``holdout``."""
        for base in placement.rows:
            held = base["state"] == S.PLANNED
            row = {**base, "state": S.SKIPPED, "skip_reason": SkipReason.HOLDOUT, "late": False} if held else base
            for channel in channels:
                yield {**row, "contact_id": contact_id, "channel": channel}
            self.rows_skipped += len(channels)
            self.left_out[SkipReason.HOLDOUT if held else SkipReason.MISSED_SLOT] += len(channels)

    def _placement(self, contact: PlanContact) -> _Placement:
        tz, country = contact.timezone, contact.country
        # Fast path: zone and country known, the phone is not needed.
        if (self._fixed_zone or tz in self._zones) and country in self._countries:
            key = (tz, country)
            placement = self._known.get(key)
            if placement is None:
                placement = self._resolved(contact)
                self._known[key] = placement
            return placement
        return self._resolved(contact)

    def _resolved(self, contact: PlanContact) -> _Placement:
        zone, tz_source = resolve_timezone(
            contact.timezone, contact.phone, contact.country, self.schedule, self.default_timezone
        )
        country = contact.country
        if country not in self._countries:
            country = self.calendar.country_for(country, region_for_phone(contact.phone), self.schedule.default_country)
        key = (zone, tz_source, country)
        placement = self._placements.get(key)
        if placement is None:
            placement = self._new_placement(zone, tz_source, country)
            self._placements[key] = placement
        return placement

    def _new_placement(self, zone: str, tz_source: TzSource, holiday_country: str) -> _Placement:
        plan = self._slot_plans.get((zone, holiday_country))
        if plan is None:
            plan = plan_slots(self.schedule, zone, holiday_country, self.now, calendar=self.calendar)
            self._slot_plans[(zone, holiday_country)] = plan
        common = {
            "campaign_id": self.campaign.id,
            "timezone": zone,
            "tz_source": tz_source,
            "country": holiday_country,
            "slot_basis": SlotBasis.FIRST,
        }
        rows = [
            {
                **common,
                "slot_date": slot.slot_date,
                "slot": slot.slot,
                "due_utc": slot.due_utc,
                "local_time": slot.local_time,
                "state": S.PLANNED,
                "skip_reason": None,
                "late": slot.late,
            }
            for slot in plan.planned
        ]
        rows += [
            {
                **common,
                "slot_date": slot.slot_date,
                "slot": slot.slot,
                "due_utc": slot.due_utc,
                "local_time": slot.local_time,
                "state": S.SKIPPED,
                "skip_reason": slot.reason,
                "late": False,
            }
            for slot in plan.skipped
        ]
        return _Placement(zone, tz_source, holiday_country, tuple(rows), tuple(plan.days_off.items()))


def plan_rows(
    campaign: Campaign,
    batches: Iterable[Iterable[PlanContact]],
    now: datetime,
    *,
    default_timezone: str,
    default_country: str,
) -> tuple[Planner, Iterator[LedgerRow]]:
    """Convenience: a planner and the stream of its rows (read ``planner.left_out`` once consumed)."""
    planner = Planner(campaign, now, default_timezone=default_timezone, default_country=default_country)
    return planner, planner.plan(batches)
