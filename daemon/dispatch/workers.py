"""Extra dispatch processes: with ``dispatch_processes: N`` a firing bucket is claimed and sent by N
processes side by side (one per core), not one.

Rendering, MIME and the SMTP dialogue are CPU-bound Python; one process tops out at one core. The
ledger already lets several claimers share a bucket (``SKIP LOCKED`` on PostgreSQL, one writer at a
time on SQLite), so each helper is simply another claimer: the main process tells every helper
"bucket B fires" and claims alongside them; each helper runs its own ``DispatchService`` (its own
engine and messengers, each provider's pool and rate divided by N: ``Registry(share=1/N)``) under
its own lease owner ``<node>#w<k>/<boot>``. The main process waits for every helper before it logs the bucket as
claimed.

Helpers inherit nothing but the settings and the campaign, both sent over a pipe. Each runs the
clock the main process runs: the main process's "now" and speed, sent with every bucket. A helper
that dies costs seconds, not the lease: the main process sees the death at once (``DispatchHelpers``),
gives its claimed rows back to ``planned`` and makes the rows it was sending ``unknown`` right away,
sends the returned rows within the same bucket, and starts the helper again.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from topslot import event_loop, failpoints, metrics
from topslot.campaign import Campaign
from topslot.clock import SimulatedClock
from topslot.dispatch.claims import claim_all
from topslot.dispatch.tally import BucketTally
from topslot.frequency import effective_cap
from topslot.heap import settle_heap
from topslot.logs import configure_logging, get_logger
from topslot.settings import Settings

if TYPE_CHECKING:  # imported in the helper process only: the service imports this module
    from topslot.dispatch.service import DispatchService

log = get_logger("dispatch")

STOP = "stop"
FIRE = "fire"
START_TIMEOUT = 60.0
REAP_TIMEOUT = 2.0  # seconds to wait for a helper whose pipe closed to be reaped (its exit code logged)
RESTART_BACKOFF = 1.0  # seconds before a dead helper is started again, doubling while it keeps failing
RESTART_MOST = 60.0
EXIT_FENCED = 75  # a helper found dead by another node exits with this (EX_TEMPFAIL): started again


@dataclass(frozen=True)
class Fire:
    """What a helper needs to claim and send one bucket."""

    campaign: dict[str, Any]  # Campaign.model_dump(mode="json", by_alias=True)
    channel: str
    due_utc: datetime
    now: datetime  # the main process's clock at the fire
    speed: float
    lease: timedelta


@dataclass(eq=False)
class _Helper:
    """One helper slot: its process and pipe while it runs."""

    k: int
    process: multiprocessing.process.BaseProcess | None = None
    pipe: Connection | None = None
    owner: str | None = None
    failures: int = 0  # starts or lives that ended badly in a row (the restart backoff)
    restarting: asyncio.Task[None] | None = None
    death: asyncio.Task[None] | None = None  # handling the end of this life (rows given back)

    @property
    def alive(self) -> bool:
        return self.pipe is not None and self.process is not None and self.process.is_alive()


# Free helper k's rows (it is gone: True; its bucket failed: False); how many went back to planned.
ReleaseRows = Callable[[int, bool], Awaitable[int]]


class DispatchHelpers:
    """``count`` helper processes (spawned, so nothing of the parent's event loop is inherited).

    A helper's death is seen at once: the main process watches each helper's process sentinel (a
    file descriptor that becomes readable when the process ends) and its pipe (a bucket's reply
    that never comes: end of file). Then ``release(k)`` gives the dead helper's rows back at once
    (claimed → planned, sending → unknown, as lease recovery would 15 minutes later), the bucket
    being fired sends the returned rows itself (the scheduler claims once more after the helpers
    reply), and the helper is started again, after ``RESTART_BACKOFF`` seconds doubling up to a
    minute while it keeps failing. A helper that fails to start is logged and retried the same way:
    the daemon runs on with the processes it has.
    """

    def __init__(self, settings: Settings, count: int, node: str, release: ReleaseRows | None = None):
        self.settings = settings
        self.count = count
        self.node = node
        self.release = release
        self._helpers = [_Helper(k) for k in range(1, count + 1)]
        self._lock = asyncio.Lock()  # one bucket's round trip per pipe at a time
        self._closing = False

    @property
    def _processes(self) -> list[multiprocessing.process.BaseProcess]:
        """The helper processes running now."""
        return [h.process for h in self._helpers if h.process is not None]

    async def start(self) -> None:
        started = await asyncio.gather(*(self._start(h) for h in self._helpers))
        log.info("dispatch_helpers_started", helpers=sum(started), owners=[h.owner for h in self._helpers if h.owner])

    async def fire(self, campaign: Campaign, channel: str, due_utc: datetime, *, now: datetime, speed: float,
                   lease: timedelta) -> tuple[int, list[BucketTally]]:  # fmt: skip
        """Every live helper claims and sends the bucket; returns how many rows they claimed in all,
        and each helper's tally of what it sent. A helper that dies meanwhile has its rows given
        back before this returns, for the caller to send."""
        order = Fire(campaign.model_dump(mode="json", by_alias=True), channel, due_utc, now, speed, lease)
        async with self._lock:
            asked = []
            for helper in self._helpers:
                if not helper.alive or helper.pipe is None:
                    continue
                try:
                    helper.pipe.send((FIRE, order))
                    asked.append(helper)
                except OSError as exc:  # it died since: its rows are freed before this returns
                    await self._died(helper, f"its pipe refused the bucket: {exc!r}"[:300])
            replies = await asyncio.gather(*(self._receive(h, None) for h in asked), return_exceptions=True)
        claimed, tallies = 0, []
        for helper, reply in zip(asked, replies, strict=True):
            if isinstance(reply, EOFError | OSError):
                await self._died(helper, "it ended while sending the bucket")
            elif isinstance(reply, BaseException):  # its bucket failed (say, the database refused it)
                log.error("dispatch_helper_failed", helper=helper.k, error=repr(reply)[:300])
                if self.release is not None:  # what it held goes back now, for the caller to send
                    released = await self.release(helper.k, False)
                    log.warning("dispatch_helper_rows_released", helper=helper.k, to_planned=released)
            else:
                claimed += int(reply[1])
                if reply[2] is not None:
                    tallies.append(reply[2])
                if reply[3] is not None:
                    metrics.add_sends(reply[3])
        return claimed, tallies

    def stop_sending(self) -> None:
        """Graceful stop: helpers finish what is on the wire and claim nothing new."""
        for helper in self._helpers:
            if helper.pipe is not None:
                with contextlib.suppress(OSError):
                    helper.pipe.send((STOP, None))

    async def close(self, timeout: float = 30.0) -> None:
        self._closing = True
        self.stop_sending()
        loop = asyncio.get_running_loop()
        for helper in self._helpers:
            if helper.restarting is not None:
                helper.restarting.cancel()
            process = helper.process
            if process is None:
                continue
            self._unwatch(helper)
            await loop.run_in_executor(None, process.join, timeout)
            if process.is_alive():
                process.terminate()
            if helper.pipe is not None:
                helper.pipe.close()
            helper.process, helper.pipe = None, None

    # ------------------------------------------------------------ one helper's life

    async def _start(self, helper: _Helper) -> bool:
        """Start ``helper`` and wait for its "ready"; on failure log it, schedule a restart, False."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=helper_main,
            args=(child, self.settings, f"{self.node}#w{helper.k}"),
            name=f"topslot-dispatch-{helper.k}",
            daemon=True,
        )
        try:
            process.start()
        finally:
            child.close()
        helper.process, helper.pipe = process, parent
        try:
            ready = await self._receive(helper, START_TIMEOUT)
        except Exception as exc:  # it ended (EOFError), timed out, or said "error"
            if isinstance(exc, EOFError):  # its pipe closed as it died: reap it, so the log has its exit code
                await asyncio.to_thread(process.join, REAP_TIMEOUT)
            log.error("dispatch_helper_start_failed", helper=helper.k, error=repr(exc)[:300],
                      exitcode=process.exitcode)  # fmt: skip
            process.kill()
            parent.close()
            helper.process, helper.pipe = None, None
            self._restart_later(helper)
            return False
        helper.owner, helper.death = ready[1], None
        self._watch(helper)
        return True

    def _watch(self, helper: _Helper) -> None:
        process = helper.process
        assert process is not None
        asyncio.get_running_loop().add_reader(process.sentinel, self._on_sentinel, helper)

    def _unwatch(self, helper: _Helper) -> None:
        if helper.process is not None:
            with contextlib.suppress(ValueError, OSError):  # its fd may be closed already
                asyncio.get_running_loop().remove_reader(helper.process.sentinel)

    def _on_sentinel(self, helper: _Helper) -> None:
        self._unwatch(helper)
        if not self._closing and helper.process is not None and helper.death is None:
            helper.death = asyncio.get_running_loop().create_task(self._handle_death(helper, "its process ended"))

    async def _died(self, helper: _Helper, how: str) -> None:
        """``helper`` is gone: returns once its rows are given back. The sentinel and a failed
        bucket reply may both report the same death: it is handled once, and both wait for that."""
        if helper.death is None:
            if helper.process is None or self._closing:
                return
            helper.death = asyncio.get_running_loop().create_task(self._handle_death(helper, how))
        await asyncio.shield(helper.death)

    async def _handle_death(self, helper: _Helper, how: str) -> None:
        """Log the death, give the helper's rows back now, start it again (later)."""
        process, pipe = helper.process, helper.pipe
        assert process is not None
        self._unwatch(helper)
        helper.process, helper.pipe = None, None
        if pipe is not None:
            pipe.close()
        await asyncio.get_running_loop().run_in_executor(None, process.join, 5)
        log.error("dispatch_helper_died", helper=helper.k, how=how, exitcode=process.exitcode, pid=process.pid)
        if self.release is not None:
            released = await self.release(helper.k, True)
            log.warning("dispatch_helper_rows_released", helper=helper.k, to_planned=released)
        self._restart_later(helper)

    def _restart_later(self, helper: _Helper) -> None:
        if self._closing or (helper.restarting is not None and not helper.restarting.done()):
            return
        helper.failures += 1
        delay = min(RESTART_MOST, RESTART_BACKOFF * 2 ** (helper.failures - 1))
        helper.restarting = asyncio.get_running_loop().create_task(self._restart(helper, delay))

    async def _restart(self, helper: _Helper, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._closing:
            return
        async with self._lock:  # never in the middle of a bucket's round trip
            helper.restarting = None
            if await self._start(helper):
                log.info("dispatch_helper_restarted", helper=helper.k, pid=helper.process and helper.process.pid,
                         owner=helper.owner)  # fmt: skip
                helper.failures = 0

    async def _receive(self, helper: _Helper, timeout: float | None) -> Any:
        pipe = helper.pipe
        assert pipe is not None
        loop = asyncio.get_running_loop()
        reply = await asyncio.wait_for(loop.run_in_executor(None, pipe.recv), timeout)
        if reply[0] == "error":
            raise RuntimeError(reply[1])
        return reply


# ---------------------------------------------------------------- the helper process


def helper_main(pipe: Connection, settings: Settings, node: str) -> None:
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    event_loop.run(_serve(pipe, settings, node), settings.event_loop)


async def _serve(pipe: Connection, settings: Settings, node: str) -> None:
    from topslot.dispatch.service import DispatchService
    from topslot.store.db import open_engine

    failpoints.hit("helper_start")  # fault tests only: a helper that dies while starting
    engine = open_engine(settings.database_url, idle_in_transaction_s=settings.node_timeout_s)  # as the daemon's
    clock = SimulatedClock(datetime.now(UTC))
    service = DispatchService(engine, settings, clock, node=node, helper=True, on_declared_dead=_exit_fenced)
    await service.start_heartbeat()  # its own row in ``processes`` (``topslot status``)
    metrics.report_sends()  # its registry is not scraped: its sends go back with each reply
    await service.recover()  # rows an earlier run of this helper left behind
    settle_heap()  # started: what lives as long as the helper leaves the collector's walks
    pipe.send(("ready", service.owner, os.getpid()))
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    firing: asyncio.Task[tuple[int, BucketTally | None]] | None = None
    campaigns: dict[str, tuple[dict[str, Any], Campaign]] = {}  # id → (as sent, model): compiled once
    try:
        while True:
            try:
                kind, order = await loop.run_in_executor(None, pipe.recv)
            except EOFError:  # the daemon is gone (killed): stop as on a graceful stop
                kind, order = STOP, None
            if kind == STOP:
                stopping.set()
                service.stop_sending()
                if firing is not None:
                    await asyncio.wait({firing})
                return
            assert isinstance(order, Fire)
            clock.rebase(order.now, order.speed)  # the main process's clock, running on from its "now"
            sent, campaign = campaigns.get(order.campaign["id"], (None, None))
            if sent != order.campaign or campaign is None:  # new or edited: the dispatcher recompiles it
                campaign = Campaign.model_validate(order.campaign)
                campaigns[campaign.id] = (order.campaign, campaign)
            firing = asyncio.create_task(_send_bucket(service, campaign, order, clock, stopping))
            firing.add_done_callback(partial(_reply, pipe, order=order))
    finally:
        await service.close()
        await engine.dispose()


def _exit_fenced() -> None:
    """Found dead by another node (stopped too long: ``topslot.dispatch.heartbeat``): its rows are
    someone else's now and it is fenced for good. It exits at once; its daemon starts another."""
    os._exit(EXIT_FENCED)


async def _send_bucket(
    service: DispatchService, campaign: Campaign, order: Fire, clock: SimulatedClock, stopping: asyncio.Event
) -> tuple[int, BucketTally | None]:
    """Claim and send the bucket alongside the main process; how many rows, and the tally."""
    claimed = await claim_all(
        service.engine, campaign, order.channel, order.due_utc,
        owner=service.owner, lease=order.lease, clock=clock, on_claimed=service.dispatch, stopped=stopping.is_set,
        quiet=service.quiet,
        cap=effective_cap(campaign, service.settings, order.channel),
    )  # fmt: skip
    return claimed, service.dispatcher.pop_tally((campaign.id, order.channel, order.due_utc))


def _reply(pipe: Connection, task: asyncio.Task[tuple[int, BucketTally | None]], *, order: Fire) -> None:
    if task.cancelled():
        pipe.send(("error", "cancelled"))
    elif (exc := task.exception()) is not None:
        log.error(
            "dispatch_helper_bucket_failed",
            campaign_id=order.campaign["id"],
            channel=order.channel,
            slot=order.due_utc.isoformat(),
            error=repr(exc)[:300],
        )
        pipe.send(("error", repr(exc)[:300]))
    else:  # with the sends it answered since its last reply: the main process counts them in its registry
        pipe.send(("done", *task.result(), metrics.take_unreported()))
