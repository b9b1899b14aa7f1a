"""Writing one batch of hits: look up the deliveries, label every hit, insert, relabel — one transaction.

Steps (``EventWriter.write``):

1. campaign, channel and hand-over time of every delivery in the batch (hits whose delivery does
   not exist are counted as ``unknown`` and left out: the token was genuine, the row is gone);
2. labels (``topslot.tracking.classify``): each hit alone, then link bursts per delivery, looking
   at this batch's clicks and the clicks stored in the last ``burst_window`` (a stored click that
   turns out to be part of a burst is relabelled ``scanner``/``link_burst``). Stored clicks are read
   only for deliveries whose links clicked in that window (stored and in this batch) are at least
   ``burst_links`` different ones: first the links alone, a row per delivery and link;
3. insert the rows;
4. opens upgraded by a human click of the same delivery (``upgraded_by_click``).

Given the batch's ``source`` (the tracking server run that numbered its hits, ``Hit.seq``), the
transaction first skips the hits numbered up to what that source has stored already (counted as
``repeated``: a batch written again after its answer was lost) and ends by moving the source's
``written_through`` to the batch's last number: each hit is stored once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot import metrics
from topslot.store import tracking_events as store
from topslot.store.db import IMMEDIATE
from topslot.tracking.cache import LruCache
from topslot.tracking.classify import (
    DEFAULT_RULES,
    HUMAN,
    MACHINE_OPEN,
    SCANNER,
    UPGRADED_BY_CLICK,
    Click,
    Label,
    Open,
    Rules,
    Seen,
    find_bursts,
    label,
    opens_to_upgrade,
)
from topslot.tracking.hits import Hit

LINK_BURST = Label(SCANNER, "link_burst")
HUMAN_OPENED_CACHE = 100_000  # deliveries (~100 bytes each)


@dataclass(frozen=True, slots=True)
class Written:
    written: int
    unknown: int  # hits whose delivery does not exist
    relabelled: int  # stored events whose label changed (bursts, upgrades)
    tally: tuple[tuple[str, str, int], ...] = ()  # (kind, label, hits) written: ``count`` reports them
    repeated: int = 0  # hits of the batch stored by an earlier write of it (its answer was lost)

    def count(self) -> None:
        """Add what was written to ``topslot_tracking_events_total`` (in the process that serves
        ``/metrics``: the writer's own process reports its batches back)."""
        for kind, name, n in self.tally:
            metrics.count_tracking_event(kind, name, n)


class EventWriter:
    """One batch stored in one transaction, by ``await writer(hits)`` on an ``AsyncEngine``'s loop or
    by ``writer.write_blocking(hits)`` with a blocking ``Engine`` (a SQLite file, in the writer's
    process: ``topslot.tracking.flusher``). The same steps either way (``_store``, over a blocking
    connection). Metrics are not counted here: ``Written.count`` does that where ``/metrics`` is served."""

    def __init__(self, engine: AsyncEngine | Engine, rules: Rules = DEFAULT_RULES):
        self.engine = engine
        self.rules = rules
        self._conn: Connection | None = None  # write_blocking's, kept between batches
        # Deliveries known to have an open labelled human: an open is relabelled only from
        # machine_open to human (an upgrade), never back, so this stays true (whoever wrote the open).
        # Filled once the transaction that saw it has committed (``_remember``).
        self._human_opened: LruCache[int, bool] = LruCache(HUMAN_OPENED_CACHE)

    def close(self) -> None:
        """Close ``write_blocking``'s connection (the engine is the caller's to dispose of)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def __call__(self, hits: Sequence[Hit]) -> Written:
        return await self.write(hits)

    async def write(self, hits: Sequence[Hit], source: str | None = None) -> Written:
        engine = self.engine
        assert isinstance(engine, AsyncEngine), "write: an AsyncEngine's writer"
        if not hits:
            return Written(0, 0, 0)
        async with engine.execution_options(**IMMEDIATE).begin() as conn:
            written, opened = await conn.run_sync(self._store, hits, source)
        self._remember(opened)
        return written

    def write_blocking(self, hits: Sequence[Hit], source: str | None = None) -> Written:
        engine = self.engine
        assert isinstance(engine, Engine), "write_blocking: a blocking Engine's writer"
        if not hits:
            return Written(0, 0, 0)
        # One connection for every batch: a pool's check-out and check-in (its reset) cost more per
        # batch than its few statements' own Python. Dropped after a failure; the next batch opens another.
        conn = self._conn
        if conn is None:
            conn = self._conn = engine.connect().execution_options(**IMMEDIATE)
        try:
            with conn.begin():
                written, opened = self._store(conn, hits, source)
        except BaseException:
            self.close()
            raise
        self._remember(opened)
        return written

    def _remember(self, opened: set[int]) -> None:
        """After a commit: the deliveries its batch found (or made) with a human open."""
        for delivery_id in opened:
            self._human_opened.put(delivery_id, True)

    def _store(self, conn: Connection, hits: Sequence[Hit], source: str | None = None) -> tuple[Written, set[int]]:
        """The batch written; and the deliveries it found (or made) with a human open, which
        ``_remember`` takes once the transaction has committed."""
        repeated = 0
        if source is not None:  # skip what an earlier write of this batch stored; then say how far it is
            done = store.written_through(conn, source)
            fresh = [h for h in hits if h.seq > done]
            repeated = len(hits) - len(fresh)
            if fresh:
                store.set_written_through(conn, source, max(h.seq for h in fresh), datetime.now(UTC))
            hits = fresh
        written, opened = self._labelled(conn, hits)
        return (replace(written, repeated=repeated) if repeated else written), opened

    def _labelled(self, conn: Connection, hits: Sequence[Hit]) -> tuple[Written, set[int]]:
        if not hits:
            return Written(0, 0, 0), set()
        rules = self.rules
        facts = store.delivery_facts(conn, (h.delivery_id for h in hits))
        known = [h for h in hits if h.delivery_id in facts]
        labels = [
            label(
                Seen(h.kind, h.method, h.user_agent, h.ip, h.occurred_at),
                facts[h.delivery_id].handed_over_at,
                rules,
            )
            for h in known
        ]
        relabel = self._bursts(conn, known, labels)
        rows = [  # store.EVENT_FIELDS
            (
                h.delivery_id,
                h.campaign_id or facts[h.delivery_id].campaign_id,
                h.kind,
                h.link_id,
                h.occurred_at,
                h.method,
                h.user_agent,
                h.referer,
                h.ip,
                lab.label,
                lab.reason,
            )
            for h, lab in zip(known, labels, strict=True)
        ]
        store.insert_event_rows(conn, rows)
        human_clicks: dict[int, datetime] = {}
        opened: set[int] = set()
        for h, lab in zip(known, labels, strict=True):
            if h.kind == "click" and lab.label == HUMAN:
                first = human_clicks.get(h.delivery_id)
                if first is None or h.occurred_at < first:
                    human_clicks[h.delivery_id] = h.occurred_at
        if human_clicks:  # deliveries with a human open need nothing; the others' machine opens are candidates
            asked = [d for d in human_clicks if self._human_opened.get(d) is None]
            settled = store.with_open_labelled(conn, asked, HUMAN) if asked else set()
            waiting = [d for d in asked if d not in settled]
            stored = store.opens_of(conn, waiting, MACHINE_OPEN) if waiting else []
            opens = [Open(o.id, o.delivery_id, o.occurred_at, o.label) for o in stored]
            upgraded = opens_to_upgrade(opens, human_clicks)
            relabel += [(i, HUMAN, UPGRADED_BY_CLICK) for i in upgraded]
            chosen = set(upgraded)
            opened = settled | {o.delivery_id for o in stored if o.id in chosen}
        store.set_labels(conn, relabel)
        tally = Counter((h.kind, lab.label) for h, lab in zip(known, labels, strict=True))
        written = Written(len(rows), len(hits) - len(known), len(relabel), tuple((*k, n) for k, n in tally.items()))
        return written, opened

    def _bursts(self, conn: Connection, hits: Sequence[Hit], labels: list[Label]) -> list[tuple[int, str, str]]:
        """Mark this batch's clicks that form a burst (in ``labels``); return stored clicks to relabel."""
        clicks = [i for i, h in enumerate(hits) if h.kind == "click" and h.method != "HEAD"]
        if not clicks or self.rules.burst_links < 2:  # below 2, nothing is a burst (find_bursts)
            return []
        since = min(hits[i].occurred_at for i in clicks) - self.rules.burst_window
        links: dict[int, set[int | None]] = {}  # delivery → links clicked (this batch, then stored too)
        for i in clicks:
            links.setdefault(hits[i].delivery_id, set()).add(hits[i].link_id)
        for delivery_id, stored_links in store.recent_click_links(conn, links, since).items():
            links[delivery_id] |= stored_links
        # a burst needs burst_links different links: only deliveries with that many need their clicks read
        maybe = [d for d, seen in links.items() if len(seen) >= self.rules.burst_links]
        stored = store.recent_clicks(conn, maybe, since) if maybe else []
        stored_labels = {s.id: s.label for s in stored}
        by_delivery: dict[int, list[Click]] = {}
        for i in clicks:
            h = hits[i]
            by_delivery.setdefault(h.delivery_id, []).append(Click(("new", i), h.link_id, h.occurred_at))
        for s in stored:
            by_delivery.setdefault(s.delivery_id, []).append(Click(("stored", s.id), s.link_id, s.occurred_at))
        relabel: list[tuple[int, str, str]] = []
        for group in by_delivery.values():
            refs = cast(set[tuple[str, int]], find_bursts(group, self.rules))  # the refs given to Click above
            for origin, number in sorted(refs):
                if origin == "new" and labels[number].label == HUMAN:
                    labels[number] = LINK_BURST
                elif origin == "stored" and stored_labels[number] == HUMAN:
                    relabel.append((number, *LINK_BURST))
        return relabel
