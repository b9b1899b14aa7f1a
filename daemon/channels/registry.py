"""Which messenger sends what: the one place that reads the ``smtp``, ``twilio`` and ``im`` settings.

A ``Provider`` says, for one (channel, provider name), whether the settings configure it, the rate it
takes, and how to build its ``Messenger``. For a channel the registry picks the first configured
provider of ``PROVIDERS`` in order, so a configured real provider wins over the outbox that is
always there (the newcomer's demo writes files; configure ``smtp`` or ``twilio`` and the same
campaign really sends). A campaign may ask for a provider by name (``content.im.provider``); when no
configured provider has that name the channel's default is used.

``Registry.rate`` is what send windows are sized by and what capacity warnings speak of: the whole
node's rate. ``share`` (1/N with N dispatch processes) divides each messenger's pool and rate so that
N processes together keep to the configured figures.

Adding a provider: one module with a ``Messenger`` and a ``Provider`` entry, listed in ``PROVIDERS``,
and one entry in the contract suite (``tests/channels/test_contract.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from daemon.channel import Channel, spec_of
from daemon.channels.base import Messenger
from daemon.clock import Clock, SystemClock
from daemon.settings import Settings

OUTBOX_RATE_PER_S = 1000.0
"""What windows are sized by for a messenger without a rate (a file outbox)."""


@dataclass(frozen=True)
class Provider:
    channel: Channel
    name: str
    configured: Callable[[Settings], bool]
    rate: Callable[[Settings], float | None]  # messages per second the provider takes; None: no limit
    build: Callable[[Settings, Clock, float], Messenger]  # (settings, clock, share) → messenger


class MessengerSource(Protocol):
    """What the dispatcher needs: a messenger per (channel, wanted provider), and closing them."""

    def messenger(self, channel: Channel, wanted: str | None = None) -> Messenger: ...

    async def close(self) -> None: ...


def _providers() -> tuple[Provider, ...]:
    from daemon.channels import outbox, smtp, twilio_sms

    return (smtp.PROVIDER, outbox.MAILDIR, twilio_sms.PROVIDER, outbox.SMS_FILE, outbox.IM_FILE)


class Registry:
    """The providers the settings configure, and their messengers (built on first use, kept)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        *,
        share: float = 1.0,
        providers: Sequence[Provider] | None = None,
    ):
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.settings = settings
        self.clock = clock or SystemClock()
        self.share = share
        self.providers = tuple(providers) if providers is not None else _providers()
        self._built: dict[tuple[str, str], Messenger] = {}

    def provider(self, channel: Channel, wanted: str | None = None) -> Provider:
        """The provider that sends ``channel`` (the one named ``wanted`` if it is configured)."""
        spec_of(channel)  # an unknown channel is a KeyError naming the known ones
        configured = [p for p in self.providers if p.channel == channel and p.configured(self.settings)]
        if not configured:
            raise LookupError(f"no provider for channel {channel!r} (not even an outbox)")
        named = [p for p in configured if p.name == wanted]
        return (named or configured)[0]

    def rate(self, channel: Channel, wanted: str | None = None) -> float:
        """Messages per second the channel's provider takes (the whole node's, all processes)."""
        rate = self.provider(channel, wanted).rate(self.settings)
        return rate if rate is not None else OUTBOX_RATE_PER_S

    def messenger(self, channel: Channel, wanted: str | None = None) -> Messenger:
        provider = self.provider(channel, wanted)
        key = (provider.channel, provider.name)
        messenger = self._built.get(key)
        if messenger is None:
            messenger = self._built[key] = provider.build(self.settings, self.clock, self.share)
        return messenger

    async def close(self) -> None:
        built, self._built = list(self._built.values()), {}
        for messenger in built:
            await messenger.close()
