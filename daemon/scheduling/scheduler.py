"""Fire each ledger bucket at its dispatch start (APScheduler 3, in-memory job store).

The ledger is the durable truth: jobs are only a wake-up list rebuilt from the planned buckets
after every (re)plan and at start, so a restart loses nothing that is due. A bucket fired late
(the daemon was down) is fired at once; the planner has already applied the missed-slot policy.

A bucket step the database refuses for now (disk full, a dropped connection, a restarting server)
is tried again within seconds while the slot's grace allows, the rows it held released first; when
the grace runs out they are released at once (``fire_bucket``). Health says ``degraded`` meanwhile.

A campaign is planned and sent only while this node holds the version in force
(``topslot.scheduling.versions``): a node whose files differ from a newer version another node
recorded holds it back until they match again.

Every bucket ends with ``bucket_finished`` (its outcomes, what was accepted after the slot, its
throughput) and a ``bucket_late`` warning if anything was. A bucket of a route (channel and
provider) that went clearly slower than the route's rate makes that measured throughput the rate
the route's later buckets are sized by (``rate_reestimated``): their dispatch starts move earlier
at once, until a bucket runs at the configured rate again (``rate_recovered``).

Job times are computed on the injected ``Clock`` and translated to wall time (by the clock's offset
and speed), so a fake or simulated clock drives real timers.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot import metrics
from topslot.campaign import Campaign
from topslot.channels.limits import are_shared
from topslot.clock import Clock, clock_span, wall_seconds_until
from topslot.dispatch.claims import ClaimHandler, claim_all
from topslot.dispatch.dispatcher import due_limit
from topslot.dispatch.heartbeat import NodeFenced
from topslot.dispatch.tally import BucketTally
from topslot.frequency import effective_cap
from topslot.health import Health
from topslot.logs import bound, get_logger
from topslot.scheduling.plan_run import Route, channel_rates, plan_campaign, settle_dispatch_starts
from topslot.scheduling.versions import VERSION_POLL, VersionGate, VersionSource
from topslot.settings import Settings
from topslot.store import controls, ledger, status
from topslot.store import dispatch as dispatch_store
from topslot.store.controls import ControlState
from topslot.store.db import is_transient

log = get_logger("scheduler")

JOB_PREFIX = "bucket:"
REPLAN_JOB = "replan"
CONTROL_JOB = "controls"
VERSION_JOB = "versions"
CONTROL_POLL = timedelta(seconds=5)  # how soon a pause, resume or cancel made elsewhere is noticed
RETRY_FIRST = 1.0  # seconds before a bucket step the database refused is tried again (doubling)
RETRY_MOST = 15.0
SLOWER = 0.9  # a bucket below this share of its route's rate re-sizes the route's later buckets
MEASURE_AT_LEAST = 20  # messages accepted, for a bucket's throughput to count

# Called when a bucket fires, alongside this scheduler's own claims; returns how many rows it claimed.
FireHandler = Callable[[Campaign, str, datetime], Coroutine[object, object, int]]
# Called when a bucket has been sent: what its send came to (every process's), if anything knows.
FinishHandler = Callable[[Campaign, str, datetime], BucketTally | None]


def node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def job_id(campaign_id: str, channel: str, due_utc: datetime) -> str:
    return f"{JOB_PREFIX}{campaign_id}:{channel}:{due_utc.astimezone(UTC).isoformat()}"


class BucketScheduler:
    """Plans changed campaigns into the ledger and claims each bucket when it is due.

    A ``CampaignsListener`` for the daemon: ``on_campaigns_changed`` re-plans every active campaign
    (idempotent) and rebuilds the wake-up jobs; a campaign that disappeared loses its jobs.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        clock: Clock,
        *,
        owner: str | None = None,
        lease: timedelta | None = None,
        replan_every: timedelta = timedelta(minutes=30),
        on_claimed: ClaimHandler | None = None,
        on_fire: FireHandler | None = None,
        on_finished: FinishHandler | None = None,
        health: Health | None = None,
        versions_of: VersionSource | None = None,
    ):
        """``versions_of``: this node's version of each campaign, from its files (the daemon's
        registry); without it every campaign counts as given in code (``topslot.campaign_version``)."""
        self.engine = engine
        self.settings = settings
        self.quiet = settings.quiet_hours.rules()
        self.clock = clock
        self.owner = owner or node_name()
        self.lease = lease if lease is not None else timedelta(seconds=settings.lease_s)
        self.replan_every = replan_every
        self.on_claimed = on_claimed
        self.on_fire = on_fire
        self.on_finished = on_finished
        self.health = health or Health()
        self.measured: dict[Route, float] = {}  # routes measured below their rate: their throughput
        self.campaigns: dict[str, Campaign] = {}
        self.stopping = False  # a graceful stop: claim nothing new
        self._firing: set[asyncio.Task[Any]] = set()
        self._hashes: dict[str, str] = {}
        self._controls: dict[str, ControlState] = {}  # the control state last seen per campaign
        self.versions = VersionGate(engine, self.owner, versions_of)
        self._aps = AsyncIOScheduler(timezone=UTC)

    # ------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Started and not shut down (its timers fire buckets)."""
        return bool(self._aps.running)

    def start(self) -> None:
        self._aps.start()
        self._aps.add_job(
            self.replan_all, "interval", seconds=self.replan_every.total_seconds(), id=REPLAN_JOB, coalesce=True
        )
        self._aps.add_job(
            self.watch_controls, "interval", seconds=CONTROL_POLL.total_seconds(), id=CONTROL_JOB, coalesce=True
        )
        self._aps.add_job(
            self.watch_versions, "interval", seconds=VERSION_POLL.total_seconds(), id=VERSION_JOB, coalesce=True
        )

    def shutdown(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=False)

    async def drain(self, timeout: float) -> None:
        """Graceful stop: no new claims; buckets being sent finish their chunks on the wire (up to
        ``timeout`` seconds), so a SIGTERM leaves rows planned or sent, not ``unknown``."""
        self.stopping = True  # jobs that fire meanwhile return at once
        if self._firing:
            await asyncio.wait(set(self._firing), timeout=timeout)
        self.shutdown()  # only now: APScheduler's executor cancels the job tasks still running

    def jobs(self) -> dict[str, datetime]:
        """Bucket job id → wall-clock run time."""
        return {j.id: j.next_run_time for j in self._aps.get_jobs() if j.id.startswith(JOB_PREFIX)}

    # ------------------------------------------------------------ planning

    async def on_campaigns_changed(self, campaigns: Mapping[str, Campaign]) -> None:
        changed = [c for cid, c in campaigns.items() if self._hashes.get(cid) != self.versions.version(c).digest]
        self.campaigns = dict(campaigns)
        self._hashes = {cid: h for cid, h in self._hashes.items() if cid in campaigns}
        for campaign in changed:
            await self.plan(campaign)
        await self.rebuild_jobs()
        await self.watch_controls()
        await self.watch_versions()

    async def watch_versions(self) -> None:
        """Notice a newer version of a campaign recorded by another node, or this node's files
        matching the version in force again (``VersionGate.refresh``): a campaign that matches again
        is planned at once and its buckets fire again."""
        try:
            resumed = await self.versions.refresh(self.campaigns, self.clock.now())
        except Exception as exc:
            log.warning("campaign_versions_unreadable", error=repr(exc)[:300])
            return
        for cid in resumed:
            await self.plan(self.campaigns[cid])
        if resumed:
            await self.rebuild_jobs()

    async def watch_controls(self) -> None:
        """Notice pauses, resumes and cancels (``topslot campaigns``, from any node): each change is
        logged once; a resumed campaign is re-planned at once (buckets whose slot passed meanwhile
        follow the missed-slot rules) and its buckets fire again."""
        try:
            states = await controls.campaign_states(self.engine, sorted(self.campaigns))
        except Exception as exc:
            log.warning("controls_unreadable", error=repr(exc)[:300])
            return
        for cid, state in sorted(states.items()):
            before = self._controls.get(cid, ControlState.ACTIVE)
            self._controls[cid] = state
            if state == before:
                continue
            if state is ControlState.PAUSED:
                log.warning("campaign_paused", campaign_id=cid, was=str(before))
            elif state is ControlState.CANCELLED:
                log.warning("campaign_cancelled", campaign_id=cid, was=str(before))
            else:
                log.info("campaign_resumed", campaign_id=cid, was=str(before))
            campaign = self.campaigns.get(cid)
            if state is ControlState.ACTIVE and campaign is not None:
                await self.plan(campaign)
                await self.rebuild_jobs()

    async def replan_all(self) -> None:
        """Periodic re-plan: picks up imported contacts and audience changes."""
        for campaign in list(self.campaigns.values()):
            await self.plan(campaign)
        await self.rebuild_jobs()

    async def plan(self, campaign: Campaign) -> None:
        now = self.clock.now()
        digest = self.versions.version(campaign).digest
        with bound(campaign_id=campaign.id):
            if not await self.versions.admit(campaign, now):  # another version is in force (logged)
                log.info("campaign_not_planned", reason="version_mismatch")
                return
            if await controls.campaign_state(self.engine, campaign.id) is ControlState.CANCELLED:
                self._hashes[campaign.id] = digest
                log.info("campaign_not_planned", reason="cancelled")
                return
            outcome = await plan_campaign(self.engine, campaign, self.settings, now, write=True, measured=self.measured)
            self._hashes[campaign.id] = digest
            log.info(
                "campaign_planned",
                rows_written=outcome.written,
                planned=outcome.summary.planned_by_channel,
                left_out=outcome.summary.left_out,
                retired=outcome.retired,
                zone_sources=outcome.summary.zone_sources,
                frequency_capped=outcome.summary.frequency_capped,
                **({"slot_bases": outcome.summary.slot_bases} if campaign.slot_choice != "first" else {}),
            )
            for warning in outcome.summary.warnings:
                log.warning("bucket_window_too_small", channel=warning.channel, detail=warning.message())

    async def rebuild_jobs(self) -> None:
        buckets = await ledger.planned_buckets(self.engine)
        wanted = {job_id(b.campaign_id, b.channel, b.due_utc): b for b in buckets if b.campaign_id in self.campaigns}
        for job in self._aps.get_jobs():
            if job.id.startswith(JOB_PREFIX) and job.id not in wanted:
                job.remove()
        wall_now = datetime.now(UTC)
        for jid, b in wanted.items():
            run_at = wall_now + timedelta(seconds=wall_seconds_until(self.clock, b.dispatch_start_utc))
            self._aps.add_job(
                self.fire_bucket,
                DateTrigger(run_date=run_at, timezone=UTC),
                args=[b.campaign_id, b.channel, b.due_utc],
                id=jid,
                replace_existing=True,
                misfire_grace_time=None,  # a late bucket still fires; the ledger decides what is sendable
                coalesce=True,
                max_instances=2,  # rows given back while it is being sent (a dead node's) fire it again at once
            )
        log.info("jobs_rebuilt", buckets=len(wanted))

    # ------------------------------------------------------------ firing

    async def fire_bucket(self, campaign_id: str, channel: str, due_utc: datetime) -> int:
        """Claim and send every still-eligible planned row of one bucket; returns how many were
        claimed. A step the database refuses for now (``is_transient``: disk full, connection
        dropped, server restarting) is tried again after ``RETRY_FIRST`` seconds, doubling up to
        ``RETRY_MOST``, while the slot's grace allows; before each try the rows this process holds
        in the bucket are released (claimed → planned, sending → unknown), and when it gives up they
        are released too (``bucket_abandoned``), never left for the lease to expire."""
        campaign = self.campaigns.get(campaign_id)
        if campaign is None or self.stopping:
            return 0
        task = asyncio.current_task()
        if task is not None:
            self._firing.add(task)
            task.add_done_callback(self._firing.discard)
        with bound(campaign_id=campaign_id, channel=channel, slot=due_utc.isoformat()):
            if (held := await controls.campaign_state(self.engine, campaign_id)) is not ControlState.ACTIVE:
                retired = 0  # a cancelled campaign's rows a recovered lease gave back: retired too
                if held is ControlState.CANCELLED:
                    retired = await controls.retire_cancelled(self.engine, campaign_id, self.clock.now())
                log.info("bucket_held", due_utc=due_utc.isoformat(), state=str(held), retired=retired)
                return 0
            if not await self.versions.check(campaign, self.clock.now()):  # another version in force
                log.info("bucket_held", due_utc=due_utc.isoformat(), state="version_mismatch", retired=0)
                return 0
            started = self.clock.now()
            claimed, delay, failed = 0, RETRY_FIRST, False
            give_up_at = due_limit(campaign, due_utc)
            while True:
                try:
                    if failed:  # what the failed try left held: back to planned (or unknown), then again
                        claimed -= await self._release(campaign, channel, due_utc)
                    claimed += await self._fire_once(campaign, channel, due_utc, first=not failed)
                    self.health.database_ok("bucket")
                    break
                except NodeFenced:  # found dead by another node: its rows are theirs now; the daemon stops
                    log.warning("bucket_fenced", due_utc=due_utc.isoformat(), claimed=claimed)
                    return claimed
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self.health.database_failed("bucket", exc)
                    failed = True
                    error = f"{type(exc).__name__}: {str(getattr(exc, 'orig', None) or exc).splitlines()[0][:200]}"
                    wait = clock_span(self.clock, timedelta(seconds=delay))
                    if self.stopping or self.clock.now() + wait > give_up_at:
                        await self._abandon(campaign, channel, due_utc, error)
                        return claimed
                    log.warning("bucket_step_failed", due_utc=due_utc.isoformat(), error=error, retry_in_s=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RETRY_MOST)
            log.info("bucket_claimed", due_utc=due_utc.isoformat(), claimed=claimed)
            tally = self.on_finished(campaign, channel, due_utc) if self.on_finished is not None else None
            log_finished(due_utc, claimed, tally)
            if tally is not None and tally.accepted:
                metrics.observe_bucket(channel, tally.max_late_s)
            await self._record_bucket(campaign, channel, due_utc, claimed, tally, started)
            if tally is not None:
                await self.measure(campaign, channel, tally)
            return claimed

    async def _record_bucket(
        self, campaign: Campaign, channel: str, due_utc: datetime, claimed: int, tally: BucketTally | None,
        started: datetime,
    ) -> None:  # fmt: skip
        """Keep what the bucket came to for ``topslot status`` (a failure costs only that)."""
        try:
            await status.record_bucket(
                self.engine, campaign_id=campaign.id, channel=channel, due_utc=due_utc, owner=self.owner,
                claimed=claimed, accepted=None if tally is None else tally.accepted,
                late=None if tally is None else tally.late, max_late_s=None if tally is None else tally.max_late_s,
                started_at=started, finished_at=self.clock.now(),
            )  # fmt: skip
        except Exception as exc:
            log.warning("bucket_run_not_recorded", due_utc=due_utc.isoformat(), error=repr(exc)[:300])

    async def _fire_once(self, campaign: Campaign, channel: str, due_utc: datetime, *, first: bool) -> int:
        """One try of the bucket: skip who no longer qualifies, claim and send (with the helpers)."""
        now = self.clock.now()
        planned = await ledger.planned_buckets(self.engine, campaign.id)
        buckets = [b for b in planned if b.channel == channel and b.due_utc == due_utc]
        skipped = await ledger.skip_ineligible_in_bucket(self.engine, campaign, channel, due_utc, now)
        if first:
            start = buckets[0].dispatch_start_utc if buckets else now
            log.info(
                "bucket_started",
                due_utc=due_utc.isoformat(),
                lateness_s=round((now - start).total_seconds(), 3),
                rows=buckets[0].count if buckets else 0,
                skipped=skipped,
            )
        helping: asyncio.Task[int] | None = None
        if self.on_fire is not None:  # other claimers (dispatch helper processes) share the bucket
            helping = asyncio.create_task(self.on_fire(campaign, channel, due_utc))
        try:
            claimed = await self._claim(campaign, channel, due_utc)
        except BaseException:
            if helping is not None:  # the helpers' round trip ends on its own; wait for it
                await asyncio.gather(helping, return_exceptions=True)
            raise
        if helping is not None:
            claimed += await helping
            claimed += await self._claim(campaign, channel, due_utc)  # rows a dead helper gave back
        return claimed

    async def _claim(self, campaign: Campaign, channel: str, due_utc: datetime) -> int:
        return await claim_all(
            self.engine, campaign, channel, due_utc, owner=self.owner, lease=self.lease, clock=self.clock,
            on_claimed=self.on_claimed, stopped=lambda: self.stopping or self.versions.holds(campaign.id),
            quiet=self.quiet,
            cap=effective_cap(campaign, self.settings, channel),
        )  # fmt: skip

    async def _release(self, campaign: Campaign, channel: str, due_utc: datetime) -> int:
        """This process's rows of the bucket back to planned (or unknown); how many went to planned."""
        counts = await dispatch_store.release_bucket(self.engine, self.owner, campaign.id, channel, due_utc,
                                                     self.clock.now())  # fmt: skip
        if any(counts.values()):
            log.warning("bucket_rows_released", due_utc=due_utc.isoformat(), **counts)
        return counts.get("claimed_to_planned", 0)

    async def _abandon(self, campaign: Campaign, channel: str, due_utc: datetime, error: str) -> None:
        """Give the bucket up (its grace is over, or the daemon stops): release its rows now, trying
        for a few seconds; if the database still refuses, their lease will (the last safety net)."""
        for delay in (0.5, 1.0, 2.0, None):
            try:
                await self._release(campaign, channel, due_utc)
                break
            except Exception as exc:
                if not is_transient(exc) or delay is None:
                    log.error("bucket_release_failed", due_utc=due_utc.isoformat(), error=repr(exc)[:300])
                    break
                await asyncio.sleep(delay)
        log.error("bucket_abandoned", due_utc=due_utc.isoformat(), error=error,
                  why="stopping" if self.stopping else "the slot's grace is over")  # fmt: skip

    async def measure(self, campaign: Campaign, channel: str, tally: BucketTally) -> None:
        """Size the route's later buckets by what this bucket measured, when it went clearly slower
        than the route's rate; back to the rate once a bucket keeps it again.

        With shared limits (``topslot.channels.limits``) every node sends the bucket beside this
        one and they keep the route's rate together: this node's throughput is scaled by the
        bucket's rows accepted by anyone over those it accepted (about the same span, since the
        nodes claim the bucket side by side), so a node measures the route, not its part of it."""
        throughput = tally.throughput()
        if throughput is None or tally.accepted < MEASURE_AT_LEAST:
            return
        if are_shared(self.settings, self.engine.dialect.name):
            try:
                everyone = await ledger.handed_over_in_bucket(self.engine, campaign.id, channel, tally.due_utc)
            except Exception:  # not measured this time: a rate is never lowered on a guess
                return
            throughput *= max(1.0, everyone / tally.accepted)
        route = (channel, campaign.provider_for(channel))
        rate = channel_rates(self.settings, campaign)[channel]
        if throughput < rate * SLOWER:
            self.measured[route] = throughput
            log.warning("rate_reestimated", channel=channel, provider=route[1], rate_per_s=rate,
                        measured_per_s=round(throughput, 2))  # fmt: skip
        elif self.measured.pop(route, None) is not None:
            log.info("rate_recovered", channel=channel, provider=route[1], rate_per_s=rate,
                     measured_per_s=round(throughput, 2))  # fmt: skip
        else:
            return
        now = self.clock.now()  # every campaign on the route: its planned buckets' starts, then the jobs
        for other in list(self.campaigns.values()):
            if channel in other.channels and other.provider_for(channel) == route[1]:
                rates = channel_rates(self.settings, other, self.measured)
                await settle_dispatch_starts(self.engine, other, rates, now)
        await self.rebuild_jobs()


def log_finished(due_utc: datetime, claimed: int, tally: BucketTally | None) -> None:
    """``bucket_finished``: the rows this bucket claimed and, from its tally, what became of them,
    when the first and last were accepted (seconds from the slot: negative is before it), how many
    after the slot and how late; ``bucket_late`` (a warning) when any were."""
    fields: dict[str, Any] = {"due_utc": due_utc.isoformat(), "claimed": claimed}
    if tally is not None:

        def from_slot(at: datetime | None) -> float | None:
            return None if at is None else round((at - due_utc).total_seconds(), 3)

        throughput = tally.throughput()
        fields |= {
            "outcomes": dict(tally.outcomes),
            "accepted": tally.accepted,
            "first_accepted_s": from_slot(tally.first_accepted),
            "last_accepted_s": from_slot(tally.last_accepted),
            "late": tally.late,
            "max_late_s": round(tally.max_late_s, 3),
            "throughput_per_s": None if throughput is None else round(throughput, 2),
        }
    log.info("bucket_finished", **fields)
    if tally is not None and tally.late:
        log.warning("bucket_late", due_utc=due_utc.isoformat(), late=tally.late, accepted=tally.accepted,
                    max_late_s=round(tally.max_late_s, 3))  # fmt: skip
