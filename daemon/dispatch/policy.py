"""What a send attempt's outcome means for its ledger row. Pure: the dispatcher applies the decision.

- accepted → ``sent`` (with the provider's id);
- TransientSendError → ``retry_wait`` with exponential backoff, as long as the retry still lands
  within the slot's grace; otherwise ``failed`` (a 07:30 message is never sent at 14:00);
- PermanentSendError → ``failed``; ``suppress`` adds the address to the suppression list;
- AmbiguousSendError (or anything unexpected once the message may have left) → ``unknown``,
  never resent automatically (``topslot deliveries retry --state unknown`` resends by hand).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from topslot.delivery import Decision
from topslot.delivery import DeliveryState as S
from topslot.errors import AmbiguousSendError, PermanentSendError, SendError, TransientSendError

BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(minutes=10)
MAX_ATTEMPTS = 8
ERROR_TEXT_MAX = 500


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    """30 s, 60 s, 2 min, 4 min, 8 min, then 10 min; a server's own hint wins when longer."""
    delay = min(BACKOFF_BASE * (2 ** max(0, attempts - 1)), BACKOFF_CAP)
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return delay


def accepted(provider_id: str) -> Decision:
    return Decision(S.SENT, provider_id=provider_id)


def after_error(error: BaseException, *, attempts: int, now: datetime, retry_until: datetime) -> Decision:
    """``attempts`` counts this attempt; ``retry_until`` is the last instant a retry may start."""
    text = describe(error)
    if isinstance(error, TransientSendError):
        at = now + backoff(attempts, error.retry_after)
        if attempts >= MAX_ATTEMPTS:
            return Decision(S.FAILED, error=f"gave up after {attempts} attempts: {text}")
        if at > retry_until:
            return Decision(S.FAILED, error=f"no retry before the slot's grace ends: {text}")
        return Decision(S.RETRY_WAIT, next_attempt_utc=at, error=text)
    if isinstance(error, PermanentSendError):
        return Decision(S.FAILED, error=text, suppress=error.suppress, suppress_reason=error.suppress_reason)
    if isinstance(error, AmbiguousSendError):
        return Decision(S.UNKNOWN, error=text)
    return Decision(S.UNKNOWN, error=f"unexpected {type(error).__name__}: {text}")


def describe(error: BaseException) -> str:
    code = getattr(error, "code", None) if isinstance(error, SendError) else None
    text = f"{code} {error}" if code is not None else str(error) or type(error).__name__
    return text.replace("\r", " ").replace("\n", " ")[:ERROR_TEXT_MAX]
