"""A test kit for code that sends: messengers that keep what they are given (shipped with the
package, like Django's ``locmem`` mail backend, so tests of your own plug-ins and rehearsals use it).

- ``RecordingMessenger``: accepts everything, keeps every message in ``sent`` (in order), answers
  ``<provider>-<n>`` ids.
- ``ScriptedMessenger``: a ``RecordingMessenger`` whose answer per address is scripted: an
  exception to raise (``TransientSendError(...)`` and friends), a delay, or a callable
  ``(message) -> provider id | exception``; unscripted addresses are accepted.
- ``FixedMessengers``: a ``MessengerSource`` handing out given messengers per channel (what the
  dispatcher is built with in tests instead of the settings' registry).

Each honours the ``Messenger`` contract (``topslot.channels.base``) and passes its contract suite.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from topslot.channel import Channel
from topslot.channels.base import EmailEnvelope, Message, Messenger, handing_over
from topslot.errors import TransientSendError

Answer = BaseException | float | Callable[[Message], "str | BaseException"]


def address_of(message: Message) -> str:
    return message.rcpt_to if isinstance(message, EmailEnvelope) else message.to


class RecordingMessenger:
    """Accepts every message and keeps it (see the module docstring)."""

    def __init__(
        self,
        channel: Channel,
        *,
        provider: str = "recording",
        rate_per_second: float | None = None,
        drops_repeats: bool = False,
    ):
        self.channel: Channel = channel
        self.provider = provider
        self.rate_per_second = rate_per_second
        self.drops_repeats = drops_repeats
        self.sent: list[Message] = []
        self.attempts: list[Message] = []  # every call, refused ones too
        self.closed = False
        self._ids = itertools.count(1)

    async def send(self, message: Message) -> str:
        if self.closed:
            raise TransientSendError(f"{self.provider} is closed", code="closed")
        self.attempts.append(message)
        await handing_over()  # as a real messenger does before the message leaves
        scripted = self.answer(message)
        if isinstance(scripted, float | int) and not isinstance(scripted, bool):
            await asyncio.sleep(scripted)
            scripted = None
        result = scripted(message) if callable(scripted) else scripted
        if isinstance(result, BaseException):
            raise result
        self.sent.append(message)
        return result if isinstance(result, str) else f"{self.provider}-{next(self._ids)}"

    def answer(self, message: Message) -> Answer | None:
        return None

    async def close(self) -> None:
        self.closed = True

    def addresses(self) -> list[str]:
        """The address of every accepted message, in order."""
        return [address_of(m) for m in self.sent]


class ScriptedMessenger(RecordingMessenger):
    """Answers per address from ``script``: an exception, a delay in seconds, or a callable."""

    def __init__(self, channel: Channel, script: Mapping[str, Answer] | None = None, **kwargs: object):
        super().__init__(channel, **kwargs)  # type: ignore[arg-type]
        self.script: dict[str, Answer] = dict(script or {})

    def answer(self, message: Message) -> Answer | None:
        return self.script.get(address_of(message))


@dataclass
class FixedMessengers:
    """A ``MessengerSource`` over given messengers, one per channel (any wanted provider)."""

    by_channel: dict[str, Messenger] = field(default_factory=dict)
    closed: bool = False

    def messenger(self, channel: Channel, wanted: str | None = None) -> Messenger:
        return self.by_channel[channel]

    async def close(self) -> None:
        self.closed = True
        for messenger in self.by_channel.values():
            await messenger.close()
