"""A delivery's life in the ledger: its states, the groups every reader uses, and what one send
attempt decides (pure; the store writes it, the dispatcher and the webhooks produce it).

::

    planned ─claim─▶ claimed ─▶ sending ─▶ sent ─(receipt)─▶ delivered | bounced
       │                │          ├─▶ retry_wait (not accepted, safe to retry) ─▶ claimed
       │                │          ├─▶ failed (refused for good)
       │                │          └─▶ unknown (the provider may have it: never resent automatically)
       └─▶ skipped (reason: no_consent | suppressed | missed_slot | coupon_exhausted | holdout | cancelled | ...)

Each state is defined once here; SQL, reports and the CLI read the enum and its groups, never a
string of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class DeliveryState(StrEnum):
    PLANNED = "planned"
    CLAIMED = "claimed"  # leased to one process, nothing handed over yet
    SENDING = "sending"  # the hand-over may be under way
    SENT = "sent"  # the provider accepted it (its id in provider_id)
    DELIVERED = "delivered"  # the provider reported delivery to the handset or mailbox
    BOUNCED = "bounced"  # the provider reported it undeliverable after accepting it
    RETRY_WAIT = "retry_wait"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"


S = DeliveryState

HANDED_OVER: frozenset[DeliveryState] = frozenset({S.SENT, S.DELIVERED, S.BOUNCED})
"""Accepted by the provider: what the report counts as sent and what costs money."""

MAYBE_HANDED_OVER: frozenset[DeliveryState] = HANDED_OVER | {S.UNKNOWN}
"""Perhaps in the recipient's hands: the treated group of the holdout comparison."""

IN_FLIGHT: frozenset[DeliveryState] = frozenset({S.CLAIMED, S.SENDING})
"""Leased to a process right now: recovered (claimed → planned, sending → unknown) when it dies."""

WAITING: frozenset[DeliveryState] = frozenset({S.PLANNED, S.RETRY_WAIT})
"""Still to be sent (first time or again)."""

FINAL: frozenset[DeliveryState] = frozenset({S.SENT, S.DELIVERED, S.BOUNCED, S.FAILED, S.UNKNOWN, S.SKIPPED})
"""Nothing more happens without a person (or a receipt: sent → delivered | bounced)."""

ATTEMPT_OUTCOMES: frozenset[DeliveryState] = frozenset({S.SENT, S.RETRY_WAIT, S.FAILED, S.UNKNOWN})
"""What one send attempt can end in (``Decision.state``)."""

RECEIPTS: frozenset[DeliveryState] = frozenset({S.DELIVERED, S.BOUNCED})
"""What a provider's later report (status callback, bounce) turns a ``sent`` row into."""

RECEIPT_STATUSES: dict[str, DeliveryState] = {
    "delivered": S.DELIVERED,
    "read": S.DELIVERED,
    "undelivered": S.BOUNCED,
    "failed": S.BOUNCED,
}
"""A status callback's final status words (Twilio's, which the IM gateway contract takes over) → the
receipt; any other word (queued, sent, ...) is not final and changes nothing."""


class SkipReason(StrEnum):
    """Why a row is ``skipped``: each reason is defined once here."""

    NO_ADDRESS = "no_address"  # the contact has no address on the channel
    NO_CONSENT = "no_consent"
    SUPPRESSED = "suppressed"  # unsubscribed, hard bounce, STOP
    MISSED_SLOT = "missed_slot"  # the slot's grace was over before it could go
    REPLANNED = "replanned"  # a new plan moved the contact to another slot
    LEFT_SEGMENT = "left_segment"  # no longer in the campaign's audience
    HOLDOUT = "holdout"  # in the campaign's control group: never sent, measured
    COUPON_EXHAUSTED = "coupon_exhausted"
    QUIET_HOURS = "quiet_hours"  # the slot (or a late bucket's hour) is inside the channel's quiet hours
    FREQUENCY_CAP = "frequency_cap"  # the contact already had the channel's cap of messages in the period
    LOW_CONFIDENCE_ZONE = "low_confidence_zone"  # the zone is only guessed and the campaign skips such contacts
    ENGAGED = "engaged"  # a fallback not needed: the earlier channel's message got a human open or click
    CANCELLED = "cancelled"  # ``topslot campaigns cancel``: the campaign was retired before this row was sent


R = SkipReason

PLAN_SKIP_REASONS: frozenset[SkipReason] = frozenset(
    {
        R.MISSED_SLOT, R.REPLANNED, R.LEFT_SEGMENT, R.NO_CONSENT, R.SUPPRESSED, R.NO_ADDRESS, R.QUIET_HOURS,
        R.FREQUENCY_CAP, R.LOW_CONFIDENCE_ZONE,
    }
)  # fmt: skip
"""Skips a later plan may undo (the contact is back, the slot moved)."""

INELIGIBLE: tuple[SkipReason, ...] = (R.NO_ADDRESS, R.NO_CONSENT, R.SUPPRESSED)
"""Why a contact of the audience is left out on a channel, in the order they are checked."""


class SlotBasis(StrEnum):
    """Why a row has its slot (``deliveries.slot_basis``; ``slot_choice`` in the campaign)."""

    FIRST = "first"  # the first eligible slot (slot_choice: first), or every slot (every_slot)
    SPLIT = "split"  # assigned at random (slot_choice: split): a fair comparison of the slots
    EXPLORATION = "exploration"  # learned, but in the exploration share: assigned at random
    HISTORY = "history"  # learned from the contact's record of human opens and clicks per slot
    DEFAULT = "default"  # learned, but no history tells the slots apart: the campaign's first slot


RANDOMISED: frozenset[SlotBasis] = frozenset({SlotBasis.SPLIT, SlotBasis.EXPLORATION})
"""Slots assigned at random: the rows whose slot comparison is causal evidence."""


class SuppressionReason(StrEnum):
    """Why an address is on the suppression list (``suppressions.reason``)."""

    UNSUBSCRIBE = "unsubscribe"  # the recipient unsubscribed (one-click link, mailto)
    HARD_BOUNCE = "hard_bounce"  # the address does not exist (5.1.1, invalid number)
    SMS_STOP = "sms_stop"  # replied STOP (or Twilio 21610): a later START lifts it
    SMS_UNDELIVERABLE = "sms_undeliverable"  # the carrier says the number cannot take SMS: START keeps it
    IM_BLOCKED = "im_blocked"  # the recipient blocked the sender on that IM network (Telegram 403)
    FORGOTTEN = "forgotten"  # ``topslot contacts forget``: the person's data was erased; never contact again
    MANUAL = "manual"  # added by hand (``topslot suppressions add``) or imported from another tool
    COMPLAINT = "complaint"  # the recipient reported a message as spam (an ARF feedback report)
    SOFT_BOUNCES = "soft_bounces"  # soft bounces repeated bounces.soft_limit times (mailbox full for weeks)


@dataclass(frozen=True, slots=True)
class Decision:
    """What one send attempt means for its ledger row (``topslot.dispatch.policy`` decides it)."""

    state: DeliveryState  # one of ATTEMPT_OUTCOMES
    provider_id: str | None = None
    next_attempt_utc: datetime | None = None
    error: str | None = None
    suppress: bool = False  # the address is dead (hard bounce, STOP): add it to the suppressions
    suppress_reason: SuppressionReason = SuppressionReason.HARD_BOUNCE
