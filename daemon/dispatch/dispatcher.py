"""The dispatcher: claimed rows → coupon → render (links, MIME) → messenger → recorded outcome.

It sees the store's functions and the messengers (``topslot.channels.base.Messenger``, chosen per
channel and campaign by a ``MessengerSource``, normally the registry), never SQL or a vendor library. Work goes in
chunks: one transaction marks a chunk ``sending`` (re-checking the lease), its messages go out
concurrently over the sender's pool, one transaction records the outcomes answered within
``STRAGGLER_AFTER`` seconds once at most a tenth is left (all of them, normally) and another the
rest's when they come: a few slow recipients never hold up the chunks behind them. A crash can only ever
leave a chunk's rows ``claimed`` (re-claimed, nothing was sent) or ``sending`` (``unknown`` after
recovery, never resent automatically): no row is lost and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from topslot import failpoints, metrics
from topslot.campaign import Campaign
from topslot.channel import ChannelSpec, spec_of
from topslot.channels.base import Card, ContentTemplate, EmailEnvelope, Messenger, TextMessage, on_handover
from topslot.channels.registry import MessengerSource
from topslot.clock import Clock
from topslot.coupons.keys import active_coupon_key
from topslot.coupons.stock import on_exhausted
from topslot.delivery import Decision, SkipReason
from topslot.delivery import DeliveryState as S
from topslot.dispatch import policy
from topslot.dispatch.journal import HandoverJournal
from topslot.dispatch.tally import BucketKey, BucketTally
from topslot.health import Health
from topslot.links.book import LinkBook
from topslot.links.factory import CampaignLinks
from topslot.links.keys import Keyring
from topslot.links.tracking import TrackingBase
from topslot.logs import bound, get_logger
from topslot.rendering import CompiledCampaign, compile_campaign
from topslot.rendering.sms_segments import sms_segments
from topslot.settings import Settings
from topslot.store import dispatch as store
from topslot.store import links as link_store
from topslot.store.db import is_transient
from topslot.store.ledger import Claimed
from topslot.templating import contact_view

log = get_logger("dispatch")
T = TypeVar("T")

# Rows marked ``sending`` per transaction (a chunk), and chunks on the wire at once. A chunk holds
# CHUNK_SPAN_S seconds of the messenger's rate, CHUNK_MIN to CHUNK rows (CHUNK for a messenger
# without a rate; ``chunk_rows``): IN_FLIGHT chunks are about a second of sending at any rate, which
# is what a graceful stop waits for and, without the hand-over journal, what a crash leaves
# ``unknown`` (with it, the default, only the messages on the wire are, one per connection). Each
# chunk is three commits (links, mark, record): at an unlimited rate 1,000-row chunks sent 1.15x as
# fast as 200-row ones with two processes on SQLite (measured side by side, docs/pipeline.md
# "Chunking"). CHUNK is at most a claim batch (``claims.CLAIM_BATCH``).
CHUNK = 1000
CHUNK_MIN = 10
CHUNK_SPAN_S = 0.5
IN_FLIGHT = 2
# A chunk is marked ``sending`` while it renders: the rendering yields to the event loop every
# RENDER_SLICE rows, so the marking's statements go on in the database's thread meanwhile instead of
# after it (one process sending email: 1.03x, docs/pipeline.md).
RENDER_SLICE = 100
# A chunk whose last few messages (at most STRAGGLERS of it) are still unanswered after
# STRAGGLER_AFTER seconds records what has been answered and frees its place in the window; those
# few (a server stalling on some recipients: up to 10 minutes after the final dot) are recorded on
# their own when answered, so they never hold up the bucket. A chunk still mostly waiting (a slow
# rate) keeps its place: what is marked ``sending`` stays bounded by IN_FLIGHT chunks and a tail.
STRAGGLER_AFTER = 2.0
STRAGGLERS = 0.1
# Outcomes the database refuses for now are written again after 0.5 s, doubling, for this long:
# the messages are out, and a row left ``sending`` would become ``unknown``.
RECORD_RETRY_FOR = 30.0


@dataclass
class Prepared:
    """One recipient's message, ready to hand over."""

    recipient: store.Recipient
    message: EmailEnvelope | TextMessage
    address: str  # the channel's address it goes to (also what a hard bounce suppresses)
    segments: int | None = None  # what an SMS is billed as


class CampaignKit:
    """What one campaign version needs per message, built once: compiled templates, link factory."""

    def __init__(self, campaign: Campaign, settings: Settings, keyring: Keyring):
        self.campaign = campaign
        self.compiled: CompiledCampaign = compile_campaign(campaign, settings.templates_dir, settings.compliance)
        self.book = LinkBook(campaign.id)
        self.links = CampaignLinks(
            campaign,
            keyring,
            TrackingBase.parse(settings.tracking_base_url),
            book=self.book,
            mail_domain=settings.bounces.domain,
            verp_local=settings.bounces.local,
        )


class Dispatcher:
    """Sends claimed rows through the messengers ``messengers`` picks per channel and campaign."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        clock: Clock,
        keyring: Keyring,
        messengers: MessengerSource,
        *,
        owner: str,
        health: Health | None = None,
        journal: HandoverJournal | None = None,
    ):
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.keyring = keyring
        self.messengers = messengers
        self.owner = owner
        self.health = health or Health()
        self.journal = journal  # hand-overs on record: a crash leaves only those on the wire unknown
        self.sending = 0  # rows this process has marked sending whose outcome is not recorded yet
        self._kits: dict[int, CampaignKit] = {}
        self._coupon_key = active_coupon_key(keyring)
        self.stopping = False  # set on a graceful stop: finish what is on the wire, start nothing new
        self._tallies: dict[BucketKey, BucketTally] = {}
        # awaited before marking a chunk sending and before each hand-over: returns while this process
        # may send, raises ``NodeFenced`` once it was found dead (``topslot.dispatch.heartbeat``)
        self.fence: Callable[[], Awaitable[None]] | None = None

    def kit(self, campaign: Campaign) -> CampaignKit:
        """Compiled state per campaign version (the model is frozen, so identity marks a version)."""
        kit = self._kits.get(id(campaign))
        if kit is None or kit.campaign is not campaign:
            kit = CampaignKit(campaign, self.settings, self.keyring)
            self._kits = {k: v for k, v in self._kits.items() if v.campaign.id != campaign.id}
            self._kits[id(campaign)] = kit
        return kit

    def provider_name(self, campaign: Campaign, channel: str) -> str | None:
        """The provider that sends ``channel`` for ``campaign`` (the metrics' label)."""
        try:
            return self.messengers.messenger(spec_of(channel).name, campaign.provider_for(channel)).provider
        except Exception:  # no provider configured: the dispatch itself says so
            return campaign.provider_for(channel)

    def tally(self, key: BucketKey) -> BucketTally:
        """The running tally of the bucket ``key`` (made on first use)."""
        found = self._tallies.get(key)
        if found is None:
            found = self._tallies[key] = BucketTally(key[2])
        return found

    def pop_tally(self, key: BucketKey) -> BucketTally | None:
        """The bucket's tally, forgotten here (the bucket has finished)."""
        return self._tallies.pop(key, None)

    async def dispatch(
        self, campaign: Campaign, channel: str, due_utc: datetime, claims: Sequence[Claimed], *, tallied: bool = True
    ) -> None:
        """Send one batch of claimed rows of a bucket (the scheduler's ``on_claimed``). ``tallied``:
        count the outcomes in the bucket's tally (a retry round after the bucket does not)."""
        tally = self.tally((campaign.id, channel, due_utc)) if tallied else BucketTally(due_utc)
        with bound(campaign_id=campaign.id, channel=channel, slot=due_utc.isoformat()):
            recipients = await store.load_recipients(self.engine, claims, self.owner)
            recipients = await self._drop_too_late(campaign, channel, recipients, tally)
            recipients = await store.drop_ineligible(
                self.engine, campaign, channel, recipients, self.owner, self.clock.now()
            )
            recipients = await self._with_coupons(campaign, recipients)
            kit = self.kit(campaign)
            messenger = self.messengers.messenger(spec_of(channel).name, campaign.provider_for(channel))
            stragglers: list[asyncio.Task[None]] = []  # messages of chunks that moved on without them
            try:
                await self._send_all(kit, campaign, channel, messenger, recipients, tally, stragglers)
            finally:
                await _settle(stragglers)

    async def _send_all(
        self,
        kit: CampaignKit,
        campaign: Campaign,
        channel: str,
        messenger: Messenger,
        recipients: list[store.Recipient],
        tally: BucketTally,
        stragglers: list[asyncio.Task[None]],
    ) -> None:
        """Render and send ``recipients`` chunk by chunk. Pipelined: once a place in the window is
        free, the next chunk is marked ``sending`` and renders while the other is on the wire, so
        the pool never idles at a chunk boundary; each chunk still commits its own transitions."""
        rows = chunk_rows(messenger.rate_per_second)
        async with ChunkWindow(IN_FLIGHT) as window:
            for start in range(0, len(recipients), rows):
                await window.room()  # marked ``sending``: at most IN_FLIGHT chunks, as on the wire
                if self.stopping:  # a graceful stop: what is not on the wire yet goes back to planned
                    rest = [r.delivery_id for r in recipients[start:]]
                    await store.unclaim(self.engine, rest, self.owner, self.clock.now())
                    log.info("dispatch_stopped", handed_back=len(rest))
                    break
                prepared, unrenderable = await self._mark_and_prepare(
                    kit, channel, recipients[start : start + rows], tally
                )
                pending = kit.book.pending()
                await link_store.save_links(self.engine, campaign.id, pending)
                kit.book.mark_saved(pending)
                if unrenderable:
                    await store.record_outcomes(self.engine, campaign.id, unrenderable, self.owner, self.clock.now())
                    self.sending -= len(unrenderable)
                    for outcome in unrenderable:
                        tally.add(outcome.decision.state)
                        metrics.count_outcome(channel, messenger.provider, outcome.decision.state)
                if prepared:
                    send = partial(self._send_chunk, campaign, channel, messenger, prepared, tally, stragglers)
                    await window.submit(send)

    # ------------------------------------------------------------ steps

    async def _drop_too_late(
        self, campaign: Campaign, channel: str, recipients: list[store.Recipient], tally: BucketTally
    ) -> list[store.Recipient]:
        """Past the slot's grace nothing is sent (a 07:30 message never goes at 14:00): a row never
        tried is skipped as a missed slot, a retry fails."""
        now = self.clock.now()
        late = [r for r in recipients if now > due_limit(campaign, r.due_utc)]
        if not late:
            return recipients
        never_tried = [r.delivery_id for r in late if r.attempts == 0]
        await store.release_claims(self.engine, never_tried, self.owner, now, reason=SkipReason.MISSED_SLOT)
        expired = [
            store.Outcome(
                r.delivery_id,
                r.contact_id,
                Decision(S.FAILED, error="the slot's grace ended before a retry"),
                channel,
            )
            for r in late
            if r.attempts > 0
        ]
        await store.record_outcomes(self.engine, campaign.id, expired, self.owner, now, prior_state=S.CLAIMED)
        for _ in never_tried:
            tally.add(S.SKIPPED)
        for _ in expired:
            tally.add(S.FAILED)
        provider = self.provider_name(campaign, channel)
        metrics.count_outcome(channel, provider, S.SKIPPED, len(never_tried))
        metrics.count_outcome(channel, provider, S.FAILED, len(expired))
        log.warning("too_late_to_send", rows=len(late), skipped=len(never_tried), failed=len(expired))
        return [r for r in recipients if now <= due_limit(campaign, r.due_utc)]

    async def _with_coupons(self, campaign: Campaign, recipients: list[store.Recipient]) -> list[store.Recipient]:
        """Reserve a code per contact; apply ``on_exhausted`` to those left without one."""
        if campaign.coupon is None or not recipients:
            return recipients
        now = self.clock.now()
        reservation = await store.reserve_coupons(self.engine, campaign, recipients, now, self._coupon_key)
        if not reservation.exhausted:
            return [_with_code(r, reservation.codes[r.contact_id]) for r in recipients]
        decision = on_exhausted(campaign.coupon.on_exhausted)
        short = set(reservation.exhausted)
        left_out = [r.delivery_id for r in recipients if r.contact_id in short]
        if decision.skip_reason is not None:
            await store.release_claims(self.engine, left_out, self.owner, now, reason=decision.skip_reason)
        elif decision.coupon is None:  # pause: hand the rows back, to be claimed once codes exist again
            await store.unclaim(self.engine, left_out, self.owner, now)
        log.warning("coupons_exhausted", rows=len(left_out), action=campaign.coupon.on_exhausted)
        return [
            _with_code(r, reservation.codes.get(r.contact_id, decision.coupon or None))
            for r in recipients
            if r.contact_id not in short or decision.coupon is not None
        ]

    async def _mark_and_prepare(
        self, kit: CampaignKit, channel: str, chunk: Sequence[store.Recipient], tally: BucketTally
    ) -> tuple[list[Prepared], list[store.Outcome]]:
        """Mark the chunk ``sending`` while it renders (see RENDER_SLICE): the messages of the rows
        still ours (the lease re-checked by the marking; the others are not sent, nor recorded),
        and the outcomes of those that could not be rendered."""
        if self.fence is not None:
            await self.fence()
        now = self.clock.now()
        tally.started(now)
        pairs = [(r.delivery_id, r.lease_epoch) for r in chunk]
        marking = asyncio.ensure_future(store.mark_sending(self.engine, pairs, self.owner, now))
        prepared: list[Prepared] = []
        failed: list[store.Outcome] = []
        try:
            for at in range(0, len(chunk), RENDER_SLICE):
                await asyncio.sleep(0)  # the marking's next statement
                ready, broken = self._prepare(kit, channel, chunk[at : at + RENDER_SLICE])
                prepared += ready
                failed += broken
            allowed = await marking
        finally:
            marking.cancel()  # cancelled or failed meanwhile: no marking left running (done: a no-op)
        self.sending += len(allowed)
        if lost := len(chunk) - len(allowed):
            log.warning("lease_lost", rows=lost)  # another node holds them now: not ours to send
        ours = [p for p in prepared if p.recipient.delivery_id in allowed]
        return ours, [o for o in failed if o.delivery_id in allowed]

    def _prepare(
        self, kit: CampaignKit, channel: str, recipients: Sequence[store.Recipient]
    ) -> tuple[list[Prepared], list[store.Outcome]]:
        prepared: list[Prepared] = []
        failed: list[store.Outcome] = []
        now = self.clock.now()
        spec, wanted = spec_of(channel), kit.campaign.provider_for(channel)  # once per chunk, not per message
        for r in recipients:
            try:
                address = spec.address(r, wanted)
                if address is None:  # the contact's address went away since planning
                    raise ValueError(f"the contact has no {spec.label} address")
                message = self._render(kit, spec, r, address, now)
                segments = (
                    sms_segments(message.body).segments if spec.segmented and isinstance(message, TextMessage) else None
                )
                prepared.append(Prepared(r, message, address, segments))
            except Exception as exc:  # a template or header problem: this row fails, the rest go on
                log.error("render_failed", delivery_id=r.delivery_id, error=policy.describe(exc))
                decision = Decision(S.FAILED, error=f"render failed: {policy.describe(exc)}")
                failed.append(store.Outcome(r.delivery_id, r.contact_id, decision, channel))
        return prepared, failed

    def _render(
        self, kit: CampaignKit, spec: ChannelSpec, r: store.Recipient, address: str, now: datetime
    ) -> EmailEnvelope | TextMessage:
        channel = spec.name
        contact = contact_view(r, now.date())
        links = kit.links.for_delivery(r.delivery_id, channel)
        if spec.mime:
            rendered = kit.compiled.render_email(contact, r.coupon_code, links, r.slot)
            name = " ".join(n for n in (r.first_name, r.last_name) if n) or None
            assembler = kit.compiled.assembler
            assert assembler is not None  # compiled with email content: the campaign sends email
            data = assembler.assemble(rendered, to=address, to_name=name, delivery_id=r.delivery_id, date=now)
            return EmailEnvelope(r.delivery_id, links.return_path or assembler.mail_from, address, data, crlf=True)
        body = kit.compiled.render_text(channel, contact, r.coupon_code, links, r.slot)
        if not spec.cards:
            return TextMessage(r.delivery_id, address, body)
        parts = kit.compiled.render_card(channel, contact, r.coupon_code, links, r.slot)
        card = Card(parts.title, parts.link, parts.button, r.coupon_code) if parts else None
        im = kit.campaign.content.im
        template = ContentTemplate(im.content_sid, parts.variables) if im and im.content_sid and parts else None
        return TextMessage(r.delivery_id, address, body, card, template, kit.campaign.id)

    async def _send_chunk(
        self,
        campaign: Campaign,
        channel: str,
        messenger: Messenger,
        chunk: Sequence[Prepared],
        tally: BucketTally,
        stragglers: list[asyncio.Task[None]],
    ) -> None:
        """Hand the messages of a chunk marked ``sending`` over, record what is answered within
        ``STRAGGLER_AFTER`` seconds; the rest are recorded by a task added to ``stragglers``."""
        failpoints.hit("after_render")  # fault tests only (TOPSLOT_FAILPOINT); a no-op otherwise
        sends = {asyncio.create_task(self._send_one(messenger, p)): p for p in chunk}
        done, pending = await _wait(sends, STRAGGLER_AFTER)
        while len(pending) > len(sends) * STRAGGLERS:  # most of it is still going: not a few stragglers
            more, pending = await _wait(pending, None, asyncio.FIRST_COMPLETED)
            done |= more
        failpoints.hit("after_reply")
        await self._record(campaign, channel, messenger, [(sends[t], t.result()) for t in done], tally)
        failpoints.hit("after_commit")
        if pending:
            log.info("chunk_stragglers", rows=len(pending), waited_s=STRAGGLER_AFTER)
            late = {t: sends[t] for t in pending}
            stragglers.append(asyncio.create_task(self._record_stragglers(campaign, channel, messenger, late, tally)))

    async def _record_stragglers(
        self,
        campaign: Campaign,
        channel: str,
        messenger: Messenger,
        sends: dict[asyncio.Task[tuple[str | BaseException, datetime]], Prepared],
        tally: BucketTally,
    ) -> None:
        await _wait(sends, None)
        answers = [(p, t.result()) for t, p in sends.items()]
        await self._record(campaign, channel, messenger, answers, tally, stragglers=True)

    async def _record(
        self,
        campaign: Campaign,
        channel: str,
        messenger: Messenger,
        answers: Sequence[tuple[Prepared, tuple[str | BaseException, datetime]]],
        tally: BucketTally,
        *,
        stragglers: bool = False,
    ) -> None:
        """Record the outcome of each answered message in one transaction, and tally it."""
        if not answers:
            return
        retry_until = due_limit(campaign, answers[0][0].recipient.due_utc)
        now = self.clock.now()
        outcomes = [
            store.Outcome(
                p.recipient.delivery_id,
                p.recipient.contact_id,
                policy.accepted(result) if isinstance(result, str)
                else policy.after_error(result, attempts=p.recipient.attempts + 1, now=now, retry_until=retry_until),
                channel,
                p.address,
                provider=messenger.provider,
                segments=p.segments,
            )
            for p, (result, _) in answers
        ]  # fmt: skip
        await self._written(lambda: store.record_outcomes(self.engine, campaign.id, outcomes, self.owner, now))
        self.sending -= len(outcomes)
        if self.sending == 0 and self.journal is not None:  # nothing of ours is sending: start it afresh
            await self.journal.settled()
        counts: dict[S, int] = {}
        for o, (_, (_, answered_at)) in zip(outcomes, answers, strict=True):
            state = o.decision.state
            counts[state] = counts.get(state, 0) + 1
            tally.add(state, answered_at if state == S.SENT else None, straggler=stragglers)
        for counted, n in counts.items():  # once per state, not per message
            metrics.count_outcome(channel, messenger.provider, counted, n)
        log.info("chunk_sent", rows=len(outcomes), outcomes={str(k): n for k, n in counts.items()})

    async def _written(self, write: Callable[[], Awaitable[None]]) -> None:
        """Run ``write`` (a transaction recording what was sent); while the database refuses it for
        now, again after 0.5 s, doubling, for ``RECORD_RETRY_FOR`` seconds, then give up (raise)."""
        delay, waited = 0.5, 0.0
        while True:
            try:
                await write()
                self.health.database_ok("record outcomes")
                return
            except Exception as exc:
                if not is_transient(exc) or waited >= RECORD_RETRY_FOR:
                    raise
                self.health.database_failed("record outcomes", exc)
                log.warning("record_retry", error=f"{type(exc).__name__}"[:100], retry_in_s=delay)
                await asyncio.sleep(delay)
                waited += delay
                delay = min(delay * 2, 8.0)

    async def _send_one(self, messenger: Messenger, prepared: Prepared) -> tuple[str | BaseException, datetime]:
        """The provider's id for the message, or what it raised; and when the answer came. (A task
        of its own: the hand-over hook it sets is this message's.)"""
        delivery_id = prepared.recipient.delivery_id
        if self.journal is not None or self.fence is not None:
            on_handover(partial(self._handing_over, delivery_id, not messenger.drops_repeats))
        started = time.perf_counter()
        try:
            result: str | BaseException = await messenger.send(prepared.message)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # classified by the policy; unexpected ones become unknown
            result = exc
        error = None if isinstance(result, str) else result
        metrics.observe_send(messenger.provider, time.perf_counter() - started, error)
        if self.journal is not None and isinstance(result, str):  # a crash from here on: sent, not unknown
            self.journal.accepted(delivery_id, result, messenger.provider, prepared.segments)
        return result, self.clock.now()

    async def _handing_over(self, delivery_id: int, synced: bool) -> None:
        """Right before a message leaves: its hand-over on record first (fsynced unless its provider
        drops repeats: ``synced``), then the fence. (In this order: a process stopped in between,
        then found dead, is known to have been about to send it, so the row is ``unknown``, not sent
        again by another; and it sends nothing once awake.)"""
        if self.journal is not None and (waiter := self.journal.mark(delivery_id, synced=synced)) is not None:
            await waiter
        if self.fence is not None:
            await self.fence()


class ChunkWindow:
    """Runs up to ``size`` chunk sends at once. Leaving waits for every one of them and re-raises the
    first failure; once one has failed no new chunk starts. Cancelled, it cancels the ones in flight
    (their rows stay ``sending``: recovery makes them ``unknown``, as after a crash)."""

    def __init__(self, size: int):
        self._slots = asyncio.Semaphore(size)
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def room(self) -> None:
        """Wait until a chunk can start (``submit`` then starts it at once: it has one submitter);
        raises the first failure once one has failed, as ``submit`` does."""
        await self._slots.acquire()
        self._slots.release()
        if self._failure is not None:
            raise self._failure

    async def submit(self, start: Callable[[], Coroutine[object, object, None]]) -> None:
        await self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            raise self._failure
        task: asyncio.Task[None] = asyncio.create_task(start())
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def __aenter__(self) -> ChunkWindow:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            self._cancel()
        try:
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        except asyncio.CancelledError:
            self._cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            raise
        if exc is None and self._failure is not None:
            raise self._failure

    def _cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()


async def _wait(
    tasks: Collection[asyncio.Task[T]], timeout: float | None, return_when: str = asyncio.ALL_COMPLETED
) -> tuple[set[asyncio.Task[T]], set[asyncio.Task[T]]]:
    """``asyncio.wait`` for ``tasks`` (done, pending); cancelled, it cancels them first, as
    ``gather`` would (their rows stay ``sending``: recovery makes them ``unknown``)."""
    if not tasks:
        return set(), set()
    try:
        return await asyncio.wait(tasks, timeout=timeout, return_when=return_when)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        raise


async def _settle(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for every task (re-raising the first failure); cancelled, cancel them and wait."""
    try:
        await asyncio.gather(*tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def chunk_rows(rate_per_second: float | None) -> int:
    """Rows per chunk for a messenger paced at ``rate_per_second`` (``None``: no limit): about
    ``CHUNK_SPAN_S`` seconds of sending, ``CHUNK_MIN`` to ``CHUNK`` rows."""
    if rate_per_second is None:
        return CHUNK
    return max(CHUNK_MIN, min(CHUNK, int(rate_per_second * CHUNK_SPAN_S)))


def due_limit(campaign: Campaign, due_utc: datetime) -> datetime:
    """The last instant a retry may start: the slot plus the campaign's missed-slot grace."""
    return due_utc + campaign.schedule.missed_slot.grace


def _with_code(r: store.Recipient, code: str | None) -> store.Recipient:
    r.coupon_code = code
    return r
