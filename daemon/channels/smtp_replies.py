"""SMTP replies → topslot send errors (pure).

The decision, in order:

1. **Transient or permanent** comes from the basic reply code (RFC 5321 §4.2.1): 4xx → transient,
   5xx → permanent. The basic code is what every server gets right; the enhanced code only refines.
2. **Hard bounce** (``PermanentSendError(suppress=True)``: the address itself is dead) is decided only
   for replies about the recipient (RCPT, or the reply to the message body), never for MAIL FROM
   (that rejects *our* sender):

   - when the reply carries an RFC 3463 enhanced status code, that code alone decides: 5.1.0 other
     address status, 5.1.1 bad mailbox, 5.1.2 bad domain, 5.1.3 bad address syntax, 5.1.6 mailbox
     moved, 5.1.10 null MX (RFC 7505), 5.2.1 mailbox disabled. Anything else (5.2.2 mailbox full,
     5.7.x policy/spam, 5.5.x protocol…) is a permanent failure of *this message*, not a dead address;
   - without one, a 550/551/553 whose text says the user is unknown / does not exist / is disabled.
3. **retry_after hints** for transient replies: policy or greylisting (4.7.x, "greylist") → 300 s;
   otherwise none (the dispatcher's backoff decides).

Server-level replies (421 "closing channel", 530 "authentication required") are failures of the
server, not the message: ``is_server_problem`` tells the pool to mark the server down and fail over.
"""

from __future__ import annotations

import re
from typing import Literal

from topslot.errors import PermanentSendError, SendError, TransientSendError

Stage = Literal["connect", "mail", "rcpt", "data", "body", "after_dot"]
"""Where a send stood: connecting (greeting/EHLO/TLS/AUTH), MAIL FROM, RCPT TO, DATA (awaiting 354),
writing the body (final dot not yet out of the process), or waiting for the reply to the final dot."""

POLICY_RETRY_AFTER = 300.0

HARD_BOUNCE_STATUSES = frozenset({(5, 1, 0), (5, 1, 1), (5, 1, 2), (5, 1, 3), (5, 1, 6), (5, 1, 10), (5, 2, 1)})
_RECIPIENT_STAGES = frozenset({"rcpt", "data", "after_dot"})
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
_DEAD_ADDRESS_TEXT = re.compile(
    r"user unknown|unknown user|no such (user|mailbox|recipient|address)|unknown (recipient|mailbox)"
    r"|recipient unknown|mailbox (not found|unknown|disabled|is disabled)|account (is )?disabled"
    r"|does ?n[o']t exist|invalid (recipient|mailbox)|not a valid (recipient|mailbox)",
    re.IGNORECASE,
)
_QUEUE_ID = re.compile(r"queued as ([A-Za-z0-9._-]+)|\bid=([A-Za-z0-9._-]+)", re.IGNORECASE)
MAX_PROVIDER_ID = 200


def enhanced_status(message: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code at the start of a reply text ("5.1.1 ..."), if any."""
    match = _ENHANCED.match(message)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def is_hard_bounce(stage: Stage, code: int, message: str) -> bool:
    """The reply says the recipient's address is dead (see the module docstring for the rules)."""
    if stage not in _RECIPIENT_STAGES or not 500 <= code < 600:
        return False
    status = enhanced_status(message)
    if status is not None:
        return status in HARD_BOUNCE_STATUSES
    return code in (550, 551, 553) and _DEAD_ADDRESS_TEXT.search(message) is not None


def is_server_problem(code: int) -> bool:
    """The server, not the message, is the problem: mark it down and use the next one."""
    return code in (421, 530)


def retry_hint(code: int, message: str) -> float | None:
    status = enhanced_status(message)
    if (status is not None and status[1] == 7) or "greylist" in message.lower():
        return POLICY_RETRY_AFTER
    return None


def classify_reply(stage: Stage, code: int, message: str) -> SendError:
    """The error for an SMTP reply that did not accept the message."""
    text = f"{stage}: {code} {message}".strip()
    if 400 <= code < 500:
        return TransientSendError(text, code=code, retry_after=retry_hint(code, message))
    if 500 <= code < 600:
        return PermanentSendError(text, code=code, suppress=is_hard_bounce(stage, code, message))
    # 1xx/2xx/3xx where a final answer was expected: a confused server; the message was not taken
    return TransientSendError(f"{text} (unexpected reply)", code=code)


def provider_id_from_reply(message: str) -> str:
    """The server's id for an accepted message: its queue id when the reply names one
    (Postfix "queued as X", Exim "id=X"), else the reply text without its enhanced code."""
    match = _QUEUE_ID.search(message)
    if match:
        return match[1] or match[2]
    text = _ENHANCED.sub("", message).strip().replace("\n", " ")
    return text[:MAX_PROVIDER_ID]
