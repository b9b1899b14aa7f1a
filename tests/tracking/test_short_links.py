"""``/s/{code}`` SMS short links over real TCP on 127.0.0.1, against SQLite and PostgreSQL: the same
click as ``/c/{token}`` (verified, labelled, recorded, attributed, redirected with UTM and tsid)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.webhook import signed_headers
from topslot.campaign import Campaign
from topslot.clock import FakeClock
from topslot.links.factory import CampaignLinks
from topslot.links.keys import Keyring
from topslot.links.short import SHORT_CODE_CHARS, placeholder_code, sign_short
from topslot.links.tokens import verify
from topslot.links.urls import link_key, normalise_url
from topslot.store.links import save_links
from topslot.store.schema import conversions
from topslot.tracking import pages
from topslot.tracking.conversions_route import conversions_handler
from topslot.tracking.redirect import CLICK_ID_PARAM
from tracking.fixtures import SENT_AT, World, keyring, make_world, running_server, stored_events

WEBHOOK_KEY = "whsec-short-links-0123456789"
SMS_LANDING = "https://shop.example.com/?utm_source=topslot&utm_medium=sms&utm_campaign=mothers-day"


@pytest.fixture
async def world(engine: AsyncEngine, tmp_path: Path) -> World:
    return await make_world(engine, tmp_path)


def short(world: World, who: str = "newyork", key: str | None = None, ring: Keyring | None = None) -> str:
    return sign_short(ring or world.keyring, world.delivery[who], key or world.landing_key)


async def get(session: aiohttp.ClientSession, url: str, method: str = "GET", **kw: object) -> tuple[int, dict, bytes]:
    async with session.request(method, url, allow_redirects=False, **kw) as r:  # type: ignore[arg-type]
        return r.status, dict(r.headers), await r.read()


async def test_a_short_link_is_a_click_redirected_like_c(world: World) -> None:
    code = short(world)
    assert len(code) == SHORT_CODE_CHARS
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        status, headers, _ = await get(s, f"{server.url}/s/{code}", headers={"User-Agent": "Mozilla/5.0 (iPhone)"})
        assert status == 302
        location = headers["Location"]
        assert location.startswith(f"https://shop.example.com/offer?x=1&{CLICK_ID_PARAM}=") and location.endswith(
            "#top"
        )
        tsid = location.split(f"{CLICK_ID_PARAM}=", 1)[1].removesuffix("#top")
        claims = verify(tsid, world.keyring, "click")  # what POST /conversions verifies
        assert (claims.delivery_id, claims.link_key) == (world.delivery["newyork"], world.landing_key)
        # the same click as /c/ with that token: same destination, same event
        _, c_headers, _ = await get(s, f"{server.url}/c/{tsid}", headers={"User-Agent": "Mozilla/5.0 (iPhone)"})
        assert c_headers["Location"] == location
        for name, value in pages.SECURITY_HEADERS.items():
            assert headers[name] == value
        assert "no-store" in headers["Cache-Control"] and "Set-Cookie" not in headers
        await server.buffer.flush()
    clicks = [e for e in await stored_events(world.engine) if e["kind"] == "click"]
    assert len(clicks) == 2
    for event in clicks:
        assert event["delivery_id"] == world.delivery["newyork"] and event["campaign_id"] == world.campaign.id
        assert event["link_id"] == clicks[0]["link_id"] is not None
    assert (clicks[0]["label"], clicks[0]["reason"]) == ("human", "no_machine_signal")


async def test_short_links_are_labelled_like_clicks(world: World) -> None:
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        status, _, _ = await get(s, f"{server.url}/s/{short(world)}", method="HEAD")
        assert status == 302
        preview_bot = {"User-Agent": "facebookexternalhit/1.1 Facebot Twitterbot/1.0"}  # iMessage link previews
        status, _, _ = await get(s, f"{server.url}/s/{short(world, 'newyork2')}", headers=preview_bot)
        assert status == 302
        await server.buffer.flush()
    events = {e["delivery_id"]: e for e in await stored_events(world.engine)}
    head = events[world.delivery["newyork"]]
    assert (head["method"], head["label"], head["reason"]) == ("HEAD", "scanner", "head_request")
    assert events[world.delivery["newyork2"]]["label"] == "scanner"


def alterations(code: str) -> list[str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return [code[:i] + alphabet[alphabet.index(code[i]) ^ 1] + code[i + 1 :] for i in range(len(code))]


async def test_forged_altered_and_unknown_codes_get_the_static_404(world: World) -> None:
    code = short(world)
    stranger = Keyring({"k9": b"not-our-key-0123456789"})
    bad = [
        *alterations(code),  # every character altered
        code[:-1],
        code + "A",
        code[::-1],
        placeholder_code(),  # what preview shows
        sign_short(stranger, world.delivery["newyork"], world.landing_key),  # another keyring's key
        sign_short(keyring("k1", active="k1"), world.delivery["newyork"], world.landing_key, key_id="k1")[:-2] + "AA",
        world.click_token(),  # a /c token on /s
        sign_short(world.keyring, 999_999, world.landing_key),  # no such delivery
        sign_short(world.keyring, world.delivery["newyork"], "0123456789abcdef"),  # no such link
        "",
    ]
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        _, _, c_404 = await get(s, f"{server.url}/c/not-a-token")
        for item in bad:
            for suffix in ("", ".gif", "/x"):
                status, headers, body = await get(s, f"{server.url}/s/{item}{suffix}")
                assert status == 404 and "Location" not in headers, (item, suffix)
                assert body == c_404 == pages.page_for(404)
        assert server.rejected >= len(alterations(code))
        status, _, _ = await get(s, f"{server.url}/s/{code}")  # the real one still works
        assert status == 302
        status, headers, _ = await get(s, f"{server.url}/s/{code}", method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        await server.buffer.flush()
    assert len([e for e in await stored_events(world.engine) if e["kind"] == "click"]) == 1


async def test_a_code_signed_by_a_retired_key_works_while_the_key_is_configured(world: World) -> None:
    old = short(world, ring=keyring("k1", active="k1"))
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        assert (await get(s, f"{server.url}/s/{old}"))[0] == 302  # k1 still in the server's keyring
        assert (await get(s, f"{server.url}/t/s/{short(world)}"))[0] == 404  # no base path configured
    world.keyring = keyring("k2")
    async with running_server(world, base_path="/t") as server, aiohttp.ClientSession() as s:
        assert (await get(s, f"{server.url}/s/{old}"))[0] == 404  # k1 removed
        assert (await get(s, f"{server.url}/t/s/{short(world)}"))[0] == 302


async def test_a_short_link_from_the_link_factory_lands_on_the_utm_page_and_is_attributed(
    world: World, engine: AsyncEngine
) -> None:
    """What an SMS carries (``DeliveryLinks.track`` on the sms channel), clicked, then an order
    carrying the redirect's ``tsid`` posted to ``/conversions``: credited to that delivery by click."""
    campaign: Campaign = world.campaign
    links = CampaignLinks(campaign, world.keyring, "https://t.shop.example.com")
    delivery = world.delivery["newyork"]
    sms_link = links.for_delivery(delivery, "sms").track(SMS_LANDING)
    base, _, code = sms_link.rpartition("/")
    assert base == "https://t.shop.example.com/s" and len(code) == SHORT_CODE_CHARS
    await save_links(engine, campaign.id, links.book.pending())  # what the dispatcher does before sending

    clock = FakeClock(SENT_AT + timedelta(hours=1))
    async with running_server(world, clock) as server, aiohttp.ClientSession() as s:
        server.add_route(
            "/conversions",
            conversions_handler(engine, WEBHOOK_KEY, world.keyring, clock, lambda: {campaign.id: campaign}),
        )
        status, headers, _ = await get(s, f"{server.url}/s/{code}", headers={"User-Agent": "Mozilla/5.0 (Android)"})
        assert status == 302
        location = headers["Location"]
        destination, _, tsid = location.partition(f"&{CLICK_ID_PARAM}=")
        assert destination == normalise_url(SMS_LANDING)  # the landing page with its UTM parameters
        await server.buffer.flush()

        clock.advance(timedelta(hours=2))
        order = {"order_id": "SMS-1", "occurred_at": clock.now().isoformat(), "revenue": "42.00", "tsid": tsid}
        body = json.dumps({"conversions": [order]}).encode()
        headers = signed_headers(WEBHOOK_KEY, body, clock.now()) | {"Content-Type": "application/json"}
        async with s.post(f"{server.url}/conversions", data=body, headers=headers) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["recorded"] == 1

    [click] = [e for e in await stored_events(engine) if e["kind"] == "click"]
    assert click["delivery_id"] == delivery and click["label"] == "human"
    async with engine.connect() as conn:
        row = (await conn.execute(select(conversions))).mappings().one()
    assert (row["attributed_by"], row["campaign_id"], row["delivery_id"]) == ("click", campaign.id, delivery)
    assert row["click_id"] == tsid and verify(tsid, world.keyring, "click").link_key == link_key(
        normalise_url(SMS_LANDING)
    )
