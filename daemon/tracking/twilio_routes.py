"""Twilio's webhooks, served by the tracking server: ``POST /twilio/status`` (delivery receipts) and
``POST /twilio/inbound`` (SMS and WhatsApp replies: STOP, START, HELP).

Both check ``X-Twilio-Signature`` with Twilio's ``RequestValidator`` and the account auth token
against the PUBLIC URL Twilio called, rebuilt from ``tracking_base_url`` (``{base}/twilio/status``,
with the request's query string if it has one), never from the Host header or the scheme a reverse
proxy passes on. Twilio not configured → 404; body over ``MAX_BODY_BYTES`` → 413; not a form → 415;
signature missing or wrong → 403. In every refused case nothing changes.

Status callbacks (answered 204):

=================================  ===================================================================
``delivered`` (``read``)           the ``sent`` row with that MessageSid → ``delivered``
``undelivered`` / ``failed``       → ``bounced``, ``last_error`` "<ErrorCode> <meaning>"; the codes of
                                   ``SUPPRESSING_CODES`` also put the row's phone on the SMS suppression
                                   list (``sms_undeliverable``; 21610, a STOP Twilio holds: ``sms_stop``)
anything else                      nothing (queued, sending, sent, accepted, scheduled, canceled, ...)
=================================  ===================================================================

A WhatsApp message's callback (``To`` is ``whatsapp:+E164``) updates its ledger row the same way, but
its suppressing codes are ``WHATSAPP_SUPPRESSING_CODES`` (63003, 63024 not on WhatsApp:
``hard_bounce``; 63014 blocked by the recipient: ``im_blocked``; 21610: ``sms_stop``) and what they
suppress is the row's own address on its own channel: IM ``whatsapp:+E164`` (the contact's id under the
row's provider), never the SMS phone (``tracking_events.suppress_sent_address``; for a receipt parked
before its row is recorded, the callback's ``To`` under each WhatsApp provider's name).

The first final receipt of a message wins; a receipt that beats the dispatcher's commit of the SID
is parked and applied when the row is recorded (``topslot.store.receipts``).

Inbound SMS (answered with TwiML): the body, NFKC-normalised (full-width letters), case-folded and
stripped of surrounding spaces, punctuation and symbols, is compared whole with the keywords:

- ``OPT_OUT`` (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT, 退订, TD, T): the From number is
  suppressed for SMS (``sms_stop``, source ``twilio_inbound:<MessageSid>``) and the SMS consent of
  every contact with that phone is withdrawn; empty ``<Response/>`` (Twilio sends its own
  confirmation on numbers with its default opt-out handling);
- ``OPT_IN`` (START, UNSTOP, YES): the number's ``sms_stop`` suppression is removed — a hard bounce
  (``sms_undeliverable``, ``hard_bounce``) stays — and consent is NOT granted again: it comes back
  only from the contact records (the next contact import with ``consent_sms``); empty response;
- ``HELP`` (HELP, INFO): ``<Response><Message>{twilio.help_text}</Message></Response>`` with
  ``{sender}`` replaced by ``compliance.sender_identity``;
- anything else: empty ``<Response/>``, nothing changes.

Inbound WhatsApp (``From`` is ``whatsapp:+E164``): the same keywords, for IM instead of SMS. STOP puts
``<name>:+E164`` on the IM suppression list (``sms_stop``: "replied STOP, START lifts it") for the
WhatsApp provider(s) of the number it was sent to (``im.<name>.from_number`` equal to ``To``; else
every provider of kind ``whatsapp``; none configured: ``whatsapp``), and withdraws the IM consent of
every contact whose id there is that number (``im_<name>``, else its phone); START lifts that
address's ``sms_stop`` / ``im_blocked`` suppression (never a hard bounce) and grants no consent; HELP
answers the same text. SMS suppressions and consents are never touched by a WhatsApp message.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any, Literal
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import phonenumbers
from aiohttp import web
from multidict import MultiDict
from sqlalchemy.ext.asyncio import AsyncEngine
from twilio.request_validator import RequestValidator

from topslot.attribution.webhook import WebhookError
from topslot.channels.twilio_sms import STATUS_CALLBACK_PATH
from topslot.clock import Clock
from topslot.delivery import RECEIPT_STATUSES, SuppressionReason
from topslot.delivery import DeliveryState as S
from topslot.logs import get_logger
from topslot.store.receipts import Receipt, Result, record_receipt
from topslot.store.tracking_events import lift_suppression, opt_out_address, opt_out_im, suppress_sent_address
from topslot.tracking.conversions_route import read_bounded
from topslot.tracking.pages import SECURITY_HEADERS

log = get_logger("topslot.tracking")

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
PROVIDER = "twilio"
STATUS_PATH = STATUS_CALLBACK_PATH  # where the messengers ask Twilio to post receipts
INBOUND_PATH = "/twilio/inbound"
SIGNATURE_HEADER = "X-Twilio-Signature"
FORM = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 64 * 1024  # a Twilio form is 1-3 KiB; an inbound MMS with ten media URLs stays far below
MAX_FIELDS = 200
BODY_TIMEOUT = 10.0  # Twilio gives up on a webhook after 15 s
MAX_KEYWORD_CHARS = 64  # a longer body is never a keyword

# Twilio's default opt-out words (REVOKE and OPTOUT since the FCC's 2025 revocation rule), and China's
OPT_OUT = frozenset({"stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout", "退订", "td", "t"})
OPT_IN = frozenset({"start", "unstop", "yes"})
HELP = frozenset({"help", "info"})
Keyword = Literal["opt_out", "opt_in", "help"]


# Twilio error codes a status callback carries, with what they mean (twilio.com/docs/api/errors).
ERROR_MEANINGS: dict[int, str] = {
    21211: "invalid 'To' phone number",
    21408: "permission to send to this region not enabled",
    21610: "recipient replied STOP (unsubscribed)",
    21612: "cannot route to this number",
    21614: "'To' is not a mobile number",
    30001: "queue overflow",
    30002: "account suspended",
    30003: "unreachable destination handset",
    30004: "message blocked",
    30005: "unknown destination handset",
    30006: "landline or unreachable carrier",
    30007: "message filtered by the carrier",
    30008: "unknown error",
    30009: "missing segment",
    30010: "message price exceeds max price",
    30019: "content size exceeds carrier limit",
    30022: "US A2P 10DLC rate limit exceeded",
    30023: "US A2P 10DLC daily cap reached",
    30032: "toll-free number not verified",
    30034: "message from an unregistered US A2P 10DLC number",
    # WhatsApp
    63003: "'To' is not an active WhatsApp address",
    63007: "'From' is not a WhatsApp sender of this account",
    63014: "blocked by the recipient",
    63016: "outside the 24-hour session window (approved template required)",
    63018: "WhatsApp sender's messaging limit reached",
    63024: "not a valid WhatsApp user",
    63027: "template does not exist for this language",
    63028: "template variables do not match the template",
    63032: "withheld by Meta's marketing message experiment",
    63049: "Meta chose not to deliver this marketing message",
}
# The number itself cannot (or will not) take SMS: suppressed, not just bounced. 30003 (handset off),
# 30007 (carrier filtering: the content), 30008 and the rest only bounce this one message.
SUPPRESSING_CODES: dict[int, str] = {
    30004: SuppressionReason.SMS_UNDELIVERABLE,  # blocked for this number by the carrier or the handset
    30005: SuppressionReason.SMS_UNDELIVERABLE,  # no such handset
    30006: SuppressionReason.SMS_UNDELIVERABLE,  # a landline, or a carrier that cannot take SMS
    21614: SuppressionReason.SMS_UNDELIVERABLE,  # not a mobile number
    21610: SuppressionReason.SMS_STOP,  # Twilio holds a STOP from this number: a START lifts it, as Twilio's own block
}
# A WhatsApp message's codes that suppress its IM address (63016, 63018, 63032, 63049 only bounce it).
WHATSAPP_SUPPRESSING_CODES: dict[int, str] = {
    63003: SuppressionReason.HARD_BOUNCE,  # the To is invalid or inactive on WhatsApp
    63024: SuppressionReason.HARD_BOUNCE,  # not a valid WhatsApp user
    63014: SuppressionReason.IM_BLOCKED,  # the recipient blocked the business (or opted out in WhatsApp)
    21610: SuppressionReason.SMS_STOP,  # Twilio holds an opt-out for this address
}
WHATSAPP = "whatsapp:"  # Twilio's WhatsApp address prefix
WHATSAPP_KIND = "whatsapp"

_EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
_TWIML_HEADERS = {**SECURITY_HEADERS, "Content-Type": "text/xml; charset=utf-8"}


def twilio_handlers(
    engine: AsyncEngine, settings: Any, clock: Clock, *, body_timeout: float = BODY_TIMEOUT
) -> dict[str, Handler]:
    """``{path: handler}`` for ``TrackingServer.add_route``. Without Twilio configured (no
    ``twilio.account_sid`` / auth token) both paths answer 404."""
    twilio = settings.twilio
    token = twilio.auth_token.get_secret_value() if twilio.configured and twilio.auth_token is not None else None
    validator = RequestValidator(token) if token else None
    base = settings.tracking_base_url.rstrip("/")
    help_text = render_help(twilio.help_text, settings.compliance.sender_identity)
    whatsapp_senders = _whatsapp_senders(settings)

    async def form_of(request: web.BaseRequest, path: str) -> MultiDict[str] | web.Response:
        """The verified form, or the refusal to answer."""
        route = path.rsplit("/", 1)[-1]
        if validator is None:
            return _refuse(route, 404, "twilio is not configured")
        if request.content_type != FORM:
            return _refuse(route, 415, "not a form")
        try:
            body = await read_bounded(request, MAX_BODY_BYTES, body_timeout)
            form = parse_form(body)
        except WebhookError as exc:
            return _refuse(route, exc.status, exc.reason)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not signature:
            return _refuse(route, 403, "no signature")
        if not validator.validate(public_url(base, path, request.raw_path), form, signature):
            return _refuse(route, 403, "bad signature")
        return form

    async def status(request: web.BaseRequest) -> web.StreamResponse:
        form = await form_of(request, STATUS_PATH)
        if isinstance(form, web.Response):
            return form
        sid = _sid(form)
        if sid is None:
            return _refuse("status", 400, "no valid MessageSid")
        value = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
        state = RECEIPT_STATUSES.get(value)
        if state is None:
            log.debug("twilio_status_ignored", provider_id=sid, status=value[:20])
            return _no_content()
        code = error_code(form.get("ErrorCode"))
        whatsapp = is_whatsapp(form)
        codes = WHATSAPP_SUPPRESSING_CODES if whatsapp else SUPPRESSING_CODES
        reason = codes.get(code) if state == S.BOUNCED and code is not None else None
        source = f"twilio_status:{sid}:{code}" if reason else None
        receipt = Receipt(
            provider=PROVIDER,
            provider_id=sid,
            state=state,
            error=describe_error(code, value) if state == S.BOUNCED else None,
            suppress=None if whatsapp else reason,  # an IM row's address is suppressed below, not by the store
            source=None if whatsapp else source,
        )
        now = clock.now()
        done = await record_receipt(engine, receipt, now)
        suppressed = done.suppressed
        if whatsapp and reason and done.result in (Result.APPLIED, Result.PENDING):
            to = e164((form.get("To") or "").removeprefix(WHATSAPP))
            keys = _whatsapp_keys(whatsapp_senders, form.get("From"))
            fallback = [f"{key}:{to}" for key in keys] if to else []
            suppressed += await suppress_sent_address(engine, sid, reason, source, now, fallback=fallback)
        _log_receipt(receipt, code, done.result, done.delivery_id, suppressed, reason=reason)
        return _no_content()

    async def inbound(request: web.BaseRequest) -> web.StreamResponse:
        form = await form_of(request, INBOUND_PATH)
        if isinstance(form, web.Response):
            return form
        sid = _sid(form) or "unknown"
        word = normalise_keyword(form.get("Body") or "")
        kind = keyword_kind(word)
        if kind == "help":
            log.info("sms_help_answered", message_sid=sid, keyword=word)
            return _twiml(help_text)
        if kind is None:
            log.debug("sms_inbound_ignored", message_sid=sid, reason="not_a_keyword")
            return _twiml(None)
        sender = form.get("From") or ""
        if sender.startswith(WHATSAPP):
            return await whatsapp_keyword(form, sid, word, kind)
        phone = e164(sender)
        if phone is None:
            log.info("sms_inbound_ignored", message_sid=sid, reason="not_a_phone", keyword=word)
            return _twiml(None)
        now = clock.now()
        if kind == "opt_out":
            done = await opt_out_address(
                engine, "sms", phone, now, reason=SuppressionReason.SMS_STOP, source=f"twilio_inbound:{sid}"
            )
            log.info(
                "sms_opted_out",
                message_sid=sid,
                keyword=word,
                phone=phone,
                suppressed=done.suppressed,
                contacts=done.contacts,
                consents_withdrawn=done.consents_withdrawn,
            )
        else:
            lifted = await lift_suppression(engine, "sms", phone, reasons={SuppressionReason.SMS_STOP})
            log.info(
                "sms_opted_in",
                message_sid=sid,
                keyword=word,
                phone=phone,
                lifted=lifted.lifted,
                still_suppressed=lifted.kept_reason,
            )
        return _twiml(None)

    async def whatsapp_keyword(form: MultiDict[str], sid: str, word: str, kind: Keyword) -> web.StreamResponse:
        """STOP / START from ``whatsapp:+E164``: the IM address on each WhatsApp provider it wrote to."""
        phone = e164((form.get("From") or "").removeprefix(WHATSAPP))
        if phone is None:
            log.info("whatsapp_inbound_ignored", message_sid=sid, reason="not_a_phone", keyword=word)
            return _twiml(None)
        keys = _whatsapp_keys(whatsapp_senders, form.get("To"))
        spellings = (phone, phone.removeprefix("+"))  # E.164, and as WhatsApp writes ids (im_<name> may hold either)
        now = clock.now()
        for key in keys:
            if kind == "opt_out":
                done = await opt_out_im(
                    engine, key, spellings, now, reason=SuppressionReason.SMS_STOP, source=f"twilio_inbound:{sid}"
                )
                log.info(
                    "whatsapp_opted_out",
                    message_sid=sid,
                    keyword=word,
                    provider=key,
                    phone=phone,
                    suppressed=done.suppressed,
                    contacts=done.contacts,
                    consents_withdrawn=done.consents_withdrawn,
                )
                continue
            lifted, kept = 0, None
            for spelling in spellings:
                done_lift = await lift_suppression(
                    engine,
                    "im",
                    f"{key}:{spelling}",
                    reasons={SuppressionReason.SMS_STOP, SuppressionReason.IM_BLOCKED},
                )
                lifted += done_lift.lifted
                kept = kept or done_lift.kept_reason
            log.info(
                "whatsapp_opted_in",
                message_sid=sid,
                keyword=word,
                provider=key,
                phone=phone,
                lifted=lifted,
                still_suppressed=kept,
            )
        return _twiml(None)

    return {STATUS_PATH: status, INBOUND_PATH: inbound}


# ---------------------------------------------------------------- pure parts


def public_url(base: str, path: str, raw_path: str) -> str:
    """The URL Twilio signed: the configured public base, the route's path, the request's query."""
    query = raw_path.partition("?")[2]
    return f"{base}{path}?{query}" if query else f"{base}{path}"


def parse_form(body: bytes) -> MultiDict[str]:
    """A urlencoded UTF-8 body as a multi-dict (``WebhookError`` 400 when it is not one)."""
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise WebhookError(400, "not a UTF-8 form of at most 200 fields") from None
    return MultiDict(pairs)


def normalise_keyword(body: str) -> str:
    """NFKC (full-width ＳＴＯＰ → STOP), case-folded, without surrounding spaces, punctuation or
    symbols ("  Stop! " → "stop", "【退订】" → "退订"); "" for a body too long to be a keyword."""
    text = unicodedata.normalize("NFKC", body[: MAX_KEYWORD_CHARS * 4])
    start, end = 0, len(text)
    while start < end and _is_filler(text[start]):
        start += 1
    while end > start and _is_filler(text[end - 1]):
        end -= 1
    word = text[start:end].casefold()
    return word if len(word) <= MAX_KEYWORD_CHARS else ""


def keyword_kind(word: str) -> Keyword | None:
    if word in OPT_OUT:
        return "opt_out"
    if word in OPT_IN:
        return "opt_in"
    if word in HELP:
        return "help"
    return None


def _is_filler(char: str) -> bool:
    return unicodedata.category(char)[0] in "PZSC"  # punctuation, separators, symbols, controls


def e164(value: str) -> str | None:
    """A Twilio From (``+14155550100``) as E.164, or None (a short code, ``whatsapp:...``, junk)."""
    text = unicodedata.normalize("NFKC", value).strip()
    if not text.startswith("+") or len(text) > 32:
        return None
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def is_whatsapp(form: MultiDict[str]) -> bool:
    """A callback about a WhatsApp message (its ``To`` is ``whatsapp:...``, or Twilio says the channel)."""
    return (form.get("To") or "").startswith(WHATSAPP) or (form.get("ChannelPrefix") or "").lower() == WHATSAPP_KIND


def _whatsapp_senders(settings: Any) -> dict[str, str | None]:
    """``im.<name>`` of kind whatsapp → its from_number (None: it sends through a Messaging Service)."""
    providers = getattr(settings, "im", None) or {}
    return {
        name: getattr(p, "from_number", None)
        for name, p in providers.items()
        if getattr(p, "kind", None) == WHATSAPP_KIND
    }


def _whatsapp_keys(senders: dict[str, str | None], ours: str | None) -> list[str]:
    """The IM provider names a WhatsApp message between a recipient and ``ours`` (our
    ``whatsapp:+E164``) belongs to: those sending from that number; else every WhatsApp provider (a
    Messaging Service picks its sender); none configured: ``whatsapp``."""
    number = e164((ours or "").removeprefix(WHATSAPP))
    named = sorted(name for name, sender in senders.items() if number is not None and sender == number)
    return named or sorted(senders) or [WHATSAPP_KIND]


def error_code(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def describe_error(code: int | None, status: str) -> str:
    """``last_error`` of a bounce: "30005 unknown destination handset"."""
    if code is None:
        return f"{status} without an error code"
    return f"{code} {ERROR_MEANINGS.get(code, 'twilio error')}"


def render_help(template: str, sender: str) -> str:
    """The HELP answer: ``{sender}`` replaced by the sender identity; without one, the text does not
    start with the separator that followed the placeholder ("{sender}: ..." → "...")."""
    sender = sender.strip()
    text = template.replace("{sender}", sender).strip()
    return text if sender else text.lstrip(":,;-–— ").strip()


def twiml(message: str | None) -> bytes:
    if message is None:
        return _EMPTY_TWIML
    clean = "".join(c for c in message if c in "\n\t" or unicodedata.category(c) != "Cc")  # XML 1.0 has no C0
    body = f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escape(clean)}</Message></Response>'
    return body.encode("utf-8")


# ---------------------------------------------------------------- answers and logs


def _sid(form: MultiDict[str]) -> str | None:
    sid = (form.get("MessageSid") or form.get("SmsSid") or "").strip()
    return sid if 0 < len(sid) <= 64 and sid.isascii() and sid.isalnum() else None


def _log_receipt(
    receipt: Receipt,
    code: int | None,
    result: Result,
    delivery_id: int | None,
    suppressed: int,
    *,
    reason: str | None = None,
) -> None:
    if result == Result.DROPPED:
        log.warning("twilio_receipt_dropped", provider_id=receipt.provider_id, state=receipt.state)
    elif result == Result.PENDING:
        log.info("twilio_receipt_pending", provider_id=receipt.provider_id, state=receipt.state)
    elif receipt.state == S.DELIVERED:
        log.debug("twilio_delivered", provider_id=receipt.provider_id, delivery_id=delivery_id, result=result)
    else:
        log.info(
            "twilio_bounced",
            provider_id=receipt.provider_id,
            delivery_id=delivery_id,
            result=result,
            error_code=code,
            suppression=(reason or receipt.suppress) if suppressed else None,
        )


def _no_content() -> web.Response:
    return web.Response(status=204, headers=SECURITY_HEADERS)


def _twiml(message: str | None) -> web.Response:
    return web.Response(status=200, body=twiml(message), headers=_TWIML_HEADERS)


_REFUSALS = {
    400: "bad request",
    403: "forbidden",
    404: "not found",
    408: "timeout",
    413: "too large",
    415: "not a form",
}


def _refuse(route: str, status: int, reason: str) -> web.Response:
    if status != 404:  # not configured: like any unknown path, not worth a line per scanner
        log.warning("twilio_webhook_refused", route=route, status=status, reason=reason)
    text = _REFUSALS.get(status, "refused")
    return web.Response(status=status, text=f"{text}\n", headers=SECURITY_HEADERS)
