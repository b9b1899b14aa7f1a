"""Which messenger sends what: the one place that reads the ``smtp``, ``twilio`` and ``im`` settings.

A ``Provider`` says, for one (channel, provider name), whether the settings configure it, the rate it
takes, and how to build its ``Messenger``. For a channel the registry picks the first configured
provider in order, so a configured real provider wins over the outbox that is always there (the
newcomer's demo writes files; configure ``smtp`` or ``twilio`` and the same campaign really sends).
IM providers are the ``im.<name>`` settings, one ``Provider`` each, built by the module of their
``kind``; a campaign names the one it sends through (``content.im.provider``), and since an IM id
only fits its own network, an IM campaign that names none (or one that is not configured) goes to
the outbox.

``Registry.rate`` is what send windows are sized by and what capacity warnings speak of: the
provider's rate as configured, which every process and node together keep to. The registry's
``Limits`` (``topslot.channels.limits``) hold each messenger's rate and per-domain limits: shared in
PostgreSQL or Redis by every process and node, or in process (SQLite: one node), where each of N
dispatch processes keeps to ``share`` (1/N) of them; pools are each process's own, divided by ``share``
in every case.

Adding a provider: one module with a ``Messenger`` and a ``Provider`` entry, listed in ``PROVIDERS``,
and one entry in the contract suite (``tests/channels/test_contract.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from topslot.channel import OUTBOX_PROVIDER, Channel, spec_of
from topslot.channels.base import Messenger
from topslot.channels.limits import Limits, LocalLimits, scaled
from topslot.clock import Clock, SystemClock
from topslot.settings import Settings

OUTBOX_RATE_PER_S = 1000.0
"""What windows are sized by for a messenger without a rate (a file outbox)."""


@dataclass(frozen=True)
class Provider:
    channel: Channel
    name: str
    configured: Callable[[Settings], bool]
    rate: Callable[[Settings], float | None]  # messages per second the provider takes; None: no limit
    build: Callable[[Settings, Clock, Limits], Messenger]  # (settings, clock, limits) → messenger


__all__ = ["Provider", "Registry", "scaled"]


class MessengerSource(Protocol):
    """What the dispatcher needs: a messenger per (channel, wanted provider), and closing them."""

    def messenger(self, channel: Channel, wanted: str | None = None) -> Messenger: ...

    async def close(self) -> None: ...


ImBuilder = Callable[[Settings, str, Clock, Limits], Messenger]
"""Builds the messenger of IM provider ``name`` (settings, name, clock, limits)."""


def _im_kinds() -> dict[str, ImBuilder]:
    """``im.<name>.kind`` → the module that sends it (one entry per kind)."""
    from topslot.channels import im_webhook, telegram, twilio_whatsapp

    return {"telegram": telegram.build, "whatsapp": twilio_whatsapp.build, "webhook": im_webhook.build}


def im_providers(settings: Settings) -> tuple[Provider, ...]:
    """One ``Provider`` per configured ``im.<name>`` (its name is the contacts' ``im_<name>`` key)."""
    if not settings.im:
        return ()
    kinds = _im_kinds()
    return tuple(
        Provider(
            "im",
            name,
            configured=lambda s: True,
            rate=lambda s, name=name: s.im[name].rate_per_second,  # type: ignore[misc]
            build=lambda s, clock, limits, name=name, kind=kinds[p.kind]: kind(s, name, clock, limits),  # type: ignore[misc]
        )
        for name, p in settings.im.items()
    )


def _providers(settings: Settings) -> tuple[Provider, ...]:
    from topslot.channels import outbox, smtp, twilio_sms

    return (
        smtp.PROVIDER,
        outbox.MAILDIR,
        twilio_sms.PROVIDER,
        outbox.SMS_FILE,
        *im_providers(settings),
        outbox.IM_FILE,
    )


def route_lines(campaign: Any, settings: Settings) -> list[str]:
    """How each of a campaign's channels would go out with these settings, and which contact column
    it needs (for ``topslot validate``): ``sms: twilio (contacts' phone)``."""
    registry = Registry(settings)
    lines = []
    for channel in campaign.channels:
        spec = spec_of(channel)
        provider = registry.provider(channel, campaign.provider_for(channel))
        if spec.keyed:
            key = provider.name if provider.name != OUTBOX_PROVIDER else campaign.provider_for(channel)
            column = f"im_{key}" + (" or phone" if key in spec.phone_keys else "") if key else "an im_<name> id"
        else:
            column = spec.contact_field
        via = "outbox (files, not sent)" if provider.name == OUTBOX_PROVIDER else provider.name
        lines.append(f"{channel}: {via} (contacts' {column})")
    return lines


def provider_problems(campaign: Any, settings: Settings) -> list[tuple[tuple[str, ...], str]]:
    """(YAML path, message) for each provider a campaign names that these settings cannot send with,
    and each ``content.im`` key that would change nothing with that provider."""
    im = campaign.content.im
    if im is None or "im" not in campaign.channels:
        return []
    known = ", ".join(sorted(settings.im)) or "none configured"
    if im.provider is None:
        if settings.im:
            return [(("content", "im"), f"name the IM provider it sends through (content.im.provider): {known}")]
        return []  # no IM provider anywhere: the IM outbox (which shows every part)
    provider = settings.im.get(im.provider)
    if provider is None:
        return [(("content", "im", "provider"), f"IM provider '{im.provider}' is not in the settings (im: {known})")]
    problems: list[tuple[tuple[str, ...], str]] = []
    if provider.kind == "whatsapp":
        if not im.content_sid:
            problems.append(
                (
                    ("content", "im"),
                    f"'{im.provider}' sends WhatsApp: marketing messages must be approved templates; set "
                    "content.im.content_sid (HX...) and its variables",
                )
            )
        problems += [
            (("content", "im", key), f"'{im.provider}' sends WhatsApp templates only: {key} changes nothing; remove it")
            for key in ("title", "button")
            if key in im.model_fields_set
        ]
    else:
        problems += [
            (
                ("content", "im", key),
                f"{key} is for WhatsApp templates; '{im.provider}' is a {provider.kind} provider: remove it",
            )
            for key in ("content_sid", "variables")
            if getattr(im, key)
        ]
    return problems


class Registry:
    """The providers the settings configure, and their messengers (built on first use, kept).

    ``limits``: where the messengers' limits are held (it is the registry's: closed with it); by
    default in this process, at ``share`` of each figure."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        *,
        share: float = 1.0,
        limits: Limits | None = None,
        providers: Sequence[Provider] | None = None,
    ):
        self.limits = limits if limits is not None else LocalLimits(share)
        self.settings = settings
        self.clock = clock or SystemClock()
        self.share = self.limits.share
        self.providers = tuple(providers) if providers is not None else _providers(settings)
        self._built: dict[tuple[str, str], Messenger] = {}

    def provider(self, channel: Channel, wanted: str | None = None) -> Provider:
        """The provider that sends ``channel`` (the one named ``wanted`` if it is configured)."""
        spec_of(channel)  # an unknown channel is a KeyError naming the known ones
        configured = [p for p in self.providers if p.channel == channel and p.configured(self.settings)]
        if not configured:
            raise LookupError(f"no provider for channel {channel!r} (not even an outbox)")
        named = [p for p in configured if p.name == wanted]
        if named:
            return named[0]
        if spec_of(channel).keyed:  # an IM network's ids only fit its own provider: else the outbox
            return next(p for p in configured if p.name == OUTBOX_PROVIDER)
        return configured[0]

    def rate(self, channel: Channel, wanted: str | None = None) -> float:
        """Messages per second the channel's provider takes: the configured figure, all processes
        and nodes together (with shared limits they keep to it together; in process, N dispatch
        processes each keep to 1/N of it)."""
        rate = self.provider(channel, wanted).rate(self.settings)
        return rate if rate is not None else OUTBOX_RATE_PER_S

    def messenger(self, channel: Channel, wanted: str | None = None) -> Messenger:
        provider = self.provider(channel, wanted)
        key = (provider.channel, provider.name)
        messenger = self._built.get(key)
        if messenger is None:
            messenger = self._built[key] = provider.build(self.settings, self.clock, self.limits)
        return messenger

    async def close(self) -> None:
        """Close every messenger built (at once: each drains what it has in flight)."""
        built, self._built = list(self._built.values()), {}
        await asyncio.gather(*(messenger.close() for messenger in built))
        await self.limits.close()
