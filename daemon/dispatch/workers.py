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
that dies loses nothing: its claimed rows go back to ``planned`` when their lease expires, rows it
was sending become ``unknown`` (the ledger's ordinary recovery), and the next start of that helper
recovers its own rows at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from daemon.campaign import Campaign
from daemon.clock import SimulatedClock
from daemon.dispatch.tally import BucketTally
from daemon.logs import configure_logging, get_logger
from daemon.settings import Settings

if TYPE_CHECKING:  # imported in the helper process only: the service imports this module
    from daemon.dispatch.service import DispatchService

log = get_logger("dispatch")

STOP = "stop"
FIRE = "fire"
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Fire:
    """What a helper needs to claim and send one bucket."""

    campaign: dict[str, Any]  # Campaign.model_dump(mode="json", by_alias=True)
    channel: str
    due_utc: datetime
    now: datetime  # the main process's clock at the fire
    speed: float
    lease: timedelta


class DispatchHelpers:
    """``count`` helper processes (spawned, so nothing of the parent's event loop is inherited)."""

    def __init__(self, settings: Settings, count: int, node: str):
        self.settings = settings
        self.count = count
        self.node = node
        self._pipes: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        self._lock = asyncio.Lock()  # one bucket's round trip per pipe at a time

    async def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for k in range(1, self.count + 1):
            parent, child = context.Pipe()
            process = context.Process(
                target=helper_main,
                args=(child, self.settings, f"{self.node}#w{k}"),
                name=f"topslot-dispatch-{k}",
                daemon=True,
            )
            process.start()
            child.close()
            self._pipes.append(parent)
            self._processes.append(process)
        ready = await asyncio.gather(*(self._receive(pipe, START_TIMEOUT) for pipe in self._pipes))
        log.info("dispatch_helpers_started", helpers=self.count, owners=[r[1] for r in ready])

    async def fire(self, campaign: Campaign, channel: str, due_utc: datetime, *, now: datetime, speed: float,
                   lease: timedelta) -> tuple[int, list[BucketTally]]:  # fmt: skip
        """Every helper claims and sends the bucket; returns how many rows they claimed in all, and
        each helper's tally of what it sent."""
        order = Fire(campaign.model_dump(mode="json", by_alias=True), channel, due_utc, now, speed, lease)
        async with self._lock:
            asked = []
            for k, pipe in enumerate(self._pipes, start=1):
                try:
                    pipe.send((FIRE, order))
                    asked.append((k, pipe))
                except OSError as exc:  # the helper is gone; its rows come back through lease recovery
                    log.error("dispatch_helper_failed", helper=k, error=repr(exc)[:300])
            replies = await asyncio.gather(*(self._receive(p, None) for _, p in asked), return_exceptions=True)
        claimed, tallies = 0, []
        for (k, _), reply in zip(asked, replies, strict=True):
            if isinstance(reply, BaseException):
                log.error("dispatch_helper_failed", helper=k, error=repr(reply)[:300])
            else:
                claimed += int(reply[1])
                if reply[2] is not None:
                    tallies.append(reply[2])
        return claimed, tallies

    def stop_sending(self) -> None:
        """Graceful stop: helpers finish what is on the wire and claim nothing new."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send((STOP, None))

    async def close(self, timeout: float = 30.0) -> None:
        self.stop_sending()
        loop = asyncio.get_running_loop()
        for process in self._processes:
            await loop.run_in_executor(None, process.join, timeout)
            if process.is_alive():
                process.terminate()
        for pipe in self._pipes:
            pipe.close()
        self._pipes, self._processes = [], []

    async def _receive(self, pipe: Connection, timeout: float | None) -> Any:
        loop = asyncio.get_running_loop()
        reply = await asyncio.wait_for(loop.run_in_executor(None, pipe.recv), timeout)
        if reply[0] == "error":
            raise RuntimeError(reply[1])
        return reply


# ---------------------------------------------------------------- the helper process


def helper_main(pipe: Connection, settings: Settings, node: str) -> None:
    configure_logging(settings.log_level, settings.log_format, settings.secret_values())
    try:
        import uvloop

        uvloop.run(_serve(pipe, settings, node))
    except ImportError:
        asyncio.run(_serve(pipe, settings, node))


async def _serve(pipe: Connection, settings: Settings, node: str) -> None:
    from daemon.dispatch.service import DispatchService
    from daemon.store.db import open_engine

    engine = open_engine(settings.database_url)
    clock = SimulatedClock(datetime.now(UTC))
    service = DispatchService(engine, settings, clock, node=node, helper=True)
    await service.recover()  # rows an earlier run of this helper left behind
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


async def _send_bucket(
    service: DispatchService, campaign: Campaign, order: Fire, clock: SimulatedClock, stopping: asyncio.Event
) -> tuple[int, BucketTally | None]:
    """Claim and send the bucket alongside the main process; how many rows, and the tally."""
    from daemon.scheduling.scheduler import claim_all

    claimed = await claim_all(
        service.engine, campaign, order.channel, order.due_utc,
        owner=service.owner, lease=order.lease, clock=clock, on_claimed=service.dispatch, stopped=stopping.is_set,
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
    else:
        pipe.send(("done", *task.result()))
