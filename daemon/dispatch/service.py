"""Everything that sends, put together for the daemon: the dispatcher, its messengers (the channel
registry), the recovery of rows whose lease was lost, and the retry poller. One node identity per
process start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from topslot import __version__, metrics
from topslot.campaign import Campaign, FrequencyCap
from topslot.channels.limits import limits_for
from topslot.channels.registry import MessengerSource, Registry
from topslot.clock import Clock, SystemClock, clock_span
from topslot.delivery import DeliveryState as S
from topslot.dispatch import policy
from topslot.dispatch.dispatcher import Dispatcher
from topslot.dispatch.heartbeat import BEAT_SHARE, Heartbeat, Identity
from topslot.dispatch.journal import HandoverJournal, Record, journal_path, journals, owner_of
from topslot.dispatch.tally import BucketTally
from topslot.dispatch.workers import DispatchHelpers
from topslot.frequency import effective_cap
from topslot.health import Health
from topslot.links.keys import load_keyring
from topslot.logs import get_logger
from topslot.settings import Settings
from topslot.store import dispatch as store
from topslot.store import status
from topslot.store.ledger import Claimed

log = get_logger("dispatch")

RETRY_POLL = timedelta(seconds=5)
DRAIN_TIMEOUT = timedelta(seconds=30)  # a graceful stop waits this long for chunks on the wire


def node_id() -> str:
    """This machine's stable name; leases are ``node/boot`` so a restart recognises its own."""
    return os.environ.get("TOPSLOT_NODE_ID") or socket.gethostname()


class DispatchService:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        clock: Clock,
        *,
        messengers: MessengerSource | None = None,
        node: str | None = None,
        on_recovered: Callable[[], Awaitable[None]] | None = None,
        helper: bool = False,
        health: Health | None = None,
        on_declared_dead: Callable[[], None] | None = None,
        held: Callable[[], Collection[str]] | None = None,
    ):
        """``helper``: this is one of the daemon's helper processes (it starts none of its own).
        ``on_declared_dead``: called (once, on this loop) when another node found this process dead
        and took its rows back: it is fenced for good and must stop (``topslot.dispatch.heartbeat``).
        ``held``: the campaigns this node holds back (another version in force: the scheduler's
        ``VersionGate``), whose retries it does not claim."""
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.node = node or node_id()
        self.owner = f"{self.node}/{uuid.uuid4().hex[:8]}"
        self.keyring = load_keyring(settings)
        self.quiet = settings.quiet_hours.rules()
        processes = settings.dispatch_processes
        spawn = processes > 1 and not helper
        self.helpers = DispatchHelpers(settings, processes - 1, self.node, self.release_helper) if spawn else None
        # every provider's rate and per-domain limit held for all processes and nodes (PostgreSQL,
        # Redis) or, on SQLite, 1/N of them in each of the N processes; pools are 1/N in each
        if messengers is None:
            limits = limits_for(settings, engine, holder=self.owner, share=1 / processes)
            messengers = Registry(settings, clock, limits=limits)
        self.messengers = messengers
        self.health = health or Health()
        self.journals = settings.var_dir / "journal"  # every process's hand-over journal, by lease owner
        self.journal = open_journal(self.journals, self.owner) if settings.handover_journal else None
        self.dispatcher = Dispatcher(
            engine, settings, clock, self.keyring, self.messengers, owner=self.owner, health=self.health,
            journal=self.journal,
        )  # fmt: skip
        self.on_recovered = on_recovered  # rows handed back to planned need their bucket fired again
        self.held = held or frozenset
        self.campaigns: dict[str, Campaign] = {}
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.role = "helper" if helper else "daemon"
        self.lease = timedelta(seconds=settings.lease_s)  # the last safety net: dead processes are found in seconds
        self.wall = SystemClock()  # heartbeats are real time, whatever clock the plan runs on
        identity = Identity(self.owner, self.node, self.role, os.getpid(), __version__, self.wall.now())
        self.heartbeat = Heartbeat(engine, identity, settings.node_timeout_s, wall=self.wall,
                                   on_declared_dead=on_declared_dead)  # fmt: skip
        self._beating = False
        self._watcher: asyncio.Task[None] | None = None
        self._stops_seen = self.wall.now()  # graceful stops of other processes noticed since
        self._stops_known: set[str] = set()

    async def start(self) -> None:
        await self.start_heartbeat()
        await self.recover()
        if self.helpers is not None:
            await self.helpers.start()
        self._poller = asyncio.create_task(self._poll_retries(), name="retry-poller")
        self._watcher = asyncio.create_task(self._watch_nodes(), name="node-watcher")

    def stop_sending(self) -> None:
        """Graceful stop, first step: chunks on the wire finish, nothing new starts."""
        self.dispatcher.stopping = True
        self._stopping.set()
        if self.helpers is not None:
            self.helpers.stop_sending()

    async def start_heartbeat(self) -> None:
        """Write this process's first heartbeat (``processes``), then keep it fresh until ``close``."""
        if not self._beating:
            self._beating = True
            await self.heartbeat.start()
            self.dispatcher.fence = self.heartbeat.unfenced  # hand nothing over while others may think us dead

    async def _watch_nodes(self) -> None:
        """Every third of the node timeout: take back the rows of processes found dead."""
        while True:
            try:  # sleep until the next round, or return at once on a stop
                await asyncio.wait_for(self._stopping.wait(), self.settings.node_timeout_s * BEAT_SHARE)
                return
            except TimeoutError:
                pass
            try:
                await self.recover_dead()
                await self._notice_stops()
            except Exception as exc:
                log.warning("node_watch_failed", error=repr(exc)[:300])

    async def _notice_stops(self) -> None:
        """Another process stopped gracefully (``systemctl stop``): the rows it had claimed and not
        sent went back to ``planned``, behind the claim cursors of the nodes still sending that
        bucket (a claim walks a bucket once, by id). Fire the buckets again here, at once."""
        now = self.wall.now()
        stopped = await status.stopped_since(self.engine, self._stops_seen) - {self.owner}
        self._stops_seen = now - timedelta(seconds=self.settings.node_timeout_s)  # clocks of nodes differ a little
        if stopped - self._stops_known and self.on_recovered is not None:
            log.info("node_stopped", owners=sorted(stopped - self._stops_known))
            await self.on_recovered()
        self._stops_known = stopped

    async def recover_dead(self) -> dict[str, int]:
        """Processes whose heartbeat is older than ``node_timeout_s`` (and that did not stop
        gracefully) are found dead (``node_dead``, logged by the one process that finds each): their
        ``claimed`` rows go back to ``planned`` and their buckets fire again here at once; their
        ``sending`` rows become ``unknown`` (``planned`` or ``sent`` where their journal, on this
        node's disk, proves it). Rows of processes found dead earlier (by a process that died before
        taking them back) are taken too. Nothing is judged while this process's own heartbeat is not
        ``settled``: after a database outage everybody's heartbeat is old."""
        if not self.heartbeat.settled():
            return {}
        now = self.wall.now()
        found = await status.declare_dead(self.engine, now, timeout=timedelta(seconds=self.settings.node_timeout_s))
        owners = await status.dead_owners(self.engine, now, window=self.lease) - {self.owner}
        if not owners:
            return {}
        counts = await self._recover(store.held_by(owners), gone=owners.__contains__, found_dead=True)
        for p in found:
            log.warning("node_dead", owner=p.owner, node=p.node, role=p.role, silent_s=p.heartbeat_age_s, **counts)
        if any(counts.values()) and not found:
            log.warning("leases_recovered", **counts)
        if counts.get("claimed_to_planned") and self.on_recovered is not None:
            await self.on_recovered()
        return counts

    async def close(self) -> None:
        self.stop_sending()
        if self._poller is not None:
            # let a retry round that is sending finish its chunks (bounded), then stop the poller
            await asyncio.wait({self._poller}, timeout=DRAIN_TIMEOUT.total_seconds())
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.helpers is not None:
            await self.helpers.close(DRAIN_TIMEOUT.total_seconds())
        if self._watcher is not None:
            await self._watcher
        await self.messengers.close()
        if self.journal is not None:  # nothing of ours sending: it has nothing left to prove
            self.journal.close(remove=self.dispatcher.sending == 0)
        if self._beating:
            await self.heartbeat.stop()

    async def on_campaigns_changed(self, campaigns: Mapping[str, Campaign]) -> None:
        self.campaigns = dict(campaigns)

    async def dispatch(self, campaign: Campaign, channel: str, due_utc: datetime, claims: Sequence[Claimed]) -> None:
        await self.dispatcher.dispatch(campaign, channel, due_utc, claims)

    async def fire_helpers(self, campaign: Campaign, channel: str, due_utc: datetime) -> int:
        """The scheduler's ``on_fire``: the helper processes claim and send the bucket too; what
        they sent is added to this process's tally of the bucket."""
        if self.helpers is None:
            return 0
        claimed, tallies = await self.helpers.fire(
            campaign, channel, due_utc, now=self.clock.now(), speed=getattr(self.clock, "speed", 1.0), lease=self.lease
        )
        mine = self.dispatcher.tally((campaign.id, channel, due_utc))
        provider = self.dispatcher.provider_name(campaign, channel) if tallies else None
        for tally in tallies:
            mine.merge(tally)
            for state, n in tally.outcomes.items():  # the helpers' registries are not scraped
                metrics.count_outcome(channel, provider, state, n)
        return claimed

    def finish_bucket(self, campaign: Campaign, channel: str, due_utc: datetime) -> BucketTally | None:
        """The scheduler's ``on_finished``: the bucket's tally, every process's sends in it."""
        return self.dispatcher.pop_tally((campaign.id, channel, due_utc))

    async def release_helper(self, k: int, gone: bool = True) -> int:
        """Helper ``k`` died (``gone``), or its bucket failed: its claimed rows go back to planned
        and its ``sending`` rows are settled now (by its journal when it is gone, else ``unknown``),
        not when their lease runs out; how many went back to planned."""
        node = f"{self.node}#w{k}"
        lost = store.lost_leases(node, self.owner, self.clock.now())
        counts = await self._recover(lost, gone=lambda owner: gone and owner.startswith(f"{node}/"))
        return counts.get("claimed_to_planned", 0) + counts.get("sending_to_planned", 0)  # this bucket sends them

    async def recover(self) -> dict[str, int]:
        """Rows whose lease was lost: claimed → planned (refired), sending → unknown, or planned when
        their owner's hand-over journal proves they never left."""
        counts = await self._recover(store.lost_leases(self.node, self.owner, self.clock.now()), gone=self._earlier_run)
        counts |= await self._settle_found_dead()
        self._forget_earlier_journals()
        if any(counts.values()):
            log.warning("leases_recovered", **counts)
            if counts.get("claimed_to_planned") and self.on_recovered is not None:
                await self.on_recovered()
        return counts

    def _earlier_run(self, owner: str) -> bool:
        """An earlier run of this node's own process: gone for sure."""
        return owner.startswith(f"{self.node}/") and owner != self.owner

    async def _settle_found_dead(self) -> dict[str, int]:
        """Rows another node made ``unknown`` when it found an earlier run of this node dead: this
        node's journal (its own disk) proves which never left (planned again) and which the provider
        took (sent); the rest stay ``unknown``."""
        rows = await store.found_dead_rows(self.engine, self.node, self.owner)
        if not rows:
            return {}
        now = self.clock.now()
        found = journals(self.journals, {row.owner for row in rows})
        never_left, accepted = _proven(rows, found)
        for (campaign_id, owner), outcomes in accepted.items():
            await store.record_outcomes(self.engine, campaign_id, outcomes, owner, now, prior_state=S.UNKNOWN)
        back = await store.settle_found_dead(self.engine, [row.delivery_id for row in rows], now, never_left=never_left)
        return {"unknown_to_planned": back, "unknown_to_sent": sum(len(o) for o in accepted.values())}

    async def _recover(
        self, lost: ColumnElement[bool], *, gone: Callable[[str], bool], found_dead: bool = False
    ) -> dict[str, int]:
        """``store.recover`` for the ``lost`` rows, with the journals of their owners that are
        ``gone`` (a process still running may yet hand over a row it marked ``sending``: its rows
        whose lease ran out are ``unknown``, as without a journal): a ``sending`` row missing from
        its owner's journal never left and is planned again; one accepted on record is ``sent``.
        The journals read are deleted."""
        now = self.clock.now()
        sending = await store.lost_sending(self.engine, lost)
        found = journals(self.journals, {row.owner for row in sending if gone(row.owner)}) if sending else {}
        never_left, accepted = _proven(sending, found)
        for (campaign_id, owner), outcomes in accepted.items():
            await store.record_outcomes(self.engine, campaign_id, outcomes, owner, now)
        counts = await store.recover(self.engine, lost, now, never_left=never_left, found_dead=found_dead)
        if accepted:
            counts["sending_to_sent"] = sum(len(o) for o in accepted.values())
        for owner in found:
            journal_path(self.journals, owner).unlink(missing_ok=True)
        return counts

    def _forget_earlier_journals(self) -> None:
        """Journals of this node's earlier runs (``node/<boot>``) that recovery had no row to read
        them for: their owners are gone, and so is what they could prove."""
        if not self.journals.is_dir():
            return
        for path in self.journals.iterdir():
            owner = owner_of(path)
            if owner is not None and owner.startswith(f"{self.node}/") and owner != self.owner:
                path.unlink(missing_ok=True)

    async def retry_due(self) -> int:
        """Claim and send every ``retry_wait`` row whose time has come; returns how many. Those inside
        their quiet hours now are skipped first; those over their frequency cap as they are claimed."""
        now = self.clock.now()
        await store.skip_quiet_retries(self.engine, self.quiet, now)

        def cap(campaign_id: str, channel: str) -> FrequencyCap | None:
            campaign = self.campaigns.get(campaign_id)
            return effective_cap(campaign, self.settings, channel) if campaign is not None else None

        claimed = await store.claim_retries(
            self.engine, self.owner, clock_span(self.clock, self.lease), now, cap_of=cap, exclude=self.held()
        )
        groups: dict[tuple[str, str, datetime], list[Claimed]] = defaultdict(list)
        for campaign_id, channel, due, claim in claimed:
            groups[(campaign_id, channel, due)].append(claim)
        for (campaign_id, channel, due), claims in groups.items():
            campaign = self.campaigns.get(campaign_id)
            if campaign is None:  # unloaded meanwhile: give the rows back for whoever has it
                await store.unclaim(self.engine, [c.delivery_id for c in claims], self.owner, self.clock.now())
                continue
            await self.dispatcher.dispatch(campaign, channel, due, claims, tallied=False)
        return len(claimed)

    async def _poll_retries(self) -> None:
        while True:
            try:  # sleep until the next round, or return at once on a stop
                await asyncio.wait_for(self._stopping.wait(), RETRY_POLL.total_seconds())
                return
            except TimeoutError:
                pass
            try:
                await self.recover()
                await self.retry_due()
            except Exception:
                log.exception("retry_poll_failed")


def _proven(
    rows: Sequence[store.LostRow], found: Mapping[str, Record | None]
) -> tuple[set[int], dict[tuple[str, str], list[store.Outcome]]]:
    """What the journals ``found`` (by owner) prove of ``rows``: the ids that never left, and the
    outcomes of those the provider took, by (campaign, owner). A row whose owner has no readable
    journal is proven neither way."""
    never_left: set[int] = set()
    accepted: dict[tuple[str, str], list[store.Outcome]] = defaultdict(list)
    for row in rows:
        record = found.get(row.owner)
        if record is None:  # no journal, or unreadable: nothing is proven
            continue
        if row.delivery_id not in record:
            never_left.add(row.delivery_id)
        elif (answer := record[row.delivery_id]) is not None:  # the provider took it: sent, as recorded
            sent = policy.accepted(answer.provider_id)
            outcome = store.Outcome(row.delivery_id, row.contact_id, sent, row.channel,
                                    provider=answer.provider, segments=answer.segments)  # fmt: skip
            accepted[(row.campaign_id, row.owner)].append(outcome)
    return never_left, accepted


def open_journal(directory: Path, owner: str) -> HandoverJournal | None:
    """This process's hand-over journal, open; None (logged) when it cannot be created: then a crash
    leaves every ``sending`` row ``unknown``, as without one."""
    journal = HandoverJournal(journal_path(directory, owner))
    try:
        journal.open()
    except OSError as exc:
        log.warning("handover_journal_unavailable", path=str(journal.path), error=str(exc)[:300])
        return None
    return journal
