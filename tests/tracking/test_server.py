"""The tracking server over real TCP on 127.0.0.1, against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
from scheduling.ledger_fixtures import NOW
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.clock import FakeClock
from topslot.links.keys import Keyring
from topslot.links.short import sign_short
from topslot.links.tokens import TEST_DELIVERY_ID, sign
from topslot.store import ledger
from topslot.store.schema import consents, deliveries, suppressions
from topslot.tracking import pages
from topslot.tracking.redirect import CLICK_ID_PARAM
from tracking.fixtures import (
    NY_DUE,
    SENT_AT,
    World,
    keyring,
    make_world,
    process_alive,
    running_server,
    stored_events,
)

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
async def world(engine: AsyncEngine, tmp_path: Path) -> World:
    return await make_world(engine, tmp_path)


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: object
) -> tuple[int, dict[str, str], bytes, list[str]]:
    async with session.request(method, url, allow_redirects=False, **kwargs) as r:  # type: ignore[arg-type]
        cookies = r.headers.getall("Set-Cookie", [])
        return r.status, dict(r.headers), await r.read(), cookies


def assert_secure(headers: dict[str, str], cookies: list[str]) -> None:
    for name, value in pages.SECURITY_HEADERS.items():
        assert headers.get(name) == value, name
    assert "no-store" in headers["Cache-Control"]
    assert cookies == []


async def test_pixel_answers_a_gif_and_records_an_open(world: World) -> None:
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        status, headers, body, cookies = await fetch(
            s,
            "GET",
            f"{server.url}/o/{world.open_token()}.gif",
            headers={"User-Agent": "Mozilla/5.0 (Macintosh) Thunderbird/115"},
        )
        assert status == 200 and headers["Content-Type"] == "image/gif" and body == pages.PIXEL_GIF
        assert headers["Pragma"] == "no-cache" and headers["Expires"] == "0"
        assert_secure(headers, cookies)
        await server.buffer.flush()
    [event] = await stored_events(world.engine)
    assert event["kind"] == "open" and event["delivery_id"] == world.delivery["newyork"]
    assert event["campaign_id"] == world.campaign.id and event["method"] == "GET" and event["ip"] == "127.0.0.1"
    assert (event["label"], event["reason"]) == ("human", "no_machine_signal")


async def test_click_redirects_to_the_stored_destination_with_tsid(world: World) -> None:
    token = world.click_token()
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        status, headers, body, cookies = await fetch(
            s, "GET", f"{server.url}/c/{token}", headers={"User-Agent": "Firefox/128"}
        )
        assert status == 302
        assert headers["Location"] == f"https://shop.example.com/offer?x=1&{CLICK_ID_PARAM}={token}#top"
        assert_secure(headers, cookies)
        faq = world.click_token("newyork", world.faq_key)
        status, headers, _, _ = await fetch(s, "GET", f"{server.url}/c/{faq}")
        assert headers["Location"] == f"https://shop.example.com/faq?{CLICK_ID_PARAM}={faq}"
        await server.buffer.flush()
    clicks = [e for e in await stored_events(world.engine) if e["kind"] == "click"]
    assert len(clicks) == 2 and all(e["link_id"] and e["campaign_id"] == world.campaign.id for e in clicks)


async def test_served_under_the_base_path_too(world: World) -> None:
    async with running_server(world, base_path="/t") as server, aiohttp.ClientSession() as s:
        for url in (f"{server.url}/t/c/{world.click_token()}", f"{server.url}/c/{world.click_token()}"):
            status, headers, _, _ = await fetch(s, "GET", url)
            assert status == 302 and headers["Location"].startswith("https://shop.example.com/offer")
        status, _, _, _ = await fetch(s, "GET", f"{server.url}/tx/c/{world.click_token()}")
        assert status == 404


def bit_flips(token: str) -> list[str]:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    out = []
    for i in range(len(token)):
        c = alphabet[(alphabet.index(token[i]) ^ 1)]
        out.append(token[:i] + c + token[i + 1 :])
    return out


async def test_bad_tokens_get_the_static_404_never_a_redirect(world: World, engine: AsyncEngine) -> None:
    click = world.click_token()
    retired = sign(keyring("k1", active="k1"), "click", world.delivery["newyork"], world.landing_key)
    other_key = "0123456789abcdef"  # signed, but no such link in the campaign
    unknown_link = sign(world.keyring, "click", world.delivery["newyork"], other_key)
    no_delivery = sign(world.keyring, "click", 999_999, world.landing_key)
    bad = [
        *bit_flips(click),
        world.open_token(),  # swapped: an open token on /c/
        world.unsubscribe_token(),
        click[::-1],
        click + "A",
        click[:-1],
        unknown_link,
        no_delivery,
        "",
        "%2e%2e",
        "x" * 81,
    ]
    # the server knows only k2: a token signed with the retired (removed) key k1 must fail
    world.keyring = keyring("k2")
    bad.append(retired)
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        for token in bad:
            status, headers, body, cookies = await fetch(s, "GET", f"{server.url}/c/{token}")
            assert status == 404, token
            assert "Location" not in headers and body == pages.NOT_FOUND
            assert_secure(headers, cookies)
        for path in (f"/o/{click}.gif", f"/u/{click}", f"/o/{world.open_token()}", f"/c/{world.open_token()}.gif"):
            status, headers, body, _ = await fetch(s, "GET", server.url + path)
            assert status == 404 and body == pages.NOT_FOUND, path
        await server.buffer.flush()
        assert server.rejected >= len(bit_flips(click))
    assert await stored_events(engine) == []


async def test_url_tricks_never_choose_the_redirect(world: World) -> None:
    token = world.click_token()
    evil = "https://evil.example/phish"
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        tries = [
            f"{server.url}/c/{token}?url={evil}",
            f"{server.url}/c/{token}?next=//evil.example&redirect={evil}",
            f"{server.url}/c/{token}?{CLICK_ID_PARAM}=forged",
        ]
        for url in tries:
            status, headers, _, _ = await fetch(s, "GET", url)
            assert status == 302
            assert headers["Location"] == f"https://shop.example.com/offer?x=1&{CLICK_ID_PARAM}={token}#top"
        for url in (
            f"{server.url}/c/forged?url={evil}",
            f"{server.url}/c/{evil}",
            f"{server.url}/c/?url={evil}",
            f"{server.url}/redirect?url={evil}",
            f"{server.url}//evil.example/c/x",
        ):
            status, headers, body, _ = await fetch(s, "GET", url)
            assert status == 404 and "Location" not in headers and b"evil" not in body


async def consent_rows(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        return [
            tuple(r) for r in await conn.execute(select(consents).order_by(consents.c.contact_id, consents.c.channel))
        ]


async def test_get_unsubscribe_shows_a_form_and_changes_nothing(world: World, engine: AsyncEngine) -> None:
    before = await consent_rows(engine)
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        for method in ("GET", "HEAD", "GET"):
            status, headers, body, cookies = await fetch(s, method, f"{server.url}/u/{world.unsubscribe_token()}")
            assert status == 200
            assert_secure(headers, cookies)
        assert body == pages.CONFIRM_UNSUBSCRIBE and b'method="post"' in body
        assert world.unsubscribe_token().encode() not in body
    async with engine.connect() as conn:
        assert (await conn.execute(select(suppressions))).all() == []
    assert await consent_rows(engine) == before
    assert await stored_events(engine) == []
    claimed = await ledger.claim_bucket(
        engine, world.campaign.id, "email", NY_DUE, owner="n", lease=timedelta(minutes=5), now=NOW
    )
    assert claimed == []  # both NY rows were already "sent" in the fixture; nothing else changed


async def test_one_click_post_unsubscribes_and_the_next_claim_skips_the_contact(
    world: World, engine: AsyncEngine
) -> None:
    # both New York rows are still to be sent: the unsubscribe must stop the first one
    async with engine.begin() as conn:
        await conn.execute(update(deliveries).values(state="planned", provider_id=None))
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        url = f"{server.url}/u/{world.unsubscribe_token()}"
        status, headers, body, cookies = await fetch(s, "POST", url, data=ONE_CLICK)  # RFC 8058 body
        assert status == 200 and body == pages.UNSUBSCRIBED and "Location" not in headers
        assert_secure(headers, cookies)
        # idempotent: again, and as multipart (RFC 8058 allows it), and as the page's form would post
        form = aiohttp.FormData()
        form.add_field("List-Unsubscribe", "One-Click")
        form.add_field("pad", b"x", filename="f.txt")
        assert (await fetch(s, "POST", url, data=form))[0] == 200
        assert (await fetch(s, "POST", url, data=ONE_CLICK))[0] == 200
    async with engine.connect() as conn:
        rows = (await conn.execute(select(suppressions))).all()
        consent = (await conn.execute(select(consents).where(consents.c.contact_id == world.people["newyork"]))).one()
    assert [(r.channel, r.address, r.reason) for r in rows] == [("email", "ny@example.com", "unsubscribe")]
    assert consent.granted is False
    unsubscribes = [e for e in await stored_events(engine) if e["kind"] == "unsubscribe"]
    assert len(unsubscribes) == 1 and unsubscribes[0]["method"] == "POST"
    # the very next claim: skip_ineligible first, as the scheduler does, then claim
    skipped = await ledger.skip_ineligible_in_bucket(engine, world.campaign, "email", NY_DUE, NOW)
    assert skipped == {"suppressed": 1}
    claimed = await ledger.claim_bucket(
        engine, world.campaign.id, "email", NY_DUE, owner="n", lease=timedelta(minutes=5), now=NOW
    )
    assert [c.contact_id for c in claimed] == [world.people["newyork2"]]


async def test_post_needs_the_one_click_body_and_a_valid_token(world: World, engine: AsyncEngine) -> None:
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        url = f"{server.url}/u/{world.unsubscribe_token()}"
        assert (await fetch(s, "POST", url))[0] == 400
        assert (await fetch(s, "POST", url, data={"List-Unsubscribe": "no"}))[0] == 400
        assert (await fetch(s, "POST", url, data="List-Unsubscribe=One-Click", headers={"Content-Type": "text/plain"}))[
            0
        ] == 400
        assert (await fetch(s, "POST", url, data={"x": "y" * 10_000}))[0] == 413
        assert (await fetch(s, "POST", f"{server.url}/u/{world.click_token()}", data=ONE_CLICK))[0] == 404
        assert (await fetch(s, "DELETE", url))[0] == 405
        assert (await fetch(s, "POST", f"{server.url}/c/{world.click_token()}"))[0] == 405
    async with engine.connect() as conn:
        assert (await conn.execute(select(suppressions))).all() == []


async def test_hostile_headers_are_stored_cut_and_never_reflected(world: World, engine: AsyncEngine) -> None:
    token = world.open_token()
    script = "<script>alert(1)</script>"
    async with running_server(world) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)

        async def raw(request: bytes) -> bytes:
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")).split(b":")[1]
            )
            return head + await reader.readexactly(length)

        huge = b"Mozilla/5.0 " + b"A" * 100_000
        answer = await raw(
            b"GET /o/"
            + token.encode()
            + b".gif HTTP/1.1\r\nHost: t\r\nUser-Agent: "
            + huge
            + b"\r\nReferer: https://x.example/"
            + script.encode()
            + b"\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200") and b"AAAA" not in answer and b"script" not in answer
        answer = await raw(
            b"GET /c/"
            + world.click_token().encode()
            + b" HTTP/1.1\r\nHost: t\r\nUser-Agent: caf\xc3\xa9 \xff\xfe bot\r\n"
            b"Referer: " + script.encode() + b"\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 302") and b"script" not in answer
        writer.close()
        # a bare CR inside a header and an over-long header: aiohttp refuses them; the page is ours
        for bad in (
            b"GET /o/"
            + token.encode()
            + b".gif HTTP/1.1\r\nHost: t\r\nUser-Agent: a\rSet-Cookie: x="
            + script.encode()
            + b"\r\n\r\n",
            b"GET /o/" + token.encode() + b".gif HTTP/1.1\r\nHost: t\r\nUser-Agent: " + b"B" * 200_000 + b"\r\n\r\n",
            b"GET /" + script.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            b"GET /o/"
            + token.encode()
            + b".gif HTTP/1.1\r\nHost: t\r\nUser-Agent: a\x01"
            + script.encode()
            + b"\r\n\r\n",
            b"G\x00T /o/x HTTP/1.1\r\nHost: " + script.encode() + b"\r\n\r\n",
        ):
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(bad)
            await w.drain()
            answer = await asyncio.wait_for(r.read(), 5)
            w.close()
            assert answer.split(b" ")[1] in (b"400", b"404", b"431"), answer[:80]
            assert b"script" not in answer and b"BBBB" not in answer and b"Set-Cookie" not in answer
            assert b"X-Content-Type-Options: nosniff" in answer
        await server.buffer.flush()
    opens = [e for e in await stored_events(engine) if e["kind"] == "open"]
    clicks = [e for e in await stored_events(engine) if e["kind"] == "click"]
    assert len(opens) == 1 and len(clicks) == 1
    assert len(opens[0]["user_agent"]) == 500 and opens[0]["user_agent"].startswith("Mozilla/5.0 AAA")
    assert opens[0]["referer"] == "https://x.example/" + script  # stored as data
    agent = clicks[0]["user_agent"]
    assert agent.startswith("caf") and agent.endswith(" bot") and agent.encode("utf-8")  # storable text


async def test_forwarded_for_only_from_trusted_proxies(world: World, engine: AsyncEngine) -> None:
    from topslot.tracking.hits import parse_networks

    async with aiohttp.ClientSession() as s:
        async with running_server(world) as server:
            await fetch(
                s, "GET", f"{server.url}/o/{world.open_token()}.gif", headers={"X-Forwarded-For": "203.0.113.9"}
            )
            await server.buffer.flush()
        async with running_server(world, trusted_proxies=parse_networks(["127.0.0.0/8"])) as server:
            await fetch(
                s,
                "GET",
                f"{server.url}/o/{world.open_token()}.gif",
                headers={"X-Forwarded-For": "203.0.113.9, 127.0.0.5"},
            )
            await server.buffer.flush()
    assert [e["ip"] for e in await stored_events(engine)] == ["127.0.0.1", "203.0.113.9"]


async def test_labels_and_upgrade_through_the_server(world: World, engine: AsyncEngine) -> None:
    clock = FakeClock(SENT_AT + timedelta(seconds=2))
    async with running_server(world, clock=clock) as server, aiohttp.ClientSession() as s:
        mpp = {"User-Agent": "Mozilla/5.0"}
        await fetch(s, "GET", f"{server.url}/o/{world.open_token()}.gif", headers=mpp)  # Apple MPP prefetch
        await fetch(s, "HEAD", f"{server.url}/c/{world.click_token()}", headers={"User-Agent": "Firefox/128"})
        await fetch(s, "GET", f"{server.url}/c/{world.click_token('newyork2')}", headers={"User-Agent": "Firefox/128"})
        await server.buffer.flush()
        clock.advance(timedelta(minutes=30))  # the reader, later
        await fetch(s, "GET", f"{server.url}/c/{world.click_token()}", headers={"User-Agent": "Firefox/128"})
        await server.buffer.flush()
    got = [(e["kind"], e["method"], e["label"], e["reason"]) for e in await stored_events(engine)]
    assert got == [
        ("open", "GET", "human", "upgraded_by_click"),
        ("click", "HEAD", "scanner", "head_request"),
        ("click", "GET", "scanner", "soon_after_delivery"),
        ("click", "GET", "human", "no_machine_signal"),
    ]


async def test_full_buffer_counts_drops_and_healthz_shows_them(world: World, engine: AsyncEngine) -> None:
    async with running_server(world, buffer_capacity=3, flush_interval=60) as server, aiohttp.ClientSession() as s:
        for _ in range(10):
            status, _, body, _ = await fetch(s, "GET", f"{server.url}/o/{world.open_token()}.gif")
            assert status == 200 and body == pages.PIXEL_GIF  # the response never depends on the buffer
        status, headers, body, _ = await fetch(s, "GET", f"{server.url}/healthz")
        health = json.loads(body)
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert health["events"]["dropped"] == 7 and health["events"]["pending"] == 3
        assert (await fetch(s, "POST", f"{server.url}/healthz"))[0] == 405
    assert len(await stored_events(engine)) == 3  # close() flushed what was accepted


async def test_healthz_says_degraded_while_the_database_refuses_work(world: World, engine: AsyncEngine) -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    async with running_server(world) as server, aiohttp.ClientSession() as s:
        assert json.loads((await fetch(s, "GET", f"{server.url}/healthz"))[2])["status"] == "ok"
        full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
        server.health.database_failed("bucket", full)  # what the scheduler does on a refused step
        status, _, body, _ = await fetch(s, "GET", f"{server.url}/healthz")
        health = json.loads(body)
        server.health.database_ok("bucket")
        after = json.loads((await fetch(s, "GET", f"{server.url}/healthz"))[2])
    assert status == 200 and health["status"] == "degraded"
    assert health["database"]["where"] == "bucket"
    assert health["database"]["error"] == "OperationalError: database or disk is full"
    assert "events" in health and after["status"] == "ok"


async def test_close_flushes_pending_events(world: World, engine: AsyncEngine) -> None:
    async with running_server(world, flush_interval=60) as server, aiohttp.ClientSession() as s:
        for _ in range(25):
            await fetch(s, "GET", f"{server.url}/o/{world.open_token()}.gif")
        assert len(server.buffer) == 25
    assert len(await stored_events(engine)) == 25
    assert server.stats.written == 25 and server.stats.lost == 0


async def test_port_in_use_is_a_clear_error(world: World) -> None:
    from topslot.tracking.server import TrackingServerError

    async with running_server(world) as first:
        with pytest.raises(TrackingServerError, match="cannot listen"):
            async with running_server(world, port=first.port):
                pass


async def test_extra_routes_for_other_endpoints(world: World) -> None:
    from aiohttp import web

    async def conversions(request: object) -> web.StreamResponse:
        return web.Response(status=202, body=b"ok", headers=pages.SECURITY_HEADERS)

    async with running_server(world) as server, aiohttp.ClientSession() as s:
        server.add_route("/conversions", conversions)
        assert (await fetch(s, "POST", f"{server.url}/conversions"))[:1] == (202,)
        status, headers, _, _ = await fetch(s, "GET", f"{server.url}/conversions")
        assert status == 405 and headers["Allow"] == "POST"
        with pytest.raises(ValueError):
            server.add_route("/c/x", conversions)


async def test_a_proofs_links_redirect_and_answer_but_record_nothing(world: World, engine: AsyncEngine) -> None:
    """``topslot send-test`` signs its links for delivery id 0, which no ledger row has."""
    click = sign(world.keyring, "click", TEST_DELIVERY_ID, world.landing_key)
    short = sign_short(world.keyring, TEST_DELIVERY_ID, world.landing_key)
    pixel = sign(world.keyring, "open", TEST_DELIVERY_ID)
    leave = sign(world.keyring, "unsubscribe", TEST_DELIVERY_ID)
    before = await consent_rows(engine)
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        for url, token in ((f"{server.url}/c/{click}", click), (f"{server.url}/s/{short}", None)):
            status, headers, _, _ = await fetch(s, "GET", url, headers={"User-Agent": "Firefox/128"})
            assert status == 302 and headers["Location"].startswith("https://shop.example.com/offer?x=1&")
            assert token is None or f"{CLICK_ID_PARAM}={token}" in headers["Location"]
        unknown = sign(world.keyring, "click", TEST_DELIVERY_ID, "0123456789abcdef")
        assert (await fetch(s, "GET", f"{server.url}/c/{unknown}"))[0] == 404  # a link nobody stored
        status, _, body, _ = await fetch(s, "GET", f"{server.url}/o/{pixel}.gif")
        assert status == 200 and body == pages.PIXEL_GIF
        assert (await fetch(s, "POST", f"{server.url}/u/{leave}", data=ONE_CLICK))[0] == 200
        await server.buffer.flush()
        assert server.stats.accepted == 0
    assert await stored_events(engine) == []
    assert await consent_rows(engine) == before
    async with engine.connect() as conn:
        assert (await conn.execute(select(suppressions))).all() == []


async def test_batches_are_written_by_the_writer_process_with_its_own_engine(world: World, engine: AsyncEngine) -> None:
    """The event loop only hands batches over: the writer process has its own engine, opened like
    the server's (same database, same PostgreSQL schema), and ends with the server."""
    async with running_server(world, flush_interval=60) as server, aiohttp.ClientSession() as s:
        assert server.writer.separate
        for _ in range(3):
            await fetch(s, "GET", f"{server.url}/o/{world.open_token()}.gif")
        await server.buffer.flush()
        pid = server.writer.pid
        assert pid is not None and pid != os.getpid() and process_alive(pid)
        assert len(await stored_events(engine)) == 3  # the test's engine sees the writer's commits
    assert server.writer.pid is None and not process_alive(pid)
    assert server.stats.written == 3 and server.stats.lost == 0 and server.writer.started == 1


async def test_a_verified_path_is_remembered_a_forged_one_never(world: World) -> None:
    async with running_server(world) as server, aiohttp.ClientSession() as s:
        path = f"/o/{world.open_token()}.gif"
        forged = path[:-6] + ("A" if path[-6] != "A" else "B") + ".gif"
        for _ in range(2):
            assert (await fetch(s, "GET", server.url + path))[0] == 200
            assert (await fetch(s, "GET", server.url + forged))[0] == 404
        assert server._verified.hits == 1 and len(server._verified) == 1
        assert server.rejected == 2
        server.keyring = Keyring({"other": b"k" * 32}, active="other")  # nothing verified before counts
        assert (await fetch(s, "GET", server.url + path))[0] == 404
