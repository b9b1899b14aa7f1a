"""WhatsApp through Twilio: the same Messages API and client as SMS (``topslot.channels.twilio_sms``),
with WhatsApp addresses and approved templates.

``TwilioWhatsApp.send(message)`` creates one Message and returns its SID, or raises exactly one of
the ``Messenger`` errors. It is IM provider ``im.<name>`` of kind ``whatsapp``: channel ``im``,
``provider`` = ``<name>`` (the contacts' ``im_<name>`` key, and the ledger's provider); the Twilio
account (SID, auth token, API host, status callbacks) is the ``twilio`` settings'.

The form (Twilio's field names):

- ``To``: ``whatsapp:+E164``, the message's recipient id (a contact's ``im_<name>``, else its phone)
  as E.164 (``14155550100`` and ``+1 415-555-0100`` become ``+14155550100``); an id that is no phone
  number is refused here (``PermanentSendError``, nothing sent);
- ``From``: ``whatsapp:<from_number>``, or ``MessagingServiceSid`` (the service picks its WhatsApp
  sender for a ``whatsapp:`` recipient);
- ``ContentSid``: ``message.template.sid`` (``HX`` + 32 hex), ``ContentVariables``: its variables as
  a JSON object string (``{"1":"Ada","2":"MOM20"}``, keys in numeric order; left out when there are
  none); never a ``Body``. Marketing outside the 24-hour session window must be an approved template
  (a template's text in ``Body`` fails with 63016), so a message without a template is refused here
  (``PermanentSendError``, code ``template_required``, nothing sent);
- ``StatusCallback`` as for SMS (``{tracking_base_url}/twilio/status``, unless
  ``twilio.status_callbacks`` is off).

How an error answer is classified: first WhatsApp's codes (Twilio's docs,
``twilio.com/docs/api/errors/<code>``), then SMS's table (``twilio_sms.classify``: 429/20429,
21610, 21211, credentials, 5xx ...):

=======================================================  ==========================================
63016 outside the 24-hour session window: only an         ``PermanentSendError``
approved template goes
63018 the WhatsApp sender's messaging limit (rate or      ``TransientSendError``; ``retry_after`` from
daily business-initiated cap) is reached                  ``Retry-After``, else 10–20 min (jittered)
63003 the To address is invalid or inactive on the        ``PermanentSendError(suppress=True,
channel; 63024 not a valid WhatsApp user                  suppress_reason=hard_bounce)``
63014 blocked by the recipient's action (blocked the      ``PermanentSendError(suppress=True,
business, or opted out)                                   suppress_reason=im_blocked)``
21610 Twilio holds an opt-out (STOP) for this address     ``PermanentSendError(suppress=True,
                                                          suppress_reason=sms_stop)``
63032 the recipient is in Meta's marketing-message        ``PermanentSendError`` (not suppressed: not
experiment; 63049 Meta chose not to deliver this          the recipient's choice, and it passes)
marketing message (all US numbers since 2025-04)
63007 the From is not a WhatsApp sender of this account   ``TransientSendError`` ("check
                                                          im.<name>.from_number"): nothing created
anything else                                             ``twilio_sms.classify``
=======================================================  ==========================================

Everything else (one request per send and never repeated, ``hand_over``'s written-or-not rule,
``Retry-After``, per-request timeout, ``max_in_flight``, the ``TokenBucket`` at ``rate_per_second``,
closing) is ``TwilioMessages``'.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import phonenumbers

from topslot.channel import Channel
from topslot.channels.base import Messenger, TextMessage
from topslot.channels.http import parse_retry_after
from topslot.channels.limits import Limits, LocalLimits, scaled
from topslot.channels.twilio_sms import TwilioMessages, classify, status_callback_url
from topslot.clock import Clock
from topslot.delivery import SuppressionReason
from topslot.errors import PermanentSendError, SendError, TransientSendError
from topslot.settings import Settings, WhatsAppProvider

PREFIX = "whatsapp:"  # Twilio's WhatsApp address: whatsapp:+E164
CONTENT_SID = re.compile(r"^HX[0-9a-fA-F]{32}$")

SESSION_CLOSED = 63016  # outside the 24-hour session window: an approved template only
SENDER_LIMIT = 63018  # the WhatsApp sender's messaging limit (rate, or business-initiated daily cap)
NOT_ON_WHATSAPP = frozenset({63003, 63024})  # invalid/inactive To on the channel; not a valid WhatsApp user
BLOCKED = 63014  # the recipient blocked the business or opted out
WITHHELD = frozenset({63032, 63049})  # Meta's marketing experiment; Meta chose not to deliver marketing
SENDER_CODES = frozenset({63007})  # the From is not a WhatsApp sender of this account

SENDER_LIMIT_BACKOFF = 600.0
"""Seconds to wait after 63018 without ``Retry-After`` (jittered up to twice that): the limit is
Meta's per sender, counted over hours, so coming back after 30 s only fails again."""


class TwilioWhatsApp(TwilioMessages):
    """The WhatsApp ``Messenger`` over Twilio (see the module docstring)."""

    channel: Channel = "im"

    def __init__(self, *, name: str = "whatsapp", from_number: str | None = None, **options: Any):
        sender = from_number if from_number is None or from_number.startswith(PREFIX) else PREFIX + from_number
        super().__init__(from_number=sender, **options)
        self.provider = name

    @classmethod
    def from_settings(
        cls, settings: Settings, name: str, *, limits: Limits | None = None, **options: Any
    ) -> TwilioWhatsApp:
        """``im.<name>`` (sender, rate, timeout, ``max_in_flight``, with ``share`` of the rate and of
        ``max_in_flight``) on the ``twilio`` account."""
        limits = limits or LocalLimits()
        provider = settings.im.get(name)
        if not isinstance(provider, WhatsAppProvider):
            raise ValueError(f"im.{name} is not a whatsapp provider")
        t = settings.twilio
        if not t.configured or t.account_sid is None or t.auth_token is None:
            raise ValueError(f"im.{name} sends WhatsApp through Twilio: configure twilio (account_sid, auth_token)")
        return cls(
            name=name,
            account_sid=t.account_sid,
            auth_token=t.auth_token.get_secret_value(),
            from_number=provider.from_number,
            messaging_service_sid=provider.messaging_service_sid,
            base_url=t.base_url,
            status_callback=status_callback_url(settings),
            rate_per_second=limits.own_rate(provider.rate_per_second),
            timeout=provider.timeout_seconds,
            max_in_flight=scaled(provider.max_in_flight, limits.share),
            pace=limits.pace(f"im:{name}", provider.rate_per_second),
            **options,
        )

    def _form(self, message: TextMessage) -> bytes:
        to = whatsapp_address(message.recipient_id)
        if to is None:
            raise PermanentSendError(
                f"{message.recipient_id!r} is not a phone number: a WhatsApp id is the number in E.164 "
                "(+14155550100); nothing was sent",
                code="invalid_to",
            )
        template = message.template
        if template is None:
            raise PermanentSendError(
                "WhatsApp takes marketing outside a 24-hour session only as an approved template: the "
                "campaign needs content.im.content_sid (HX...) and its variables; nothing was sent",
                code="template_required",
            )
        if not CONTENT_SID.match(template.sid):
            raise PermanentSendError(
                f"content SID {template.sid!r} is not HX + 32 hex digits; nothing was sent", code="invalid_content_sid"
            )
        fields = {"To": to, "ContentSid": template.sid}
        if template.variables:
            fields["ContentVariables"] = content_variables(template.variables)
        return (urlencode(fields) + self._shared_form).encode("ascii")

    def _refusal(self, status: int, code: int | None, text: str, retry_after: str | None) -> SendError:
        return classify_whatsapp(status, code, text, retry_after=retry_after, jitter=self._jitter, name=self.provider)


def build(settings: Settings, name: str, clock: Clock, limits: Limits) -> Messenger:
    """The registry's builder for ``im.<name>`` of kind ``whatsapp``."""
    return TwilioWhatsApp.from_settings(settings, name, limits=limits)


def whatsapp_address(recipient: str) -> str | None:
    """``whatsapp:+E164`` for a WhatsApp id (``+14155550100``, ``14155550100`` as WhatsApp writes ids,
    ``+1 415-555-0100``, or already ``whatsapp:+...``); None when it is no possible phone number."""
    text = unicodedata.normalize("NFKC", recipient).strip()
    text = text.removeprefix(PREFIX).strip()
    if not text or len(text) > 32:
        return None
    if not text.startswith("+"):
        text = "+" + text
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return PREFIX + phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def content_variables(variables: Mapping[str, str]) -> str:
    """``ContentVariables``: the template's variables as a compact JSON object string, keys in numeric
    order (``{"1":"Ada","2":"MOM20"}``); UTF-8, not ``\\u`` escapes."""
    ordered = sorted(variables.items(), key=lambda kv: (len(kv[0]), kv[0]))  # "2" before "10"
    return json.dumps(dict(ordered), ensure_ascii=False, separators=(",", ":"))


def classify_whatsapp(
    status: int,
    code: int | None,
    text: str,
    *,
    retry_after: str | None = None,
    jitter: Callable[[], float] = random.random,
    name: str = "whatsapp",
) -> SendError:
    """The ``Messenger`` error for a non-2xx answer to a WhatsApp message (the module docstring's table)."""
    if code is not None and code < 10000:  # the HTTP status, when the body has no code
        code = None
    label = f"Twilio HTTP {status}" + (f" error {code}" if code is not None else "")
    detail = f"{label}: {text}" if text else label
    if code == SESSION_CLOSED:
        return PermanentSendError(
            f"{detail} (outside the 24-hour session window WhatsApp takes only an approved template)", code=code
        )
    if code == SENDER_LIMIT:
        wait = parse_retry_after(retry_after)
        if wait is None:
            wait = SENDER_LIMIT_BACKOFF * (1 + jitter())
        return TransientSendError(
            f"{detail} (the WhatsApp sender's messaging limit; nothing was sent)", code=code, retry_after=wait
        )
    if code in NOT_ON_WHATSAPP:
        return PermanentSendError(
            f"{detail} (not a WhatsApp user)", code=code, suppress=True, suppress_reason=SuppressionReason.HARD_BOUNCE
        )
    if code == BLOCKED:
        return PermanentSendError(
            f"{detail} (the recipient blocked the sender or opted out)",
            code=code,
            suppress=True,
            suppress_reason=SuppressionReason.IM_BLOCKED,
        )
    if code in WITHHELD:
        return PermanentSendError(f"{detail} (Meta withheld this marketing message)", code=code)
    if code in SENDER_CODES:
        return TransientSendError(
            f"{detail}: the sender is not a WhatsApp sender of this Twilio account, nothing was sent; check "
            f"im.{name}.from_number (or messaging_service_sid)",
            code=code,
        )
    return classify(status, code, text, retry_after=retry_after, jitter=jitter)
