"""Which one of a campaign's slots a recipient gets (``slot_choice``), and why (pure).

- ``first``: no choice; every slot is a candidate (the first eligible one for ``once``).
- ``split``: one slot per recipient by a keyed hash of the contact (BLAKE2b keyed with the campaign
  id, its own personalisation, so independent of the holdout's hash): uniform over the slots, stable
  across re-plans, independent between campaigns. The slots form a randomised comparison.
- ``learned``: the slot with the better estimate of the recipient's human engagement (a human open
  or click on a message sent at that slot, in any campaign within ``learned.history``), an empirical
  Bayes estimate: each slot's rate starts from the population's rate at that slot with the weight of
  ``learned.prior_weight`` messages, then the recipient's own messages count one each::

      estimate(slot) = (engaged(slot) + w * population_rate(slot)) / (messages(slot) + w)

  A recipient without any history at these slots gets the campaign's first slot (``default``);
  where estimates tie, the slot tried least. A share ``learned.exploration`` of recipients, drawn
  by another keyed hash, gets a slot at random as in ``split`` (``exploration``), so evidence keeps
  coming for every slot.

``SlotBasis`` (``topslot.delivery``) names each reason; randomised ones (split, exploration) are what
the report presents as causal evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from topslot.attribution.holdout import keyed_score
from topslot.campaign import Campaign
from topslot.delivery import SlotBasis

_SPLIT = b"topslot-slot"
_EXPLORE = b"topslot-explore"
UNKNOWN_RATE = 0.1
"""The prior mean of a slot the population has no messages at yet (and no other slot either)."""


class Record(NamedTuple):
    """Messages sent at one slot, and how many of them got a human open or click."""

    messages: int
    engaged: int


SlotHistory = Mapping[str, tuple[int, int]]
"""Slot ("HH:MM") → record: one contact's, or the whole population's."""


def split_slot(campaign_id: str, contact_id: int | str, slots: tuple[str, ...]) -> str:
    """The slot ``split`` assigns (each with probability 1/len(slots))."""
    return slots[int(keyed_score(campaign_id, contact_id, _SPLIT) * len(slots))]


class SlotChooser:
    """``choose(contact_id, history)`` → (the slot, or None for every slot; its ``SlotBasis``)."""

    def __init__(self, campaign: Campaign, population: SlotHistory | None = None):
        self.campaign_id = campaign.id
        self.mode = campaign.slot_choice
        self.slots = tuple(campaign.schedule.slots)
        self.exploration = campaign.learned.exploration
        self.weight = campaign.learned.prior_weight
        self.prior = population_rates(self.slots, population or {})

    def choose(self, contact_id: int | str, history: SlotHistory | None = None) -> tuple[str | None, SlotBasis]:
        if self.mode == "first":
            return None, SlotBasis.FIRST
        if self.mode == "split":
            return split_slot(self.campaign_id, contact_id, self.slots), SlotBasis.SPLIT
        if self.exploration and keyed_score(self.campaign_id, contact_id, _EXPLORE) < self.exploration:
            return split_slot(self.campaign_id, contact_id, self.slots), SlotBasis.EXPLORATION
        return self.learned(history)

    def learned(self, history: SlotHistory | None) -> tuple[str, SlotBasis]:
        """The slot with the best estimate; the first slot (``default``) without history."""
        default = self.slots[0]
        if not history or not any(history.get(s, (0, 0))[0] for s in self.slots):
            return default, SlotBasis.DEFAULT
        estimates = {slot: self.estimate(slot, history.get(slot)) for slot in self.slots}
        best = max(estimates.values())
        leaders = [slot for slot, value in estimates.items() if best - value < 1e-12]
        # A tie: the slot tried least (it has the most to tell), the earlier one among equals.
        least = min(leaders, key=lambda slot: history.get(slot, (0, 0))[0])
        return least, SlotBasis.HISTORY

    def estimate(self, slot: str, record: tuple[int, int] | None) -> float:
        messages, engaged = record if record is not None else (0, 0)
        return (engaged + self.weight * self.prior[slot]) / (messages + self.weight)


def population_rates(slots: tuple[str, ...], population: SlotHistory) -> dict[str, float]:
    """Each slot's share of engaged messages; a slot without messages takes the rate of all slots
    together, and without any message at all ``UNKNOWN_RATE``."""
    records = [Record(*population.get(s, (0, 0))) for s in slots]
    messages = sum(r.messages for r in records)
    engaged = sum(r.engaged for r in records)
    overall = engaged / messages if messages else UNKNOWN_RATE
    return {slot: r.engaged / r.messages if r.messages else overall for slot, r in zip(slots, records, strict=True)}
