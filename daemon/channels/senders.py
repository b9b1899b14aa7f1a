"""Pick the transport for each channel from the settings."""

from __future__ import annotations

from typing import Literal

from daemon.channels.base import EmailSender, TextSender
from daemon.channels.outbox import JsonlTextOutbox, MaildirOutbox
from daemon.channels.smtp import SmtpPool
from daemon.clock import Clock
from daemon.settings import Settings


def email_sender_for(settings: Settings) -> EmailSender:
    """The SMTP pool when ``smtp`` servers are configured, else the Maildir outbox (the demo)."""
    if settings.smtp:
        return SmtpPool(settings.smtp)
    assert settings.outbox_dir is not None  # resolved by Settings
    return MaildirOutbox(settings.outbox_dir)


def text_outbox_for(settings: Settings, channel: Literal["sms", "im"], clock: Clock | None = None) -> TextSender:
    """The file outbox for SMS or IM: ``<outbox_dir>/sms.jsonl`` or ``im.jsonl``."""
    assert settings.outbox_dir is not None
    return JsonlTextOutbox(settings.outbox_dir / f"{channel}.jsonl", channel=channel, clock=clock)
