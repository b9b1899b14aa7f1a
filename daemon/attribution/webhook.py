"""The conversion webhook, pure: authenticate the raw body, then read the conversions in it.

The shop signs each request:

    X-Topslot-Timestamp: <unix seconds when sent>
    X-Topslot-Signature: sha256=<hex of HMAC-SHA256(conversion_webhook_key, timestamp + "." + raw body)>

The timestamp is inside the MAC (as Stripe and Slack do): a MAC over the body alone would let anyone
replay a captured request with a fresh timestamp header. Requests more than ``MAX_SKEW`` away from
``now`` are refused, and duplicate order ids are ignored anyway, so a replay changes nothing. The
comparison is constant-time.

The body is JSON: one conversion object, or ``{"conversions": [...]}`` with up to ``MAX_BATCH``,
at most ``MAX_BODY_BYTES`` long and nested at most ``MAX_DEPTH`` arrays/objects deep (checked before
parsing, so a hostile body can neither exhaust the parser's recursion nor take long), and read by
``loads_bounded`` like imported JSON Lines: NaN, Infinity, and a NUL or an unpaired surrogate in
any text (which the database would refuse at insert) make the whole body a 400.
Every valid conversion is kept; invalid ones are listed by position and field (never echoing their
values), so the shop can fix them and re-send the whole body (what was recorded is not duplicated).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from topslot.attribution.inputs import ConversionInput, parse_conversion_fields
from topslot.errors import TopslotError
from topslot.json_depth import MAX_JSON_DEPTH, BadJson, NotJson, TooDeep, loads_bounded

SIGNATURE_HEADER = "X-Topslot-Signature"
TIMESTAMP_HEADER = "X-Topslot-Timestamp"
SCHEME = "sha256="
MAX_SKEW = timedelta(minutes=5)
MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH = 1000
MAX_DEPTH = MAX_JSON_DEPTH  # arrays/objects inside each other; a batch needs 3
MAX_PROBLEMS = 100  # listed in one answer; the count says how many there were


class WebhookError(TopslotError):
    """A request refused as a whole: ``status`` is the HTTP status to answer, ``reason`` a fixed text."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    """The conversions of one authenticated body, and what was wrong with the others."""

    inputs: list[ConversionInput] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "conversions[3].revenue: has more than 2 decimals"
    rejected: int = 0


def signature_for(key: bytes | str, timestamp: str, body: bytes) -> str:
    """The ``X-Topslot-Signature`` value for ``body`` sent at ``timestamp`` (what the shop computes)."""
    secret = key.encode("utf-8") if isinstance(key, str) else key
    return SCHEME + hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def signed_headers(key: bytes | str, body: bytes, now: datetime) -> dict[str, str]:
    """Both headers for ``body`` sent at ``now`` (for shops written in Python, and tests)."""
    timestamp = str(int(now.timestamp()))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature_for(key, timestamp, body)}


class WebhookSigner:
    """``signed_headers`` for many bodies under one key (a sender signing every request): the key's
    HMAC state is prepared once and copied per body, instead of keyed afresh."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes | str):
        self._keyed = hmac.new(key.encode("utf-8") if isinstance(key, str) else key, digestmod=hashlib.sha256)

    def headers(self, body: bytes, unix_seconds: int) -> dict[str, str]:
        """Both headers for ``body`` sent at ``unix_seconds`` (what ``signed_headers`` gives)."""
        timestamp = str(unix_seconds)
        mac = self._keyed.copy()
        mac.update(timestamp.encode("ascii") + b"." + body)
        return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: SCHEME + mac.hexdigest()}

    def __repr__(self) -> str:  # never shows the key
        return "WebhookSigner(...)"


def authenticate(
    body: bytes, signature: str | None, timestamp: str | None, key: bytes | str | None, now: datetime
) -> None:
    """Raise ``WebhookError`` unless the request is signed with ``key`` within ``MAX_SKEW`` of ``now``."""
    if key is None or key == b"" or key == "":
        raise WebhookError(503, "the conversion webhook is not configured (set conversion_webhook_key)")
    if len(body) > MAX_BODY_BYTES:
        raise WebhookError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    if not signature or not timestamp:
        raise WebhookError(401, f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    stamp = timestamp.strip()
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise WebhookError(401, f"{TIMESTAMP_HEADER} must be unix seconds")
    sent = int(stamp)
    if abs(now.timestamp() - sent) > MAX_SKEW.total_seconds():
        raise WebhookError(401, f"{TIMESTAMP_HEADER} is more than {int(MAX_SKEW.total_seconds() // 60)} minutes off")
    given = signature.strip()
    if not given.isascii():
        raise WebhookError(401, "bad signature")
    expected = signature_for(key, stamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), given.lower().encode("ascii")):
        raise WebhookError(401, "bad signature")


def parse_conversion(
    body: bytes, signature: str | None, timestamp: str | None, key: bytes | str | None, now: datetime
) -> ParsedBatch:
    """Authenticate, then read every conversion of the body. ``WebhookError`` refuses the request
    as a whole (401 unsigned, 413 too big, 400 not JSON, 503 no key); item problems are returned."""
    authenticate(body, signature, timestamp, key, now)
    return read_body(body)


def read_body(body: bytes) -> ParsedBatch:
    """The conversions of an (already authenticated) JSON body."""
    try:  # floats as their text: amounts are read exactly (as Decimal) by field validation
        data = loads_bounded(body.decode("utf-8"), max_depth=MAX_DEPTH, parse_float=str, parse_int=_int_or_text)
    except TooDeep:
        raise WebhookError(400, f"the body is not JSON nested at most {MAX_DEPTH} levels deep") from None
    except (UnicodeDecodeError, NotJson):
        raise WebhookError(400, "the body is not UTF-8 JSON") from None
    except BadJson as exc:  # NaN, a NUL or an unpaired surrogate: fixed texts, never the input
        raise WebhookError(400, f"the body cannot be taken: {exc}") from None
    if isinstance(data, dict) and "conversions" in data:
        items, prefix = data["conversions"], "conversions"
        if not isinstance(items, list):
            raise WebhookError(400, "conversions must be a list of objects")
        if len(items) > MAX_BATCH:
            raise WebhookError(413, f"more than {MAX_BATCH} conversions in one request")
    elif isinstance(data, dict):
        items, prefix = [data], ""
    else:
        raise WebhookError(400, 'the body must be a conversion object or {"conversions": [...]}')
    inputs: list[ConversionInput] = []
    problems: list[str] = []
    rejected = 0
    for index, item in enumerate(items):
        where = f"{prefix}[{index}]" if prefix else ""
        if not isinstance(item, dict):
            rejected += 1
            problems.append(f"{where or '(body)'}: a conversion must be a JSON object")
            continue
        result = parse_conversion_fields(_normalised(item))
        if isinstance(result, ConversionInput):
            inputs.append(result)
            continue
        rejected += 1
        for problem in result:
            name = f"{where}.{problem.field}" if where else problem.field
            problems.append(f"{name}: {problem.message}")
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problems"]
    return ParsedBatch(inputs, problems, rejected)


def webhook_answer(parsed: ParsedBatch, recorded: int, duplicates: int) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for a processed request: 200 all taken, 422 some refused."""
    body: dict[str, Any] = {"recorded": recorded, "duplicates": duplicates, "rejected": parsed.rejected}
    if parsed.problems:
        body["problems"] = parsed.problems
    return (422 if parsed.rejected else 200), body


def error_answer(error: WebhookError) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) for a refused request."""
    return error.status, {"error": error.reason}


def _normalised(item: Mapping[str, Any]) -> dict[str, Any]:
    # JSON keys are the shop's: only exact snake_case names (and aliases) are read
    return {k: v for k, v in item.items() if isinstance(k, str) and len(k) <= 40}


def _int_or_text(text: str) -> int | str:
    # very long integers would cost quadratic time to convert; let field validation refuse them
    return int(text) if len(text) <= 20 else text
