"""Quiet hours: the local hours during which a channel must not reach a recipient (pure).

A window is written ``"HH:MM-HH:MM"`` in the recipient's local time, start included, end excluded;
one whose end is not after its start runs over midnight (``"21:00-08:00"``: 21:00 to 08:00 the
next morning). Each channel has a default (``ChannelSpec.quiet_hours``: SMS and IM 21:00–08:00, as
the US TCPA asks; none for email) that the settings' ``quiet_hours`` replace, per channel and per
country (``QuietRules``).

What happens to a message whose slot falls inside a window is the campaign's ``quiet_hours``:
``refuse`` (a validation problem), ``shift`` (send when the window opens, ``opening``) or ``skip``
(the row is ``skipped`` / ``quiet_hours``). A bucket that fires late is checked again when its rows
are claimed, so a late bucket never sends inside a window whatever the campaign says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from topslot.campaign import Campaign
from topslot.channel import CHANNELS, spec_of

_WINDOW_RE = re.compile(r"^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-3]):([0-5]\d)\s*$")
NONE_WORDS = ("none", "off")


@dataclass(frozen=True, slots=True)
class LocalWindow:
    """Local wall-clock hours [start, end), over midnight when ``end <= start``."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> LocalWindow:
        """``"21:00-08:00"`` → the window; ``ValueError`` saying how to write one otherwise."""
        m = _WINDOW_RE.match(text) if isinstance(text, str) else None
        if not m:
            raise ValueError(f"'{text}' is not a window of local hours; write e.g. '21:00-08:00' (or none)")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if (h1, m1) == (h2, m2):
            raise ValueError(f"'{text}' starts and ends at the same minute; write none for no quiet hours")
        return cls(time(h1, m1), time(h2, m2))

    def contains(self, local: time) -> bool:
        local = time(local.hour, local.minute)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def opening(self, local: datetime) -> datetime:
        """The first local wall-clock instant at or after ``local`` outside the window (``local``
        itself when it is outside): the window's end on the same day or the next."""
        if not self.contains(local.timetz()):
            return local
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        return end if end > local else end + timedelta(days=1)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def window_text(value: Any) -> str | None:
    """A settings value as a window's text: None (or ``none``/``off``) for no quiet hours; checked."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NONE_WORDS):
        return None
    if not isinstance(value, str):
        raise ValueError("quiet hours are written like '21:00-08:00' (or none)")
    return str(LocalWindow.parse(value))


@dataclass(frozen=True)
class QuietRules:
    """Which window applies to a channel for a recipient's country.

    ``channels``: channel → window text or None, over the channels' defaults; ``countries``: country →
    (channel → window text or None), over ``channels`` for that country."""

    channels: Mapping[str, str | None]
    countries: Mapping[str, Mapping[Any, str | None]]

    @classmethod
    def defaults(cls) -> QuietRules:
        return cls({ch: spec_of(ch).quiet_hours for ch in CHANNELS}, {})

    @classmethod
    def none(cls) -> QuietRules:
        """No quiet hours on any channel."""
        return cls(dict.fromkeys(CHANNELS), {})

    def window(self, channel: str, country: str | None) -> LocalWindow | None:
        text = self.channels.get(channel, spec_of(channel).quiet_hours)
        if country:
            text = self.countries.get(country, {}).get(channel, text)
        return _parsed(text) if text else None

    def windows(self, channel: str) -> dict[str | None, LocalWindow]:
        """The window of every country with its own rule for the channel, and of everybody else
        (key None); countries without quiet hours are left out."""
        found: dict[str | None, LocalWindow] = {}
        for country in (None, *sorted(self.countries)):
            window = self.window(channel, country)
            if window is not None and (country is None or channel in self.countries[country]):
                found[country] = window
        return found

    def quiet_at(self, channel: str, country: str | None, local: datetime) -> LocalWindow | None:
        """The window ``local`` (a recipient-local time) falls in, if any."""
        window = self.window(channel, country)
        return window if window is not None and window.contains(local.timetz()) else None


_PARSED: dict[str, LocalWindow] = {}


def _parsed(text: str) -> LocalWindow:
    window = _PARSED.get(text)
    if window is None:
        window = _PARSED[text] = LocalWindow.parse(text)
    return window


def quiet_hours_problems(campaign: Campaign, rules: QuietRules) -> list[tuple[tuple[str | int, ...], str]]:
    """(location in the campaign, message) for each slot of a channel that falls inside that channel's
    quiet hours, when the campaign leaves ``quiet_hours`` at ``refuse`` and plans in each recipient's
    own zone (with one fixed zone, recipients' local hours differ: ``plan`` counts what is skipped)."""
    if campaign.quiet_hours != "refuse" or campaign.schedule.timezone != "recipient":
        return []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, slot in enumerate(campaign.schedule.slots):
        local = time.fromisoformat(slot)
        for channel in campaign.channels:
            hits: dict[str, list[str]] = {}
            for country, window in rules.windows(channel).items():
                if window.contains(local):
                    hits.setdefault(str(window), []).append(country or "")
            for window_text_, countries in sorted(hits.items()):
                everyone = "" in countries
                where = "" if everyone else f" for recipients in {', '.join(c for c in countries if c)}"
                label = spec_of(channel).label
                opening = LocalWindow.parse(window_text_).end
                problems.append(
                    (
                        ("schedule", "slots", index),
                        f"the {label} slot {slot} falls inside {label} quiet hours {window_text_}{where} "
                        f"(settings quiet_hours); set quiet_hours: shift (send at {opening:%H:%M}) or skip, "
                        "or choose another slot",
                    )
                )
    return problems
