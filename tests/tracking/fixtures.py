"""A planned campaign with saved links and signed tokens, and a real tracking server on 127.0.0.1
(``running_server`` for the world's links, ``serving`` with the routes of a provider's callbacks)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduling.ledger_fixtures import NOW, campaign, populate, settings
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.clock import FakeClock
from topslot.links.keys import Keyring
from topslot.links.tokens import sign
from topslot.links.urls import link_key, normalise_url
from topslot.scheduling.plan_run import plan_campaign
from topslot.store import ledger
from topslot.store.links import save_links
from topslot.store.schema import contacts, deliveries, events
from topslot.tracking.server import TrackingOptions, TrackingServer

NY_DUE = datetime(2027, 5, 6, 11, 30, tzinfo=UTC)  # 07:30 in New York: contacts newyork, newyork2
SENT_AT = datetime(2027, 5, 6, 11, 29, tzinfo=UTC)
KEYS = {"k2": b"second-key-0123456789", "k1": b"first-key-0123456789"}
LANDING = "https://shop.example.com/offer?x=1#top"
FAQ = "https://shop.example.com/faq"


def keyring(*ids: str, active: str = "k2") -> Keyring:
    ids = ids or tuple(KEYS)
    return Keyring({i: KEYS[i] for i in ids}, active=active)


@dataclass
class World:
    engine: AsyncEngine
    keyring: Keyring
    campaign: Any
    people: dict[str, int]  # external id → contact id
    delivery: dict[str, int]  # external id → its first delivery id (NY bucket for the New Yorkers)
    landing_key: str
    faq_key: str

    def open_token(self, who: str = "newyork") -> str:
        return sign(self.keyring, "open", self.delivery[who])

    def click_token(self, who: str = "newyork", key: str | None = None) -> str:
        return sign(self.keyring, "click", self.delivery[who], key or self.landing_key)

    def unsubscribe_token(self, who: str = "newyork") -> str:
        return sign(self.keyring, "unsubscribe", self.delivery[who])


async def make_world(engine: AsyncEngine, tmp_path: Path, ring: Keyring | None = None) -> World:
    """Contacts and planned deliveries (tests/scheduling's population); New Yorkers' first rows 'sent' at SENT_AT."""
    c = campaign()
    people = await populate(engine, tmp_path)
    await ledger.record_campaign(engine, c, "hash", NOW)
    await plan_campaign(engine, c, settings(tmp_path), NOW, write=True)
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                select(deliveries.c.id, deliveries.c.contact_id, deliveries.c.due_utc).order_by(deliveries.c.due_utc)
            )
        ).all()
    by_contact = {v: k for k, v in people.items()}
    first: dict[str, int] = {}
    for row in rows:
        first.setdefault(by_contact[row.contact_id], row.id)
    pairs = {link_key(normalise_url(u)): normalise_url(u) for u in (LANDING, FAQ)}
    await save_links(engine, c.id, pairs)
    await mark_sent(engine, [first["newyork"], first["newyork2"]], SENT_AT)
    return World(
        engine,
        ring or keyring(),
        c,
        people,
        first,
        link_key(normalise_url(LANDING)),
        link_key(normalise_url(FAQ)),
    )


async def mark_sent(engine: AsyncEngine, ids: list[int], at: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            update(deliveries).where(deliveries.c.id.in_(ids)).values(state="sent", updated_at=at, provider_id="x")
        )


async def stored_events(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        return [dict(r) for r in (await conn.execute(select(events).order_by(events.c.id))).mappings()]


def process_alive(pid: int) -> bool:
    """A process with this id exists (a reaped one does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def contact_email(engine: AsyncEngine, contact_id: int) -> str:
    async with engine.connect() as conn:
        return await conn.scalar(select(contacts.c.email).where(contacts.c.id == contact_id))


@asynccontextmanager
async def running_server(world: World, clock: FakeClock | None = None, **options: Any) -> AsyncIterator[TrackingServer]:
    opts = {"port": 0, "flush_interval": 0.05, **options}
    server = TrackingServer(
        world.engine, world.keyring, clock or FakeClock(SENT_AT + timedelta(hours=1)), TrackingOptions(**opts)
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def serving(
    engine: AsyncEngine, clock: Any, routes: Mapping[str, Any], **options: Any
) -> AsyncIterator[TrackingServer]:
    """A tracking server (any free port, flushing every 50 ms, ``options``) with ``routes`` (path →
    handler) added as the daemon adds them, running for the block."""
    server = TrackingServer(engine, keyring(), clock, TrackingOptions(**{"port": 0, "flush_interval": 0.05, **options}))
    for path, handler in routes.items():
        server.add_route(path, handler)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
