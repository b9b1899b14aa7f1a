"""What one bucket's send came to, in this process: how many rows ended in which state, how many
messages the providers accepted, and when — the first and last acceptance and every one after the
slot. The dispatcher adds each chunk's outcomes; helper processes send theirs back with the bucket's
reply; the scheduler merges them and logs ``bucket_finished`` (``topslot.scheduling.scheduler``).

Times are the dispatcher's clock (the same clock the plan runs on), taken as each provider's answer
arrives, not when the chunk is committed: "accepted after the slot" means the provider said yes
after the slot.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

BucketKey = tuple[str, str, datetime]  # (campaign id, channel, due_utc)


@dataclass
class BucketTally:
    """One bucket's send so far. ``merge`` adds another process's tally of the same bucket."""

    due_utc: datetime
    outcomes: Counter[str] = field(default_factory=Counter)  # state written → rows
    accepted: int = 0  # messages a provider took (sent)
    late: int = 0  # of those, accepted after the slot
    max_late_s: float = 0.0  # the latest of them, in seconds after the slot
    first_send: datetime | None = None  # the first chunk marked sending
    first_accepted: datetime | None = None
    last_accepted: datetime | None = None
    paced: int = 0  # accepted with their chunk (not stragglers): what the throughput counts
    last_paced: datetime | None = None

    def started(self, at: datetime) -> None:
        """A chunk is about to go on the wire at ``at``."""
        if self.first_send is None or at < self.first_send:
            self.first_send = at

    def add(self, state: str, accepted_at: datetime | None = None, *, straggler: bool = False) -> None:
        """One row's outcome; ``accepted_at``: when its provider accepted it (a sent row);
        ``straggler``: answered after its chunk had moved on (not counted in the throughput)."""
        self.outcomes[str(state)] += 1
        if accepted_at is None:
            return
        self.accepted += 1
        if not straggler:
            self.paced += 1
            self.last_paced = max(self.last_paced or accepted_at, accepted_at)
        self.first_accepted = min(self.first_accepted or accepted_at, accepted_at)
        self.last_accepted = max(self.last_accepted or accepted_at, accepted_at)
        late_s = (accepted_at - self.due_utc).total_seconds()
        if late_s > 0:
            self.late += 1
            self.max_late_s = max(self.max_late_s, late_s)

    def merge(self, other: BucketTally) -> None:
        self.outcomes.update(other.outcomes)
        self.accepted += other.accepted
        self.paced += other.paced
        self.late += other.late
        self.max_late_s = max(self.max_late_s, other.max_late_s)
        for name, pick in (("first_send", min), ("first_accepted", min), ("last_accepted", max), ("last_paced", max)):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, pick(mine, theirs) if mine and theirs else mine or theirs)

    def throughput(self) -> float | None:
        """Messages accepted with their chunks per second of clock time, from the first chunk to the
        last of them (stragglers, a few recipients a server stalled on, say nothing of the route's
        pace); None when too little was sent over too short a time to say (under 2 s)."""
        if self.first_send is None or self.last_paced is None:
            return None
        seconds = (self.last_paced - self.first_send).total_seconds()
        return self.paced / seconds if seconds >= 2 else None
