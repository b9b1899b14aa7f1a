"""The one contract between the dispatcher and every provider: ``Messenger``.

The dispatcher renders a message, hands it to the messenger the registry chose for its channel and
campaign, and records what came back; it never sees a vendor library, and a messenger never sees
the ledger. A provider (SMTP, Twilio, an outbox file, a Telegram bot ...) is one module with one
class implementing ``Messenger`` and one ``Provider`` entry (see ``topslot.channels.registry``); the
contract suite in ``tests/channels/test_contract.py`` runs over each of them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from topslot.channel import Channel
from topslot.errors import TransientSendError


@dataclass(frozen=True, slots=True)
class EmailEnvelope:
    """One rendered email, ready for SMTP: envelope addresses and the complete RFC 5322 bytes (CRLF).
    ``crlf``: its maker guarantees that every line of ``data`` ends in CRLF, with no bare CR or LF
    (``MimeAssembler``'s output), so the SMTP transport does not scan it for them again."""

    delivery_id: int
    mail_from: str
    rcpt_to: str
    data: bytes
    crlf: bool = False


@dataclass(frozen=True, slots=True)
class Card:
    """An IM message's structured part: a title, the tracked landing link shown as a button, the coupon."""

    title: str | None
    link: str
    button: str
    coupon: str | None


@dataclass(frozen=True, slots=True)
class ContentTemplate:
    """A provider-approved template (WhatsApp): its content SID and the rendered variables by number."""

    sid: str
    variables: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TextMessage:
    """One rendered SMS or IM push.

    ``to``: the channel's address (``ChannelSpec.address``): an E.164 phone for SMS, ``provider:id``
    for IM (``whatsapp:+E164``, ``telegram:<chat id>``, ``wecom:<user id>``; ``recipient_id`` is the
    part after the provider). ``key``: the ledger's idempotency key for this delivery
    (``delivery_id`` as text; a proof's own ``proof_key``, since every proof has delivery id 0), for
    providers that can drop a duplicate. IM messages carry a
    ``card`` and, for template-only networks, a ``template``; SMS carry neither."""

    delivery_id: int
    to: str
    body: str
    card: Card | None = None
    template: ContentTemplate | None = None
    campaign_id: str | None = None
    proof_key: str | None = None  # a proof (``topslot send-test``): its own idempotency key

    @property
    def key(self) -> str:
        return self.proof_key or str(self.delivery_id)

    @property
    def recipient_id(self) -> str:
        """The address without its ``provider:`` prefix (an IM network's own id for the recipient)."""
        return self.to.partition(":")[2] or self.to


Message = EmailEnvelope | TextMessage


@runtime_checkable
class Messenger(Protocol):
    """Hands rendered messages of one channel to one provider.

    Attributes:

    ``channel``
        The channel it sends on (``topslot.channel.Channel``).
    ``provider``
        The provider's name, as recorded on each ledger row it sends (the report counts rows of
        ``outbox`` as outbox writes, not paid sends): ``smtp``, ``twilio``,
        ``outbox``, and for IM the provider's name in the settings' ``im:`` section (``telegram``,
        ``wecom``, ...), which is also the contacts' ``im_<name>`` key. At most 20 characters.
    ``rate_per_second``
        The rate its pace is set to: the configured figure when the registry's limits are shared
        (every process and node keeps to it together), this process's share of it when they are
        in process (``topslot.channels.limits``). ``None``: no limit (a file outbox). Send windows
        are sized by the registry from the same setting (``Provider.rate``), as configured.
    ``drops_repeats``
        True when the provider drops a repeated request for a message it already has (it honours
        the message's ``key`` as an idempotency key: the IM webhook gateway's ``Idempotency-Key``),
        so a message sent twice reaches its recipient once. The dispatcher then puts the hand-over
        on record without waiting for the disk (``HandoverJournal.mark(id, synced=False)``): a crash
        of the process keeps the record, a power loss may not, and a message it forgot is sent again
        after the restart, under the same key, for the provider to drop. False for SMTP, Twilio, Telegram and
        the outboxes (none has such a key): their hand-overs are fsynced before they leave.
    """

    channel: Channel
    provider: str
    rate_per_second: float | None
    drops_repeats: bool

    async def send(self, message: Message) -> str:
        """Hand one message over and return the provider's id for it (non-empty; for SMTP the
        queue id or Message-ID, for Twilio the message SID), once the provider has accepted it.

        Raises exactly one of (``topslot.errors``):

        - ``TransientSendError``: the provider did not take it and certainly will not deliver it
          (refused before accepting, 4xx, 429, could not connect). Sending the same message again
          later is safe; ``retry_after`` (seconds) may say when.
        - ``PermanentSendError``: refused for good (invalid address, 5xx, opted out). Do not send
          it again. ``suppress=True``: the address itself is dead or opted out (hard bounce, Twilio
          21610 STOP) and goes on the suppression list.
        - ``AmbiguousSendError``: it may or may not have been accepted (the connection dropped or
          timed out after the request was written, a 5xx that may have created it). Never send it
          again automatically: the ledger marks it ``unknown``.

        Anything else it raises is treated as ambiguous (``unknown``), so a messenger must raise
        ``TransientSendError`` only when it knows nothing left this process that could be
        delivered. It may be called concurrently for many messages; it bounds its own concurrency
        and paces itself to ``rate_per_second`` (waiting, not failing, when over it). If the call is
        cancelled the message counts as possibly sent. After ``close`` it raises
        ``TransientSendError``.

        Right before the first byte of the message leaves the process (the SMTP body, the HTTP
        request, the file write), it awaits ``handing_over()``, and lets nothing of the message leave
        until that returns; if that raises, it raises ``TransientSendError`` (nothing left) after
        closing what it had started (a connection in the middle of DATA). Waiting for a rate token,
        a connection or a slot comes before it, not after.
        """
        ...

    async def close(self) -> None:
        """Release connections and files. Idempotent; sends still in flight may finish."""
        ...


# ---------------------------------------------------------------- the hand-over hook

HandoverHook = Callable[[], Awaitable[None]]
_handover: contextvars.ContextVar[HandoverHook | None] = contextvars.ContextVar("handover", default=None)


async def handing_over() -> None:
    """What a messenger awaits right before the first byte of the message it is sending leaves the
    process (see ``Messenger.send``): the dispatcher puts the hand-over on record there (its journal,
    ``topslot.dispatch.journal``), so a crash can tell the messages that were on the wire from those
    that provably never left, and checks the process is not fenced. Outside a dispatcher's send it
    returns at once. When the record cannot be made, or the process is fenced, it raises
    ``TransientSendError``: the message must not leave, and did not."""
    hook = _handover.get()
    if hook is None:
        return
    try:
        await hook()
    except TransientSendError:  # the hook's own reason (the process is fenced: topslot.dispatch.heartbeat)
        raise
    except Exception as exc:
        raise TransientSendError(f"the hand-over could not be recorded: {exc}", code="journal") from exc


def on_handover(hook: HandoverHook | None) -> None:
    """Make ``hook`` what ``handing_over`` awaits in the current task (the dispatcher, per message)."""
    _handover.set(hook)
