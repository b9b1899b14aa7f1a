"""The planning facade: a campaign × a stream of contacts → ledger row dicts, in constant memory.

All contacts that share a zone and a holiday country share the same slots, so the slots are
planned once per (zone, country) and each contact only costs a few dict look-ups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from topslot.attribution.holdout import in_holdout
from topslot.campaign import Campaign
from topslot.delivery import DeliveryState as S
from topslot.delivery import SkipReason, SlotBasis
from topslot.pacing import QuietRules
from topslot.planning.slot_choice import SlotChooser, SlotHistory
from topslot.planning.slot_instant import local_slot_instant, zone_info
from topslot.planning.slots import PlannedSlot, SlotPlan, lateness, plan_slots
from topslot.planning.timezone_resolution import TzSource, recipient_zone
from topslot.planning.workdays import WorkdayCalendar, supported_countries
from topslot.planning.zones import available_zones, center_zone, is_zone, region_for_phone

LedgerRow = dict[str, Any]


class PlanContact(NamedTuple):
    """What planning needs to know about one contact of the audience."""

    id: int | str
    timezone: str | None
    phone: str | None  # E.164
    country: str | None  # ISO 3166 alpha-2
    channels: tuple[str, ...]  # channels this contact may receive (consent, address, not suppressed)
    history: SlotHistory | None = None  # slot_choice learned: the contact's record per slot

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> PlanContact:
        return cls(
            id=row["id"] if "id" in row else row["contact_id"],
            timezone=row.get("timezone"),
            phone=row.get("phone"),
            country=row.get("country"),
            channels=tuple(row.get("channels") or ()),
        )


EARLIER_CHANNEL = "earlier_channel"
"""Left-out reason: ``first_available`` reaches the contact on an earlier channel of the list."""
NO_LATER_SLOT = "no_later_slot"
"""Left-out reason: ``fallback`` found no slot after the previous channel's for this channel."""


class _Placement(NamedTuple):
    zone: str  # the zone the slots are planned in
    tz_source: TzSource
    country: str  # holiday calendar and quiet-hour rules
    own_zone: str  # the recipient's own zone: quiet hours are judged in it
    low_confidence_skip: bool  # every row skipped / low_confidence_zone


class _Rows(NamedTuple):
    rows: tuple[LedgerRow, ...]  # the per-contact part (contact, channel, slot basis) is added per contact
    days_off: tuple[tuple[str, int], ...]


class Planner:
    """Plans one campaign as seen at ``now``; feed it contacts batch by batch.

    ``plan_batch`` yields ledger row dicts ``{campaign_id, contact_id, channel, slot_date, slot,
    due_utc, timezone, tz_source, country, slot_basis, fallback_of, local_time, state, skip_reason,
    late}`` where ``state`` is ``planned`` or ``skipped`` (``skip_reason`` ``missed_slot``,
    ``quiet_hours``, ``low_confidence_zone``, or ``holdout`` for every row a held-out contact would
    have had: ``topslot.attribution.holdout``). Left-out counts (holiday, weekend, day_not_listed,
    missed_slot, no_channel, holdout, quiet_hours, earlier_channel, no_later_slot, ...) accumulate in
    ``left_out``, per contact × channel (× slot for ``every_slot``).

    The campaign's rules apply in this order: the contact's zone (``low_confidence_zone``), its slot
    (``slot_choice``, ``topslot.planning.slot_choice``), its channels (``channel_strategy``), then each
    channel's quiet hours (``quiet_hours``, ``topslot.pacing``).
    """

    def __init__(
        self,
        campaign: Campaign,
        now: datetime,
        *,
        default_timezone: str,
        default_country: str,
        calendar: WorkdayCalendar | None = None,
        quiet: QuietRules | None = None,
        population: SlotHistory | None = None,
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
        self.quiet = quiet or QuietRules.none()
        self.chooser = SlotChooser(campaign, population)
        self.left_out: Counter[str] = Counter()
        self.contacts_seen = 0
        self.rows_planned = 0
        self.rows_skipped = 0
        self.zone_sources: Counter[tuple[str, str]] = Counter()  # (channel, tz_source) → recipients
        self.slot_bases: Counter[tuple[str, str, str]] = Counter()  # (channel, slot, basis) → recipients
        self._channels = tuple(campaign.channels)
        self._strategy = campaign.channel_strategy
        self._holdout = campaign.holdout
        self._zones = available_zones()
        self._countries = supported_countries()
        self._fixed_zone = self.schedule.timezone != "recipient"
        self._fallback_zone = self.schedule.fallback_timezone or default_timezone
        self._placements: dict[tuple[str, str, str, str], _Placement] = {}
        self._known: dict[tuple[str | None, str], _Placement] = {}
        self._slot_plans: dict[tuple[str, str, str | None], SlotPlan] = {}
        self._rows: dict[tuple[_Placement, str | None, str, int], _Rows | None] = {}

    # ------------------------------------------------------------ public

    def plan(self, batches: Iterable[Iterable[PlanContact]]) -> Iterator[LedgerRow]:
        for batch in batches:
            yield from self.plan_batch(batch)

    def plan_batch(self, contacts: Iterable[PlanContact]) -> Iterator[LedgerRow]:
        campaign_channels = self._channels
        left_out, zone_sources, slot_bases = self.left_out, self.zone_sources, self.slot_bases
        campaign_id, holdout = self.campaign.id, self._holdout
        fallback = self._strategy == "fallback"
        choose = self.chooser.choose if self.chooser.mode != "first" else None
        first = (None, SlotBasis.FIRST)
        for contact in contacts:
            self.contacts_seen += 1
            if contact.channels == campaign_channels:
                channels = campaign_channels
            else:
                channels = tuple(ch for ch in campaign_channels if ch in contact.channels)
                if not channels:
                    left_out["no_channel"] += 1
                    continue
            if self._strategy == "first_available" and len(channels) > 1:
                left_out[EARLIER_CHANNEL] += len(channels) - 1
                channels = channels[:1]
            placement = self._placement(contact)
            slot, basis = choose(contact.id, contact.history) if choose is not None else first
            contact_id = contact.id
            held = holdout and in_holdout(campaign_id, contact_id, holdout)
            previous: str | None = None
            for index, channel in enumerate(channels):
                rows = self._rows_for(placement, slot, channel, index if fallback else 0)
                if rows is None:
                    left_out[NO_LATER_SLOT] += 1
                    break
                zone_sources[(channel, placement.tz_source)] += 1
                slot_bases[(channel, slot or "", basis)] += 1
                for reason, count in rows.days_off:
                    left_out[reason] += count
                for base in rows.rows:
                    if held:
                        base = self._held(base)
                    if base["state"] == S.PLANNED:
                        self.rows_planned += 1
                    else:
                        self.rows_skipped += 1
                        left_out[base["skip_reason"]] += 1
                    yield {
                        **base,
                        "contact_id": contact_id,
                        "channel": channel,
                        "slot_basis": basis,
                        "fallback_of": previous,
                    }
                if fallback:
                    previous = channel  # the next channel is sent only if this one got no human engagement

    def placement_for(self, contact: PlanContact) -> tuple[str, TzSource, str]:
        """(zone, tz_source, holiday country) chosen for a contact."""
        placement = self._placement(contact)
        return placement.zone, placement.tz_source, placement.country

    # ------------------------------------------------------------ internals

    @staticmethod
    def _held(base: LedgerRow) -> LedgerRow:
        """A holdout contact's row: what would have been planned is ``skipped`` / ``holdout``."""
        if base["state"] != S.PLANNED:
            return base
        return {**base, "state": S.SKIPPED, "skip_reason": SkipReason.HOLDOUT, "late": False}

    def _placement(self, contact: PlanContact) -> _Placement:
        tz, country = contact.timezone, contact.country
        # Fast path: zone and country known, the phone is not needed.
        if tz in self._zones and country in self._countries:
            key = (tz, country)
            placement = self._known.get(key)
            if placement is None:
                placement = self._resolved(contact)
                self._known[key] = placement
            return placement
        return self._resolved(contact)

    def _resolved(self, contact: PlanContact) -> _Placement:
        own_zone, own_source = recipient_zone(contact.timezone, contact.phone, contact.country, self._fallback_zone)
        region = None
        country = contact.country
        if country not in self._countries or own_source == "fallback":
            region = region_for_phone(contact.phone)
        if country not in self._countries:
            country = self.calendar.country_for(country, region, self.schedule.default_country)
        skip = False
        if own_source == "fallback":
            mode = self.schedule.low_confidence_zone
            center = center_zone(contact.country or region) if mode == "country_center" else None
            if center is not None:
                own_zone, own_source = center, "country_center"
            skip = mode == "skip"
        zone, tz_source = (self.schedule.timezone, "campaign") if self._fixed_zone else (own_zone, own_source)
        key = (zone, tz_source, country, own_zone)
        placement = self._placements.get(key)
        if placement is None:
            placement = _Placement(zone, tz_source, country, own_zone, skip and not self._fixed_zone)  # type: ignore[arg-type]
            self._placements[key] = placement
        return placement

    def _slot_plan(self, placement: _Placement, slot: str | None, every: bool) -> SlotPlan:
        key = (placement.zone, placement.country, slot if not every else f"*{slot}")
        plan = self._slot_plans.get(key)
        if plan is None:
            schedule = self.schedule
            if slot is not None:
                schedule = schedule.model_copy(update={"slots": [slot]})
            if every:
                schedule = schedule.model_copy(update={"per_recipient": "every_slot", "slots": self.schedule.slots})
            plan = plan_slots(schedule, placement.zone, placement.country, self.now, calendar=self.calendar)
            self._slot_plans[key] = plan
        return plan

    def _rows_for(self, placement: _Placement, slot: str | None, channel: str, fallback_index: int) -> _Rows | None:
        """The rows of a contact of ``placement`` on ``channel`` given its chosen ``slot`` (None: any),
        as the ``fallback_index``-th fallback channel (0: not a fallback); None when a fallback has no
        later slot."""
        key = (placement, slot, channel, fallback_index)
        if key in self._rows:
            return self._rows[key]
        plan = self._slot_plan(placement, slot, every=False)
        planned, skipped, days_off = plan.planned, plan.skipped, tuple(plan.days_off.items())
        if fallback_index:
            first = planned[0].due_utc if planned else None
            every = self._slot_plan(placement, None, every=True).planned
            later = [s for s in every if first is not None and s.due_utc > first]
            if len(later) < fallback_index:
                self._rows[key] = None
                return None
            planned, skipped, days_off = (later[fallback_index - 1],), (), ()
        common = {
            "campaign_id": self.campaign.id,
            "timezone": placement.zone,
            "tz_source": placement.tz_source,
            "country": placement.country,
        }
        rows = [self._planned_row(common, slot_, placement, channel) for slot_ in planned]
        rows += [
            {
                **common,
                "slot_date": slot_.slot_date,
                "slot": slot_.slot,
                "due_utc": slot_.due_utc,
                "local_time": slot_.local_time,
                "state": S.SKIPPED,
                "skip_reason": slot_.reason,
                "late": False,
            }
            for slot_ in skipped
        ]
        if placement.low_confidence_skip:
            rows = [
                {**row, "state": S.SKIPPED, "skip_reason": SkipReason.LOW_CONFIDENCE_ZONE, "late": False}
                if row["state"] == S.PLANNED
                else row
                for row in rows
            ]
        result = _Rows(tuple(rows), days_off)
        self._rows[key] = result
        return result

    def _planned_row(self, common: dict[str, Any], slot: PlannedSlot, placement: _Placement, channel: str) -> LedgerRow:
        row = {
            **common,
            "slot_date": slot.slot_date,
            "slot": slot.slot,
            "due_utc": slot.due_utc,
            "local_time": slot.local_time,
            "state": S.PLANNED,
            "skip_reason": None,
            "late": slot.late,
        }
        own_local = slot.due_utc.astimezone(zone_info(placement.own_zone))
        window = self.quiet.quiet_at(channel, placement.country, own_local)
        if window is None:
            return row
        if self.campaign.quiet_hours != "shift":  # skip, or refuse where validation could not tell
            return {**row, "state": S.SKIPPED, "skip_reason": SkipReason.QUIET_HOURS, "late": False}
        opening = window.opening(own_local)
        due = local_slot_instant(opening.date(), f"{opening:%H:%M}", placement.own_zone)
        return {
            **row,
            "due_utc": due,
            "local_time": due.astimezone(zone_info(placement.zone)),
            "late": lateness(due, self.now, self.schedule.missed_slot.grace) == "late",
        }


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
