"""``POST /feedback``: bounce, complaint and delivery events an ESP pushes as JSON (pure: the
authentication and the reading; ``feedback_handler`` records them like the receiver does).

**Authentication**, with ``feedback_webhook_key``, either:

- the headers of ``POST /conversions`` (``X-Topslot-Timestamp`` and ``X-Topslot-Signature:
  sha256=HMAC-SHA256(key, timestamp + "." + body)``, within 5 minutes): for a relay or a small
  forwarder of your own;
- or HTTP Basic authentication whose password is the key (any user name): what Amazon SNS sends
  to an ``https://topslot:KEY@t.shop.example/feedback`` subscription. Compared in constant time.

**Shapes** (one request: one event, or ``{"events": [...]}`` of up to ``MAX_EVENTS``):

1. *Amazon SES*, directly or inside an SNS envelope (``{"Type": "Notification", "Message":
   "<the SES event as a JSON string>"}``): ``notificationType`` / ``eventType`` ``Bounce`` (one
   event per ``bounce.bouncedRecipients[]``; ``bounceType`` ``Permanent`` → hard, ``Transient`` /
   ``Undetermined`` → soft, sub-type ``MailboxFull`` → soft, ``Suppressed`` /
   ``OnAccountSuppressionList`` → hard, ``ContentRejected`` / ``MessageTooLarge`` (or a 5.7.x
   status) → blocked; the recipient's ``status`` and ``diagnosticCode`` kept), ``Complaint`` (per
   ``complaint.complainedRecipients[]``), ``Delivery``. The delivery is found from ``mail.source``
   (the VERP return path) and ``mail.headers`` / ``mail.commonHeaders`` (``Message-ID``,
   ``List-Unsubscribe``). An SNS ``SubscriptionConfirmation`` is logged with its ``SubscribeURL``
   for the operator to open: nothing in a body is ever fetched.
2. *Generic*: ``{"type": "bounce" | "complaint" | "delivered", "bounce_type": "hard" | "soft" |
   "blocked", "recipient", "status", "reason", "return_path", "message_id", "list_unsubscribe"}``.
   ``bounce_type`` may be left out when ``status`` says it (``5.1.1``: hard).

Each event becomes a ``classify.Feedback`` and goes through ``record.find_delivery`` and
``record.record_feedback``: the same rules, the same repeat protection, the same signed clues (an
event naming only a Message-ID must name the address it went to).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from topslot.attribution.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, WebhookError, authenticate
from topslot.bounces.classify import MAX_REASON, Feedback, Kind, kind_of, tokens_in
from topslot.json_depth import BadJson, NotJson, TooDeep, loads_bounded

MAX_BODY_BYTES = 256 * 1024
MAX_EVENTS = 500
MAX_DEPTH = 12
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_GENERIC_KINDS = {"hard": Kind.HARD_BOUNCE, "soft": Kind.SOFT_BOUNCE, "blocked": Kind.BLOCKED}
_SES_HARD_SUBTYPES = {"suppressed", "onaccountsuppressionlist", "noemail"}
_SES_BLOCKED_SUBTYPES = {"contentrejected", "messagetoolarge", "attachmentrejected"}


@dataclass
class FeedbackBatch:
    """The events of one request, and what could not be read (by position, never echoing values)."""

    events: list[Feedback] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    subscribe_url: str | None = None  # an SNS SubscriptionConfirmation's, for the operator


def check(headers: Mapping[str, str], body: bytes, key: str | None, now: datetime) -> None:
    """``WebhookError`` (401, 503) unless the request is signed or carries the key as Basic auth."""
    if not key:
        raise WebhookError(503, "the feedback webhook is not configured (set feedback_webhook_key)")
    basic = headers.get("Authorization", "")
    if basic[:6].lower() == "basic ":
        try:
            password = base64.b64decode(basic[6:].strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            raise WebhookError(401, "bad authorization") from None
        if not hmac.compare_digest(password.encode("utf-8"), key.encode("utf-8")):
            raise WebhookError(401, "bad authorization")
        return
    authenticate(body, headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER), key, now)


def read(body: bytes) -> FeedbackBatch:
    """The events of an authenticated body; ``WebhookError`` 400/413 for a body that is no JSON."""
    if len(body) > MAX_BODY_BYTES:
        raise WebhookError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    data = _json(body)
    batch = FeedbackBatch()
    if isinstance(data, dict) and data.get("Type") in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        url = data.get("SubscribeURL")
        batch.subscribe_url = url if isinstance(url, str) and url.startswith("https://") else None
        return batch
    if isinstance(data, dict) and data.get("Type") == "Notification":  # SNS: the SES event is a JSON string
        message = data.get("Message")
        if not isinstance(message, str):
            raise WebhookError(400, "an SNS notification without a Message")
        data = _json(message.encode("utf-8"))
    listed = isinstance(data, dict) and "events" in data
    items = data["events"] if listed else [data]
    if not isinstance(items, list):
        raise WebhookError(400, "events must be a list")
    if len(items) > MAX_EVENTS:
        raise WebhookError(413, f"more than {MAX_EVENTS} events in one request")
    for index, item in enumerate(items):
        where = f"events[{index}]" if listed else "body"
        if not isinstance(item, dict):
            batch.problems.append(f"{where}: an event must be a JSON object")
            continue
        try:
            if "notificationType" in item or "eventType" in item:
                batch.events.extend(_ses(item))
            else:
                batch.events.append(_generic(item))
        except ValueError as exc:
            batch.problems.append(f"{where}: {exc}")
    return batch


def _json(body: bytes) -> Any:
    try:
        return loads_bounded(body.decode("utf-8"), max_depth=MAX_DEPTH)
    except TooDeep:
        raise WebhookError(400, f"the body is not JSON nested at most {MAX_DEPTH} levels deep") from None
    except (UnicodeDecodeError, NotJson):
        raise WebhookError(400, "the body is not UTF-8 JSON") from None
    except BadJson as exc:
        raise WebhookError(400, f"the body cannot be taken: {exc}") from None


# ---------------------------------------------------------------- Amazon SES


def _ses(event: Mapping[str, Any]) -> Iterator[Feedback]:
    kind = str(event.get("notificationType") or event.get("eventType") or "")
    mail = _dict(event.get("mail"))
    headers = {
        str(h.get("name", "")).lower(): str(h.get("value", ""))
        for h in _list(mail.get("headers"))
        if isinstance(h, dict)
    }
    common = _dict(mail.get("commonHeaders"))
    clues: dict[str, Any] = {
        "original_senders": tuple(
            a for a in (_text(mail.get("source")), headers.get("return-path", "").strip("<>")) if a
        ),
        "message_ids": tuple(m for m in (headers.get("message-id"), _text(common.get("messageId"))) if m),
        "unsubscribe_tokens": tokens_in(headers.get("list-unsubscribe", "")),
    }
    if kind == "Bounce":
        bounce = _dict(event.get("bounce"))
        bounce_type = _text(bounce.get("bounceType")).lower()
        subtype = _text(bounce.get("bounceSubType")).lower()
        for recipient in _list(bounce.get("bouncedRecipients")) or [{}]:
            r = _dict(recipient)
            status = _status(r.get("status"))
            diagnostic = _text(r.get("diagnosticCode"))
            if subtype in _SES_BLOCKED_SUBTYPES or kind_of(status, diagnostic) is Kind.BLOCKED:
                found = Kind.BLOCKED
            elif subtype in _SES_HARD_SUBTYPES or bounce_type == "permanent" and subtype != "mailboxfull":
                found = Kind.HARD_BOUNCE
            else:  # Transient, Undetermined, MailboxFull
                found = Kind.SOFT_BOUNCE
            yield Feedback(found, "ses", status, _clip(diagnostic or subtype), _address(r.get("emailAddress")), **clues)
    elif kind == "Complaint":
        complaint = _dict(event.get("complaint"))
        feedback_type = _clip(_text(complaint.get("complaintFeedbackType"))) or None
        for recipient in _list(complaint.get("complainedRecipients")) or [{}]:
            yield Feedback(
                Kind.COMPLAINT, "ses", None, feedback_type, _address(_dict(recipient).get("emailAddress")), **clues,
            )  # fmt: skip
    elif kind == "Delivery":
        for address in _list(_dict(event.get("delivery")).get("recipients")) or [None]:
            yield Feedback(Kind.DELIVERED, "ses", None, None, _address(address), **clues)
    else:
        raise ValueError("notificationType must be Bounce, Complaint or Delivery")


# ---------------------------------------------------------------- generic


def _generic(event: Mapping[str, Any]) -> Feedback:
    kind = _text(event.get("type")).lower()
    status = _status(event.get("status"))
    reason = _text(event.get("reason"))
    clues: dict[str, Any] = {
        "original_senders": tuple(a for a in (_text(event.get("return_path")).strip("<>"),) if a),
        "message_ids": tuple(m for m in (_text(event.get("message_id")),) if m),
        "unsubscribe_tokens": tokens_in(_text(event.get("list_unsubscribe"))),
    }
    recipient = _address(event.get("recipient"))
    if kind == "bounce":
        given = _text(event.get("bounce_type")).lower()
        if given and given not in _GENERIC_KINDS:
            raise ValueError("bounce_type must be hard, soft or blocked")
        found = _GENERIC_KINDS[given] if given else kind_of(status, reason)
        return Feedback(found, "webhook", status, _clip(reason), recipient, **clues)
    if kind == "complaint":
        return Feedback(Kind.COMPLAINT, "webhook", None, _clip(reason), recipient, **clues)
    if kind == "delivered":
        return Feedback(Kind.DELIVERED, "webhook", None, None, recipient, **clues)
    raise ValueError("type must be bounce, complaint or delivered")


# ---------------------------------------------------------------- values


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value[:MAX_EVENTS] if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value.strip()[:1000] if isinstance(value, str) else ""


def _status(value: Any) -> str | None:
    text = _text(value)
    return text if _STATUS.match(text) else None


def _address(value: Any) -> str | None:
    text = _text(value).strip("<>").lower()
    return text if "@" in text and len(text) <= 320 else None


def _clip(text: str | None) -> str | None:
    return " ".join(text.split())[:MAX_REASON] if text else None
