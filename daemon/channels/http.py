"""What every HTTP messenger (Twilio SMS and WhatsApp, Telegram, IM webhooks) shares: knowing whether
a request may have been written, and turning a failed exchange into the right ``Messenger`` error.

A provider without an idempotency key must never be asked twice for the same message, and it must
only be told "safe to send again" (``TransientSendError``) when nothing of the request left this
process. That is observed, not guessed:

- ``HttpClient`` (``topslot.channels.http_client``, the client every HTTP messenger posts with) flags
  the current send's ``Attempt`` as ``written`` right before the request's first byte goes to the
  socket. Until then (a bad URL, DNS, refused, TLS, waiting for a free connection) nothing left
  the process.
- ``hand_over(peer, timeout)`` is the ``async with`` around one request: it starts a fresh
  ``Attempt`` for this task (``current_attempt()`` finds it), bounds the exchange by one
  deadline (``asyncio.timeout``'s semantics: one loop timer) and maps what fails inside it:

  ==================================================  =========================================
  our timeout, nothing written                        ``TransientSendError`` code ``connect_timeout``
  our timeout after the request was written           ``AmbiguousSendError`` code ``timeout``
  ``ConnectFailed`` (DNS, refused, TLS: no            ``TransientSendError`` code ``connect``
  connection)
  any other ``OSError`` (``AnswerLost``: the peer     ``AmbiguousSendError`` code ``dropped``
  closed the connection, an answer that is not
  HTTP, a stale keep-alive), after the request
  was written
  the same before it was written                      ``TransientSendError`` code ``connect``
  ==================================================  =========================================

  Its ``secrets`` (a bot token in the URL, say) are replaced by ``***`` in every message it builds.

``SendGate`` is what each messenger does around every send (closed, ``max_in_flight``, pacing,
draining on close).

Also here: ``parse_retry_after`` (a ``Retry-After`` header), ``json_object`` (a JSON answer as a
dict, ``{}`` for anything else), ``header`` (a header by name without case), ``form_quote`` (a
form field value, as ``quote_plus``), ``basic_auth`` and ``redact``. The names are stable: other messengers import them.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from topslot.channels.base import handing_over
from topslot.channels.ratelimit import Pace, TokenBucket
from topslot.errors import AmbiguousSendError, TransientSendError

RETRY_AFTER_MOST = 3600.0
"""The longest wait a provider's ``Retry-After`` is believed for (seconds)."""


@dataclass(slots=True)
class Attempt:
    """What one send's HTTP request got to (set by the HTTP client)."""

    written: bool = False  # its first byte went to the socket: it may arrive


class ConnectFailed(OSError):  # noqa: N818 (an OSError, like ConnectionRefusedError)
    """No connection to the provider: nothing of the request left this process."""


class AnswerLost(OSError):  # noqa: N818
    """The request was (being) written and no complete answer came back: it may have arrived."""


_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar("http_attempt", default=None)


def current_attempt() -> Attempt | None:
    """The ``Attempt`` of the send running in this task (inside ``hand_over``), if any."""
    return _attempt.get()


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every (non-empty) secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class hand_over:  # noqa: N801 (used as ``async with hand_over(...)``, like a function)
    """One request to ``peer`` (a name for messages: "Twilio", "Telegram"), within ``timeout``
    seconds: ``async with hand_over(peer, timeout) as attempt: ...``; failures become
    ``TransientSendError`` or ``AmbiguousSendError`` (the module's table). Errors the body raises
    itself (a ``SendError`` from reading the answer) pass unchanged.

    A plain class, not an ``@asynccontextmanager``: it runs once per message sent, and a generator
    based manager costs several times more."""

    __slots__ = ("peer", "timeout", "secrets", "_attempt", "_token", "_task", "_cancelling", "_timer", "_expired")

    def __init__(self, peer: str, timeout: float, *, secrets: Iterable[str] = ()):
        self.peer = peer
        self.timeout = timeout
        self.secrets = secrets

    # The deadline is ``asyncio.timeout``'s logic without its object and coroutines per message: one
    # timer that cancels this task when it fires; leaving turns that cancellation (and only that one)
    # into the timeout, exactly as ``asyncio.Timeout.__aexit__`` does.

    async def __aenter__(self) -> Attempt:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("hand_over must be used inside a task")
        attempt = self._attempt = Attempt()
        self._token = _attempt.set(attempt)
        self._task, self._cancelling, self._expired = task, task.cancelling(), False
        self._timer = task.get_loop().call_later(self.timeout, self._expire)
        return attempt

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            self._timer.cancel()
            if self._expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                exc = TimeoutError()  # our deadline passed (the body was cancelled)
            if exc is not None:
                self._raise_for(exc)
        finally:
            _attempt.reset(self._token)

    def _raise_for(self, exc: BaseException) -> None:
        """The ``Messenger`` error for what failed inside (nothing: let it pass unchanged)."""
        peer, timeout, attempt = self.peer, self.timeout, self._attempt
        if isinstance(exc, TimeoutError):
            if attempt.written:
                raise AmbiguousSendError(
                    f"no answer from {peer} within {timeout:g} s after the request was sent", code="timeout"
                ) from None
            raise TransientSendError(
                f"could not reach {peer} within {timeout:g} s (nothing was sent)", code="connect_timeout"
            ) from None
        if isinstance(exc, ConnectFailed):  # DNS, refused, TLS: no connection, nothing sent
            hidden = tuple(s for s in self.secrets if s)
            raise TransientSendError(redact(f"could not connect to {peer}: {exc}", hidden), code="connect") from None
        if isinstance(exc, OSError):
            what = redact(f"{type(exc).__name__}: {exc}", tuple(s for s in self.secrets if s))
            if attempt.written:
                raise AmbiguousSendError(
                    f"connection lost after the request was sent: {what}", code="dropped"
                ) from None
            raise TransientSendError(f"connection to {peer} failed before sending: {what}", code="connect") from None


def parse_retry_after(value: str | float | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds, a number, or an HTTP date), within
    [0, ``RETRY_AFTER_MOST``]; ``None`` when there is none or it cannot be read."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        if not value.strip():
            return None
        value = value.strip()
        try:
            seconds = float(value)
        except ValueError:
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            # an HTTP date is the server's real time: compare with the real clock, not a simulated one
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_MOST)


def json_object(body: str | bytes) -> dict[str, Any]:
    """A JSON answer as a dict (``{}`` for anything else: classify by the HTTP status alone)."""
    try:
        value = orjson.loads(body) if body else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header's value by name, without case (also for a plain dict)."""
    if headers is None:
        return None
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name.lower()), None)
    return value


_FORM_BYTES = [
    chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "_.-~") else "+" if b == 0x20 else f"%{b:02X}"
    for b in range(256)
]


def form_quote(text: str) -> str:
    """``text`` as a form field value: exactly ``urllib.parse.quote_plus(text)`` (UTF-8, ``%XX``,
    space as ``+``), by a table lookup per byte rather than Python's loop over the bytes."""
    return "".join(map(_FORM_BYTES.__getitem__, text.encode()))


def basic_auth(user: str, password: str) -> str:
    """An ``Authorization: Basic`` header value (without aiohttp's deprecated ``BasicAuth``)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class SendGate:
    """What an HTTP messenger does around every send: refuse once closed, keep at most
    ``max_in_flight`` requests open, pace them by ``pace`` (the registry's ``Limits``; else a
    ``TokenBucket`` at ``rate_per_second``: ``bucket``), and on ``drain``
    refuse new ones and let those in flight finish (each is bounded by its own timeout).

    ``async with gate.slot(): ...`` around one request; ``await gate.drain()`` in ``close()``."""

    def __init__(
        self,
        name: str,
        *,
        rate_per_second: float,
        max_in_flight: int,
        timeout: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        pace: Pace | None = None,
    ):
        if timeout <= 0 or max_in_flight < 1:  # every messenger's settings, checked once here
            raise ValueError("timeout must be > 0 and max_in_flight >= 1")
        self.name = name
        self.timeout = timeout
        self.bucket: Pace = pace if pace is not None else TokenBucket(rate_per_second, clock=monotonic, sleep=sleep)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._active = 0
        self._idle: asyncio.Event | None = None
        self.closed = False

    def refuse_if_closed(self) -> None:
        if self.closed:
            raise TransientSendError(f"the {self.name} messenger is closed", code="closed")

    def slot(self) -> SendGate:
        """One request's turn: a free place in flight, then a rate token; the request is sent
        inside the block (``async with gate.slot(): ...``), right after the hand-over is on record
        (``handing_over``). The gate itself is the context manager: nothing is built per message."""
        return self

    async def __aenter__(self) -> None:
        self.refuse_if_closed()
        await self._slots.acquire()
        try:
            await self.bucket.acquire()
            self.refuse_if_closed()
            await handing_over()
        except BaseException:
            self._slots.release()
            raise
        self._active += 1

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._active -= 1
        if self._active == 0 and self._idle is not None:
            self._idle.set()
        self._slots.release()

    async def drain(self) -> None:
        """Close the gate; wait (at most the timeout + 1 s) for the requests in flight. Idempotent."""
        self.closed = True
        if self._active:
            self._idle = self._idle or asyncio.Event()
            self._idle.clear()
            try:
                async with asyncio.timeout(self.timeout + 1):
                    await self._idle.wait()
            except TimeoutError:
                pass
