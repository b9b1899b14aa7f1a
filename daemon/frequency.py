"""Frequency caps across campaigns: at most ``max`` messages on a channel to one contact within
``per``, all campaigns together (pure; the store counts, ``topslot.store.frequency``).

Which cap applies to a campaign's messages on a channel (``effective_cap``): the campaign's
``frequency_cap`` entry for the channel if it has one (``null``: its messages there are exempt),
else the settings' ``frequency_caps`` entry, else none.

What counts: the contact's rows on the channel, in any campaign, that may be in the recipient's
hands or are about to be (``COUNTED``: sent, delivered, bounced, unknown, claimed, sending). A
message at instant D is allowed while fewer than ``max`` counted messages lie less than ``per``
away from D, before or after it (``allowed``). For ``max: 1`` that is exactly "no two messages
within ``per``"; for a larger ``max`` it is a little stricter than a sliding window (never looser).

A plan (``cap_plan_rows``) also counts the rows other campaigns still have ``planned`` (first
planned, first served) and the campaign's own earlier rows of the same plan (an ``every_slot``
campaign can reach a cap by itself); rows over the cap are written ``skipped`` / ``frequency_cap``,
which a later plan may undo. The claim is the authoritative check (another campaign may have sent
in between): ``topslot.store.frequency.skip_over_cap``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from topslot.campaign import Campaign, FrequencyCap
from topslot.delivery import IN_FLIGHT, MAYBE_HANDED_OVER
from topslot.delivery import DeliveryState as S
from topslot.delivery import SkipReason as R

if TYPE_CHECKING:  # the settings depend on the store, which uses this module
    from topslot.settings import Settings

COUNTED: frozenset[S] = MAYBE_HANDED_OVER | IN_FLIGHT
"""States of a row that count against a cap: perhaps in the recipient's hands, or about to be."""


def effective_cap(campaign: Campaign, settings: Settings, channel: str) -> FrequencyCap | None:
    """The cap on ``campaign``'s messages on ``channel``: its own ``frequency_cap`` entry when it
    names the channel (None there: exempt), else the settings' ``frequency_caps`` entry, else None."""
    for named, own in campaign.frequency_cap.items():
        if named == channel:
            return own
    return next((cap for named, cap in settings.frequency_caps.items() if named == channel), None)


def allowed(due: datetime, others: Iterable[datetime], cap: FrequencyCap) -> bool:
    """Whether a message at ``due`` stays within ``cap`` beside the counted messages ``others``."""
    near = sum(1 for other in others if abs(other - due) < cap.per)
    return near < cap.max


SlotKey = tuple[Any, date, str]  # (contact_id, slot_date, slot) of one campaign and channel


@dataclass
class Counted:
    """What a plan batch is checked against, for one campaign and channel (``topslot.store.frequency``).

    ``due``: contact → due instants of counted rows (any campaign) and of other campaigns' planned
    rows. ``handed_over``: this campaign's own rows already handed over (their key): a plan does not
    rewrite them, so the planner's row with that key is no new message (and already in ``due``)."""

    due: dict[Any, list[datetime]] = field(default_factory=dict)
    handed_over: set[SlotKey] = field(default_factory=set)


def cap_plan_rows(
    rows: Sequence[Mapping[str, Any]], cap: FrequencyCap, counted: Counted
) -> tuple[list[dict[str, Any]], int]:
    """Planner rows of one channel with every planned row over ``cap`` turned ``skipped`` /
    ``frequency_cap``; and how many were. A contact's rows are taken in due order, each one it
    keeps counting against its later ones."""
    out = [dict(r) for r in rows]
    kept: dict[Any, list[datetime]] = {}
    capped = 0
    for row in sorted((r for r in out if r["state"] == S.PLANNED), key=lambda r: r["due_utc"]):
        contact = row["contact_id"]
        if (contact, row["slot_date"], row["slot"]) in counted.handed_over:
            continue
        mine = kept.setdefault(contact, [])
        if allowed(row["due_utc"], [*counted.due.get(contact, ()), *mine], cap):
            mine.append(row["due_utc"])
        else:
            row.update(state=S.SKIPPED, skip_reason=R.FREQUENCY_CAP, late=False)
            capped += 1
    return out, capped
