"""What the dispatcher sees of a channel: a message in, a provider id out, or a SendError."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EmailEnvelope:
    """One rendered email, ready for SMTP: envelope addresses and the complete RFC 5322 bytes (CRLF)."""

    delivery_id: int
    mail_from: str
    rcpt_to: str
    data: bytes


@dataclass(frozen=True, slots=True)
class TextMessage:
    """One rendered SMS or IM push."""

    delivery_id: int
    to: str  # E.164 phone, or "provider:id" for IM
    body: str


class EmailSender(Protocol):
    async def send(self, message: EmailEnvelope) -> str:
        """Hand one message over; return the provider's id for it (for SMTP, the queue id or the
        Message-ID). Raise TransientSendError, PermanentSendError or AmbiguousSendError."""
        ...

    async def close(self) -> None:
        """Close connections; idempotent."""
        ...


class TextSender(Protocol):
    async def send(self, message: TextMessage) -> str:
        """Hand one SMS or IM push over; return the provider's id for it. Raise TransientSendError,
        PermanentSendError or AmbiguousSendError."""
        ...

    async def close(self) -> None:
        """Release connections and files; idempotent."""
        ...
