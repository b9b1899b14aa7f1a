"""Rate and concurrency limits shared by every process and node: each provider's ``rate_per_second``
and each receiving domain's ``max_per_domain`` hold for all of them together (three nodes at 50/s
send 50/s in total), kept in a ``LimitStore`` (PostgreSQL: ``topslot.store.limits``; Redis:
``topslot.channels.redis_limits``).

``SharedTokenBucket`` (a ``Pace``): the store holds one token bucket per limit, refilled by the
store's own clock (no clock skew between nodes), with the arithmetic of ``ratelimit.refill``. A
process takes tokens in batches, one round trip for several messages: as many as it has waiters,
at most ``lookahead`` (0.1 s) worth of the rate; while the rate does not bind (the store's balance
stayed positive) also as many as came in the last ``lookahead`` (its own recent demand), so that a
process not held back by the rate makes few round trips. It takes the next batch only when the
tokens it holds run out within ``lookahead``. The store's balance may go negative: tokens are
reserved ahead in the order the round trips arrive, each batch due as ``ratelimit.due_delays``
says, so processes interleave in slices of at most ``lookahead`` and together never pass the rate.
A token not used within ``lookahead`` of its due time is dropped (using it late would be a burst);
a waiter cancelled after its token came passes the token on; ``close`` gives the unused tokens back
(``give_back``).

``SharedKeyedLimiter`` (a ``Slots``): each key (a receiving domain) has ``limit`` slots in the
store, each a lease of ``ttl`` seconds held by one process (its ``holder`` id) and renewed every
``ttl / 3`` seconds while held (one round trip for all of them), so a process that dies frees its
slots within ``ttl`` (10 s) without anyone noticing its death. A slot this process is done with goes
to its next waiter for that key with no round trip; with no waiter it lingers ``linger`` (50 ms) for
the next message to the domain, then is freed in the store with the others that lingered (one round
trip per sweep). So a busy domain costs about no round trips per message, a domain seen once costs
one (the grab; the grabs asked for meanwhile, for any keys, share one round trip). A process that
finds every slot of a key held waits for one of its own to come back, or for its poller (one per
key and process) to find one in the store (asking again at once after a find, else after 50 ms,
growing to 250 ms) — the only polling here, and only while a domain is at its limit. A process
paused for longer than ``ttl`` (SIGSTOP, a swap storm) may find its slot given to another: leases
are the last safety net, as for the ledger's rows.

When the store cannot be reached, the round trip is tried again (0.1 s, doubling to 1 s) for up to
``HOLD_WHEN_DOWN`` (10 s): a dropped connection or a restarting server costs the waiters seconds.
Then they fail with ``TransientSendError`` (code ``limits_unavailable``): the message is retried
later, never sent past the limit. The first failure
logs ``shared_limits_unavailable`` (warning), the first success after it ``shared_limits_restored``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from topslot import metrics
from topslot.channels.ratelimit import default_burst, due_delays
from topslot.errors import TransientSendError
from topslot.logs import get_logger

log = get_logger("dispatch")
T = TypeVar("T")

LOOKAHEAD = 0.1  # seconds of the rate a process reserves ahead at most (the batch size)
SLOT_TTL = 10.0  # seconds a domain slot's lease lasts unless renewed (a dead process's slots free by then)
LINGER = 0.05  # seconds a process keeps a slot it no longer uses, for its next message to the domain
POLL_FIRST, POLL_MOST = 0.05, 0.25  # seconds between tries while every slot of a key is held
HOLD_WHEN_DOWN = 10.0  # seconds the store is tried again before waiting messages fail
RETRY_AFTER = 5.0  # what a message that could not reach the store is told (seconds)


class LimitStore(Protocol):
    """Where shared limits live. Every method is one round trip and atomic in the store; each is
    safe to call from many processes at once. ``round_trips`` counts the calls made (the bench).

    Names (``name``, ``scope``) are the limit's: ``smtp:<server>``, ``twilio``, ``im:<name>``;
    ``key`` is the receiving domain. Raising anything means the store could not be reached or
    refused; nothing was taken then."""

    round_trips: int

    async def take(self, name: str, count: int, rate: float, burst: float) -> float:
        """Refill bucket ``name`` (created full at ``burst``) by the store's clock at ``rate``, take
        ``count`` tokens, return the balance after (``ratelimit.refill``; negative: reserved ahead)."""
        ...

    async def give_back(self, name: str, count: int, burst: float) -> None:
        """Return ``count`` taken tokens that will not be used (the balance stays at most ``burst``)."""
        ...

    async def grab(
        self, scope: str, wanted: Mapping[str, int], limit: int, holder: str, ttl: float
    ) -> dict[str, list[Hashable]]:
        """For each key of ``wanted``, up to that many of its ``limit`` slots for ``holder`` for ``ttl``
        seconds (a slot whose lease ran out counts as free; fewer, or none, when they are held):
        key → the slots' handles (for ``free`` and ``renew``); a key that got none may be left out."""
        ...

    async def free(self, scope: str, slots: Sequence[tuple[str, Hashable]], holder: str) -> None:
        """Free these (key, handle) slots of ``holder``'s (a slot no longer its own is left alone)."""
        ...

    async def renew(self, holder: str, held: Sequence[tuple[str, str, Hashable]], ttl: float) -> None:
        """Extend the leases of ``holder``'s slots (scope, key, handle) to ``ttl`` from now."""
        ...

    async def close(self) -> None: ...


class StoreHealth:
    """Round trips to the store, tried again while it fails, for up to ``hold`` seconds (a dropped
    connection, a restarting server: the waiters wait seconds, as for an SMTP server that is down);
    then the waiters fail as transient. Logs the first failure and the recovery once each."""

    def __init__(self, kind: str, *, hold: float = HOLD_WHEN_DOWN):
        self.kind = kind
        self.hold = hold
        self.failing = False

    async def call(self, round_trip: Callable[[], Awaitable[T]]) -> T:
        """``round_trip()``, again after 0.1 s (doubling to 1 s) while it raises, until ``hold``
        seconds have passed since the first failure: then ``TransientSendError`` (``limits_unavailable``)."""
        give_up_at: float | None = None
        pause = 0.1
        while True:
            try:
                result = await round_trip()
            except Exception as exc:
                metrics.SHARED_LIMIT_FAILURES.labels(self.kind).inc()
                if not self.failing:
                    log.warning("shared_limits_unavailable", store=self.kind, error=repr(exc)[:300])
                    self.failing = True
                now = time.monotonic()
                give_up_at = give_up_at if give_up_at is not None else now + self.hold
                if now + pause > give_up_at:
                    raise TransientSendError(
                        f"the shared rate limits ({self.kind}) did not answer: {type(exc).__name__}",
                        code="limits_unavailable",
                        retry_after=RETRY_AFTER,
                    ) from None
                await asyncio.sleep(pause)
                pause = min(1.0, pause * 2)
                continue
            if self.failing:
                log.info("shared_limits_restored", store=self.kind)
                self.failing = False
            return result


class SharedTokenBucket:
    """``rate`` tokens per second for every process using ``name`` in ``store`` together (see the
    module docstring). ``acquire`` is the ``Pace`` contract."""

    def __init__(
        self,
        store: LimitStore,
        name: str,
        rate: float,
        *,
        health: StoreHealth,
        burst: float | None = None,
        lookahead: float = LOOKAHEAD,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ):
        if rate <= 0 or lookahead <= 0:
            raise ValueError("rate and lookahead must be > 0")
        self.store, self.name, self.rate = store, name, rate
        self.burst = burst if burst is not None else default_burst(rate)
        self.batch = max(1, math.floor(rate * lookahead))
        self.lookahead = lookahead
        self.health = health
        self._clock, self._sleep = clock, sleep
        self._tokens: deque[float] = deque()  # due times (clock) of tokens taken, nobody's yet
        self._waiters: deque[asyncio.Future[float]] = deque()
        self._recent: deque[float] = deque()  # when each acquire of the last ``lookahead`` s came
        self._filling: asyncio.Task[None] | None = None
        self._binding = False  # the last take left the store's bucket in debt

    def wanted(self) -> int:
        """How many tokens the next round trip takes, at most ``batch``: while the rate binds (the
        last take left a debt), the waiters' (a token taken for a caller that does not come would
        be lost to every process); while it does not, also as many as came in the last
        ``lookahead`` seconds (what will likely come in the next: fewer round trips)."""
        demand = len(self._waiters) if self._binding else max(len(self._waiters), len(self._recent))
        return min(self.batch, max(demand, 1))

    async def acquire(self) -> None:
        now = self._clock()
        self._recent.append(now)
        while self._recent[0] < now - self.lookahead:
            self._recent.popleft()
        while self._tokens and self._tokens[0] < now - self.lookahead:
            self._tokens.popleft()  # unused for too long: dropped (using them late would be a burst)
        if self._tokens and not self._waiters:
            due = self._tokens.popleft()
        else:
            waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            if self._filling is None or self._filling.done():
                self._filling = asyncio.create_task(self._fill(), name=f"rate-{self.name}")
            try:
                due = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._pass_on(waiter.result())
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        delay = due - self._clock()
        if delay > 0:
            try:
                await self._sleep(delay)
            except asyncio.CancelledError:
                self._pass_on(due)
                raise

    def _pass_on(self, due: float) -> None:
        """A token whose waiter left: the next waiter's, else kept for the next acquire."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(due)
                return
        self._tokens.appendleft(due)

    def _hand_out(self) -> None:
        while self._tokens and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._tokens.popleft())

    async def _fill(self) -> None:
        """While there are waiters: take a batch, hand it out in order, and take the next one no
        earlier than ``lookahead`` before the last token taken is due."""
        while True:
            self._hand_out()
            if not self._waiters:
                return
            count = self.wanted()
            try:
                balance = await self.health.call(partial(self.store.take, self.name, count, self.rate, self.burst))
            except TransientSendError as error:
                while self._waiters:
                    waiter = self._waiters.popleft()
                    if not waiter.done():
                        waiter.set_exception(error)
                return
            self._binding = balance < 0
            now = self._clock()
            self._tokens.extend(now + delay for delay in due_delays(balance, count, self.rate))
            last = self._tokens[-1]
            self._hand_out()
            ahead = last - self._clock() - self.lookahead
            if self._waiters and ahead > 0:
                await self._sleep(ahead)

    async def close(self) -> None:
        """Give the tokens taken and not used back to the store (one round trip)."""
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling
        unused = len(self._tokens)
        self._tokens.clear()
        if unused:
            with contextlib.suppress(Exception):  # the tokens are lost then: the rate dips, never rises
                await self.store.give_back(self.name, unused, self.burst)


@dataclass(eq=False)
class _Key:
    waiters: deque[asyncio.Future[Hashable]] = field(default_factory=deque)
    spare: deque[tuple[Hashable, float]] = field(default_factory=deque)  # held, unused since (clock)
    poller: asyncio.Task[None] | None = None  # asks the store for more while there are waiters
    owned: int = 0  # slots of the key this process holds (in use or spare) or is asking the store for
    users: int = 0  # holders and waiters in this process


class SharedKeyedLimiter:
    """At most ``limit`` holders of a key at once across every process using ``scope`` in ``store``
    (see the module docstring). ``hold`` is the ``Slots`` contract."""

    def __init__(
        self,
        store: LimitStore,
        scope: str,
        limit: int,
        holder: str,
        *,
        health: StoreHealth,
        ttl: float = SLOT_TTL,
        linger: float = LINGER,
        poll: tuple[float, float] = (POLL_FIRST, POLL_MOST),
        clock: Callable[[], float] = time.monotonic,
    ):
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.store, self.scope, self.limit, self.holder = store, scope, limit, holder
        self.ttl, self.linger, self.poll = ttl, linger, poll
        self.health = health
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self._held: dict[tuple[str, Hashable], None] = {}  # (key, handle) of the slots held now
        self._asked: dict[str, list[tuple[_Key, asyncio.Future[Hashable | None]]]] = {}  # for the next grab
        self._grabbing: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None
        self._renewing: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Key()
        state.users += 1
        try:
            handle = await self._take(key, state)
            try:
                yield
            finally:
                self._give(state, handle)
        finally:
            state.users -= 1
            self._forget_if_idle(key, state)

    def held(self) -> int:
        """Slots this process holds in the store now (in use or lingering)."""
        return len(self._held)

    def _forget_if_idle(self, key: str, state: _Key) -> None:
        if state.users == 0 and not state.waiters and not state.spare and state.owned == 0:
            if self._keys.get(key) is state:  # not a newer state of the same key, made since
                del self._keys[key]

    async def _take(self, key: str, state: _Key) -> Hashable:
        if state.spare:  # a slot this process holds and nobody uses: no round trip
            return state.spare.pop()[0]
        if not state.waiters and state.owned < self.limit:  # the key may have room: ask the store
            handle = await self._ask(key, state)
            if handle is not None:
                return handle
        # the key is at its limit: wait for a slot of this process's own, or one the poller finds
        waiter: asyncio.Future[Hashable] = asyncio.get_running_loop().create_future()
        state.waiters.append(waiter)
        if state.poller is None or state.poller.done():
            state.poller = asyncio.get_running_loop().create_task(self._poll(key, state))
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give(state, waiter.result())
            else:
                with contextlib.suppress(ValueError):
                    state.waiters.remove(waiter)
            raise

    async def _ask(self, key: str, state: _Key) -> Hashable | None:
        """One slot of ``key`` from the store, or None when it has none free. Asks made meanwhile,
        for any key, go in one round trip (``_grab_loop``); the slot is counted as owned while
        asked for, so this process never asks for more than ``limit`` of a key at once."""
        state.owned += 1
        answer: asyncio.Future[Hashable | None] = asyncio.get_running_loop().create_future()
        self._asked.setdefault(key, []).append((state, answer))  # its state: the key's may be a newer one later
        if self._grabbing is None or self._grabbing.done():
            self._grabbing = asyncio.get_running_loop().create_task(self._grab_loop())
        try:
            return await asyncio.shield(answer)
        except asyncio.CancelledError:
            if answer.done() and not answer.cancelled() and answer.exception() is None:
                handle = answer.result()
                if handle is not None:
                    self._give(state, handle)
            else:
                answer.add_done_callback(lambda done: self._unclaimed(state, done))
            raise

    def _unclaimed(self, state: _Key, answer: asyncio.Future[Hashable | None]) -> None:
        """The answer to an ask whose asker left: a slot it brought is kept for the next message."""
        if not answer.cancelled() and answer.exception() is None and answer.result() is not None:
            self._give(state, answer.result())

    async def _grab_loop(self) -> None:
        while self._asked:
            asked, self._asked = self._asked, {}
            wanted = {key: len(answers) for key, answers in asked.items()}
            try:
                got = await self.health.call(
                    partial(self.store.grab, self.scope, wanted, self.limit, self.holder, self.ttl)
                )
            except TransientSendError as error:
                for answers in asked.values():
                    for state, answer in answers:
                        state.owned -= 1
                        answer.set_exception(error)
                        answer.exception()  # retrieved: an asker that left does not warn
                continue
            for key, answers in asked.items():
                handles = list(got.get(key, ()))
                for handle in handles:
                    self._held[(key, handle)] = None
                for state, answer in answers:
                    if handles:
                        answer.set_result(handles.pop())
                    else:
                        state.owned -= 1  # asked for, not got
                        answer.set_result(None)
            if self._held:
                self._renew_while_held()

    async def _poll(self, key: str, state: _Key) -> None:
        """While this process has waiters for ``key``: ask the store again, soon after a slot was
        found (there may be more), backing off while there is none."""
        pause = self.poll[0]
        while state.waiters:
            await asyncio.sleep(pause)
            if not state.waiters:
                break
            if state.owned >= self.limit:  # all the key's slots are this process's: one comes back
                pause = self.poll[1]
                continue
            try:
                handle = await self._ask(key, state)
            except TransientSendError as error:
                while state.waiters:
                    waiter = state.waiters.popleft()
                    if not waiter.done():
                        waiter.set_exception(error)
                break
            if handle is None:
                pause = min(self.poll[1], max(self.poll[0], pause * 2))
            else:
                pause = 0.0
                self._give(state, handle)
        self._forget_if_idle(key, state)

    def _give(self, state: _Key, handle: Hashable) -> None:
        """A slot this process is done with: its next waiter's, else kept ``linger`` seconds."""
        while state.waiters:
            waiter = state.waiters.popleft()
            if not waiter.done():
                waiter.set_result(handle)  # the slot stays held, by the next holder of this process
                return
        state.spare.append((handle, self._clock()))  # kept ``linger`` seconds for the next message
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.get_running_loop().create_task(self._sweep_loop())

    async def _sweep_loop(self) -> None:
        """Free, in one round trip per sweep, the slots unused for ``linger`` seconds."""
        while any(state.spare for state in self._keys.values()):
            await asyncio.sleep(self.linger)
            await self._free_spare(self._clock() - self.linger)

    async def _free_spare(self, unused_since: float) -> None:
        batch: list[tuple[str, Hashable]] = []
        for key, state in list(self._keys.items()):
            while state.spare and state.spare[0][1] <= unused_since:
                batch.append((key, state.spare.popleft()[0]))
                state.owned -= 1
            self._forget_if_idle(key, state)
        for held in batch:
            self._held.pop(held, None)
        if batch:
            with contextlib.suppress(Exception):  # not freed: its lease runs out within ttl
                await self.store.free(self.scope, batch, self.holder)

    def _renew_while_held(self) -> None:
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.get_running_loop().create_task(self._renew_loop())

    async def _renew_loop(self) -> None:
        while self._held:
            await asyncio.sleep(self.ttl / 3)
            held = [(self.scope, key, handle) for key, handle in self._held]
            if held:
                with contextlib.suppress(Exception):  # the next round tries again; then the lease ends
                    await self.store.renew(self.holder, held, self.ttl)

    async def close(self) -> None:
        """Stop renewing and sweeping; free the slots nobody uses (slots still in use run out)."""
        for task in (self._renewing, self._sweeping, self._grabbing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._free_spare(float("inf"))
