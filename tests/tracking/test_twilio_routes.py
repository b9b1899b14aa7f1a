"""``POST /twilio/status`` and ``POST /twilio/inbound`` over real HTTP, on a real tracking server, with
requests signed the way Twilio signs them (``RequestValidator.compute_signature`` over the public URL)."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from store.sending_rows import add_campaign, add_contact, add_leased_row
from store.test_receipts import (
    NOW,
    OWNER,
    PHONES,
    ledger,
    mark_sent,
    record_sent,
    sid,
    sms_consents,
    sms_world,
    suppressed,
)
from twilio.request_validator import RequestValidator

from topslot.clock import FakeClock
from topslot.delivery import Decision
from topslot.delivery import DeliveryState as S
from topslot.logs import configure_logging, pii_hash
from topslot.runtime.service import Daemon
from topslot.settings import Compliance, Settings, TwilioSettings
from topslot.store import tracking_events as te
from topslot.store.dispatch import Outcome, record_outcomes
from topslot.store.receipts import pending_receipts
from topslot.store.schema import consents
from topslot.tracking import twilio_routes as tr
from topslot.tracking.server import TrackingServer
from tracking.fixtures import serving

TOKEN = "twilio-auth-token-0123456789abcdef"
PUBLIC = "https://t.example.com/t"  # tracking_base_url: what Twilio calls (a proxy in front)
ACCOUNT = "AC" + "0" * 32
OUR_NUMBER = "+15005550006"
HELP_TEXT = "{sender}: offers & coupons <3. Reply STOP to opt out."


def twilio_settings(tmp_path: Path, *, configured: bool = True, **extra: Any) -> Settings:
    twilio = (
        TwilioSettings(account_sid=ACCOUNT, auth_token=TOKEN, from_number=OUR_NUMBER, help_text=HELP_TEXT)
        if configured
        else TwilioSettings()
    )
    return Settings(
        config_dir=tmp_path,
        var_dir=tmp_path / "var",
        tracking_base_url=PUBLIC,
        twilio=twilio,
        compliance=Compliance(sender_identity="Acme & Sons"),
        **extra,
    )


@asynccontextmanager
async def twilio_server(engine: AsyncEngine, settings: Settings) -> AsyncIterator[TrackingServer]:
    clock = FakeClock(NOW + timedelta(seconds=30))
    async with serving(engine, clock, tr.twilio_handlers(engine, settings, clock), base_path="/t") as server:
        yield server


@pytest.fixture
async def server(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[TrackingServer]:
    async with twilio_server(engine, twilio_settings(tmp_path)) as running:
        yield running


def signature(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


async def post(
    server: TrackingServer,
    path: str,
    params: dict[str, str],
    *,
    sign: str | None = "public",
    via: str = "/t",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """POST the form to ``{server}{via}{path}``; signed for ``{PUBLIC}{path}`` (``sign="public"``), for
    another URL (``sign=<url>``), or not at all (``None``)."""
    extra = dict(headers or {})
    if sign is not None:
        extra[tr.SIGNATURE_HEADER] = signature(f"{PUBLIC}{path}" if sign == "public" else sign, params)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}{via}{path}", data=params, headers=extra) as r:
            return r.status, dict(r.headers), await r.read()


def status_form(n: int, status: str, code: str | None = None, to: str = PHONES["alice"]) -> dict[str, str]:
    form = {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "From": OUR_NUMBER,
        "To": to,
        "MessageSid": sid(n),
        "SmsSid": sid(n),
        "MessageStatus": status,
        "SmsStatus": status,
    }
    if code is not None:
        form["ErrorCode"] = code
    return form


def sms_form(body: str, sender: str = PHONES["bob"], n: int = 900) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT,
        "MessageSid": sid(n),
        "SmsSid": sid(n),
        "From": sender,
        "To": OUR_NUMBER,
        "Body": body,
        "NumMedia": "0",
        "FromCountry": "US",
    }


EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'


# ---------------------------------------------------------------- status callbacks


@pytest.mark.parametrize(
    ("status", "code", "state", "error"),
    [
        ("delivered", None, S.DELIVERED, None),
        ("undelivered", "30003", S.BOUNCED, "30003 unreachable destination handset"),
        ("failed", "30008", S.BOUNCED, "30008 unknown error"),
        ("undelivered", "30007", S.BOUNCED, "30007 message filtered by the carrier"),
        ("failed", None, S.BOUNCED, "failed without an error code"),
        ("undelivered", "39999", S.BOUNCED, "39999 twilio error"),
    ],
)
async def test_signed_final_status_updates_the_ledger(
    engine: AsyncEngine, server: TrackingServer, status: str, code: str | None, state: S, error: str | None
) -> None:
    world = await sms_world(engine)
    d = world["alice"][1]
    await mark_sent(engine, d, sid(1))
    got, headers, body = await post(server, tr.STATUS_PATH, status_form(1, status, code))
    assert (got, body) == (204, b"")
    assert headers["X-Content-Type-Options"] == "nosniff"
    row = await ledger(engine, d)
    assert (row.state, row.last_error) == (state, error)
    assert await suppressed(engine) == []  # none of these codes says the number is dead


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("30005", "sms_undeliverable"),
        ("30006", "sms_undeliverable"),
        ("30004", "sms_undeliverable"),
        ("21610", "sms_stop"),
    ],
)
async def test_a_dead_or_opted_out_number_is_suppressed_for_sms(
    engine: AsyncEngine, server: TrackingServer, code: str, reason: str
) -> None:
    world = await sms_world(engine)
    d = world["carol"][1]
    await mark_sent(engine, d, sid(2))
    got, _, _ = await post(server, tr.STATUS_PATH, status_form(2, "undelivered", code, to=PHONES["carol"]))
    assert got == 204
    assert (await ledger(engine, d)).state == S.BOUNCED
    assert await suppressed(engine) == [("sms", PHONES["carol"], reason, f"twilio_status:{sid(2)}:{code}")]


async def test_repeated_and_contradicting_callbacks_keep_the_first_final_one(
    engine: AsyncEngine, server: TrackingServer
) -> None:
    world = await sms_world(engine)
    d = world["alice"][1]
    await mark_sent(engine, d, sid(3))
    for form in (status_form(3, "sent"), status_form(3, "delivered"), status_form(3, "delivered")):
        assert (await post(server, tr.STATUS_PATH, form))[0] == 204
    first = await ledger(engine, d)
    assert (await post(server, tr.STATUS_PATH, status_form(3, "undelivered", "30005")))[0] == 204
    row = await ledger(engine, d)
    assert (row.state, row.updated_at, row.last_error) == (S.DELIVERED, first.updated_at, None)
    assert await suppressed(engine) == []


@pytest.mark.parametrize("status", ["queued", "sending", "sent", "accepted", "scheduled", "canceled", "whatever"])
async def test_intermediate_statuses_change_nothing(engine: AsyncEngine, server: TrackingServer, status: str) -> None:
    world = await sms_world(engine)
    d = world["alice"][1]
    await mark_sent(engine, d, sid(4))
    assert (await post(server, tr.STATUS_PATH, status_form(4, status, "30005")))[0] == 204
    assert (await ledger(engine, d)).state == S.SENT
    assert await pending_receipts(engine) == [] and await suppressed(engine) == []


async def test_a_callback_before_the_row_is_recorded_is_applied_when_it_is(
    engine: AsyncEngine, server: TrackingServer
) -> None:
    world = await sms_world(engine)  # rows still `sending`: the sends have not returned yet
    (ca, da), (cc, dc) = world["alice"], world["carol"]
    assert (await post(server, tr.STATUS_PATH, status_form(5, "delivered")))[0] == 204
    assert (await post(server, tr.STATUS_PATH, status_form(6, "undelivered", "30005", to=PHONES["carol"])))[0] == 204
    assert len(await pending_receipts(engine)) == 2
    await record_sent(engine, {da: (ca, sid(5)), dc: (cc, sid(6))}, NOW + timedelta(seconds=40))
    assert (await ledger(engine, da)).state == S.DELIVERED
    assert (await ledger(engine, dc)).state == S.BOUNCED
    assert [(a, r) for _, a, r, _ in await suppressed(engine)] == [(PHONES["carol"], "sms_undeliverable")]
    assert await pending_receipts(engine) == []


@pytest.mark.parametrize(
    "sign",
    [
        None,  # no signature
        "garbage",  # a wrong one
        f"{PUBLIC}{tr.INBOUND_PATH}",  # signed for the other route
        "http://t.example.com/t/twilio/status",  # for http, not the public https URL
        "https://t.example.com/twilio/status",  # without the base path
        "https://evil.example.com/t/twilio/status",  # another host
    ],
)
async def test_unsigned_or_wrongly_signed_callbacks_are_refused_and_change_nothing(
    engine: AsyncEngine, server: TrackingServer, sign: str | None
) -> None:
    world = await sms_world(engine)
    d = world["carol"][1]
    await mark_sent(engine, d, sid(7))
    form = status_form(7, "undelivered", "30005", to=PHONES["carol"])
    headers = {tr.SIGNATURE_HEADER: "bm90IGEgc2lnbmF0dXJl"} if sign == "garbage" else None
    got, _, body = await post(server, tr.STATUS_PATH, form, sign=None if sign == "garbage" else sign, headers=headers)
    assert (got, body) == (403, b"forbidden\n")
    assert (await ledger(engine, d)).state == S.SENT
    assert await suppressed(engine) == [] and await pending_receipts(engine) == []


async def test_a_field_changed_after_signing_is_refused(engine: AsyncEngine, server: TrackingServer) -> None:
    world = await sms_world(engine)
    d = world["alice"][1]
    await mark_sent(engine, d, sid(8))
    form = status_form(8, "delivered")
    headers = {tr.SIGNATURE_HEADER: signature(f"{PUBLIC}{tr.STATUS_PATH}", form)}
    async with aiohttp.ClientSession() as http:
        tampered = {**form, "MessageStatus": "undelivered", "ErrorCode": "30005"}
        async with http.post(f"{server.url}/t{tr.STATUS_PATH}", data=tampered, headers=headers) as r:
            assert r.status == 403
    assert (await ledger(engine, d)).state == S.SENT


async def test_signature_checks_the_public_url_however_the_proxy_forwards(
    engine: AsyncEngine, server: TrackingServer
) -> None:
    world = await sms_world(engine)
    await mark_sent(engine, world["alice"][1], sid(9))
    await mark_sent(engine, world["bob"][1], sid(10))
    await mark_sent(engine, world["carol"][1], sid(11))
    # the proxy strips the base path (the server sees /twilio/status): still the public URL is signed
    assert (await post(server, tr.STATUS_PATH, status_form(9, "delivered"), via=""))[0] == 204
    # Twilio's console URL written with the default port
    with_port = "https://t.example.com:443/t/twilio/status"
    assert (await post(server, tr.STATUS_PATH, status_form(10, "delivered"), sign=with_port))[0] == 204
    # a query string in the configured URL is part of what Twilio signs
    form = status_form(11, "delivered")
    headers = {tr.SIGNATURE_HEADER: signature(f"{PUBLIC}{tr.STATUS_PATH}?tenant=shop", form)}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}/t{tr.STATUS_PATH}?tenant=shop", data=form, headers=headers) as r:
            assert r.status == 204
    assert [(await ledger(engine, world[w][1])).state for w in ("alice", "bob", "carol")] == [S.DELIVERED] * 3


async def test_bodies_are_bounded_and_must_be_forms(engine: AsyncEngine, server: TrackingServer) -> None:
    await sms_world(engine)
    big = {**status_form(12, "delivered"), "Padding": "x" * (tr.MAX_BODY_BYTES + 1)}
    assert (await post(server, tr.STATUS_PATH, big))[0] == 413
    async with aiohttp.ClientSession() as http:
        body = json.dumps(status_form(12, "delivered"))
        headers = {"Content-Type": "application/json", tr.SIGNATURE_HEADER: "x"}
        async with http.post(f"{server.url}/t{tr.STATUS_PATH}", data=body, headers=headers) as r:
            assert r.status == 415
        async with http.get(f"{server.url}/t{tr.STATUS_PATH}") as r:
            assert r.status == 405
    signed_without_sid = {k: v for k, v in status_form(12, "delivered").items() if k not in ("MessageSid", "SmsSid")}
    assert (await post(server, tr.STATUS_PATH, signed_without_sid))[0] == 400
    assert await pending_receipts(engine) == []


async def test_without_twilio_configured_the_routes_are_not_there(engine: AsyncEngine, tmp_path: Path) -> None:
    await sms_world(engine)
    async with twilio_server(engine, twilio_settings(tmp_path, configured=False)) as running:
        for path, form in ((tr.STATUS_PATH, status_form(13, "delivered")), (tr.INBOUND_PATH, sms_form("STOP"))):
            assert (await post(running, path, form))[0] == 404
    assert await suppressed(engine) == [] and await pending_receipts(engine) == []


# ---------------------------------------------------------------- inbound SMS


@pytest.mark.parametrize(
    "body",
    [
        "STOP",
        "stop ",
        "  Stop!  ",
        "ＳＴＯＰ",  # full-width
        "ｓｔｏｐ。",
        "STOPALL",
        "unsubscribe",
        "Cancel",
        "END",
        "quit.",
        "退订",
        "【退订】",
        "TD",
        "td",
        "ＴＤ",
        "T",
        "t",
        "\u201cSTOP\u201d",
        "STOP \U0001f64f",
    ],
)
async def test_every_stop_keyword_suppresses_the_number_and_withdraws_consent(
    engine: AsyncEngine, server: TrackingServer, body: str
) -> None:
    world = await sms_world(engine)
    got, headers, answer = await post(server, tr.INBOUND_PATH, sms_form(body))
    assert (got, answer) == (200, EMPTY)
    assert headers["Content-Type"].startswith("text/xml")
    assert await suppressed(engine) == [("sms", PHONES["bob"], "sms_stop", f"twilio_inbound:{sid(900)}")]
    consent = await sms_consents(engine)
    assert consent[world["bob"][0]][0] is False and consent[world["bob2"][0]][0] is False  # both share the phone
    assert consent[world["alice"][0]] == (True, "crm")


async def test_stop_twice_is_idempotent(engine: AsyncEngine, server: TrackingServer) -> None:
    await sms_world(engine)
    for n in (900, 901):
        assert (await post(server, tr.INBOUND_PATH, sms_form("STOP", n=n)))[0] == 200
    assert await suppressed(engine) == [("sms", PHONES["bob"], "sms_stop", f"twilio_inbound:{sid(900)}")]


@pytest.mark.parametrize("word", ["START", "unstop", "Yes", "ＳＴＡＲＴ"])
async def test_start_lifts_only_the_stop_suppression_and_grants_no_consent(
    engine: AsyncEngine, server: TrackingServer, word: str
) -> None:
    world = await sms_world(engine)
    assert (await post(server, tr.INBOUND_PATH, sms_form("STOP")))[0] == 200
    async with engine.begin() as conn:  # carol's number bounced for good
        await te.suppress_addresses(conn, "sms", [PHONES["carol"]], "sms_undeliverable", "30005", NOW)
        await te.suppress_addresses(conn, "sms", [PHONES["alice"]], "hard_bounce", "21211", NOW)
    for sender in (PHONES["bob"], PHONES["carol"], PHONES["alice"]):
        got, _, answer = await post(server, tr.INBOUND_PATH, sms_form(word, sender=sender, n=901))
        assert (got, answer) == (200, EMPTY)
    assert [(a, r) for _, a, r, _ in await suppressed(engine)] == [
        (PHONES["alice"], "hard_bounce"),
        (PHONES["carol"], "sms_undeliverable"),
    ]
    assert (await sms_consents(engine))[world["bob"][0]][0] is False  # consent comes back from the records only


@pytest.mark.parametrize("word", ["HELP", "help", " Info? ", "ＨＥＬＰ"])
async def test_help_answers_the_configured_text_as_twiml(
    engine: AsyncEngine, server: TrackingServer, word: str
) -> None:
    await sms_world(engine)
    got, headers, answer = await post(server, tr.INBOUND_PATH, sms_form(word))
    assert got == 200 and headers["Content-Type"] == "text/xml; charset=utf-8"
    assert answer.decode() == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Message>'
        "Acme &amp; Sons: offers &amp; coupons &lt;3. Reply STOP to opt out."
        "</Message></Response>"
    )
    assert await suppressed(engine) == []


@pytest.mark.parametrize(
    "body", ["hello", "STOP STOP", "please stop texting me", "stopp", "TDX", "", "START NOW", "s t o p", "x" * 5000]
)
async def test_anything_else_changes_nothing(engine: AsyncEngine, server: TrackingServer, body: str) -> None:
    world = await sms_world(engine)
    await te.opt_out_address(engine, "sms", PHONES["alice"], NOW, reason="sms_stop", source="earlier")
    got, _, answer = await post(server, tr.INBOUND_PATH, sms_form(body))
    assert (got, answer) == (200, EMPTY)
    assert [a for _, a, _, _ in await suppressed(engine)] == [PHONES["alice"]]
    assert (await sms_consents(engine))[world["bob"][0]] == (True, "crm")


async def test_inbound_needs_the_signature_too(engine: AsyncEngine, server: TrackingServer) -> None:
    await sms_world(engine)
    for sign in (None, f"{PUBLIC}{tr.STATUS_PATH}"):
        assert (await post(server, tr.INBOUND_PATH, sms_form("STOP"), sign=sign))[0] == 403
    assert await suppressed(engine) == []


async def test_a_stop_from_something_that_is_not_a_phone_changes_nothing(
    engine: AsyncEngine, server: TrackingServer
) -> None:
    await sms_world(engine)
    for sender in ("ACME", "12345", "", "whatsapp:ACME", "whatsapp:"):
        assert (await post(server, tr.INBOUND_PATH, sms_form("STOP", sender=sender)))[2] == EMPTY
    assert await suppressed(engine) == []


async def test_logs_name_the_events_and_never_the_phone(engine: AsyncEngine, server: TrackingServer) -> None:
    await sms_world(engine)
    stream = io.StringIO()
    configure_logging("debug", "json", secrets=[TOKEN], stream=stream)
    try:
        await post(server, tr.INBOUND_PATH, sms_form("STOP"))
        await post(server, tr.INBOUND_PATH, sms_form("START", n=901))
        await post(server, tr.INBOUND_PATH, sms_form("call me +14155550199"))
        await post(server, tr.STATUS_PATH, status_form(14, "delivered"), sign="https://elsewhere/")
        await post(server, tr.STATUS_PATH, status_form(15, "undelivered", "30005"))
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    by_event = {line["event"]: line for line in lines}
    assert by_event["sms_opted_out"]["phone"] == pii_hash(PHONES["bob"])
    assert by_event["sms_opted_out"]["keyword"] == "stop" and by_event["sms_opted_out"]["consents_withdrawn"] == 2
    assert by_event["sms_opted_in"]["lifted"] == 1
    assert by_event["sms_inbound_ignored"]["reason"] == "not_a_keyword"
    assert by_event["twilio_webhook_refused"]["status"] == 403
    assert by_event["twilio_receipt_pending"]["provider_id"] == sid(15)
    assert "4155550102" not in text and "4155550199" not in text and TOKEN not in text


# ---------------------------------------------------------------- the daemon serves them


async def test_the_daemon_serves_the_twilio_routes(tmp_path: Path) -> None:
    (tmp_path / "campaigns").mkdir()
    s = twilio_settings(
        tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'var' / 'topslot.db'}", tracking_port=0
    )
    daemon = Daemon(s, watch=False, schedule=False, handle_signals=False, configure_logs=False)
    async with daemon:
        server = daemon.tracking
        assert server is not None and daemon.engine is not None
        got, _, answer = await post(server, tr.INBOUND_PATH, sms_form("STOP"), via="")
        assert (got, answer) == (200, EMPTY)
        assert (await post(server, tr.STATUS_PATH, status_form(16, "delivered"), via=""))[0] == 204
        assert [a for _, a, _, _ in await suppressed(daemon.engine)] == [PHONES["bob"]]
        assert [r.provider_id for r in await pending_receipts(daemon.engine)] == [sid(16)]


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ("STOP", "opt_out"),
        ("\tＵＮＳＵＢＳＣＲＩＢＥ\n", "opt_out"),
        ("Unstop", "opt_in"),
        ("info", "help"),
        ("stops", None),
    ],
)
def test_keyword_kind(body: str, kind: str | None) -> None:
    assert tr.keyword_kind(tr.normalise_keyword(body)) == kind


def test_help_text_without_a_sender_identity_does_not_start_with_a_colon() -> None:
    assert tr.render_help("{sender}: deals. Reply STOP to opt out.", "") == "deals. Reply STOP to opt out."
    assert tr.render_help("{sender}: deals.", " Acme ") == "Acme: deals."
    assert (
        tr.twiml("a\x00b <c>")
        == b'<?xml version="1.0" encoding="UTF-8"?><Response><Message>ab &lt;c&gt;</Message></Response>'
    )


def test_e164() -> None:
    assert tr.e164("+14155550102") == "+14155550102"
    assert tr.e164(" +86 138 0013 8000 ") == "+8613800138000"
    assert tr.e164("＋１４１５５５５０１０２") == "+14155550102"
    assert tr.e164("whatsapp:+14155550102") is None and tr.e164("12345") is None and tr.e164("+1") is None


# ---------------------------------------------------------------- WhatsApp

WA_NUMBER = "+14155238886"  # our WhatsApp sender (im.whatsapp.from_number)
WA_CAMPAIGN = "wa-spring"
WA_CONTACTS: dict[str, tuple[str, dict[str, str] | None]] = {
    # name: (phone, im_ids)
    "ana": ("+14155550201", {"whatsapp": "+14155550201"}),
    "ben": ("+14155550202", None),  # no im_whatsapp: the phone stands in
    "cai": ("+14155550203", {"whatsapp": "14155550299"}),  # an id written as WhatsApp writes them
    "dee": ("+14155550204", {"whatsapp": "+14155550201", "telegram": "777"}),  # shares ana's WhatsApp number
}


def wa_settings(tmp_path: Path, **im: Any) -> Settings:
    providers = im or {"whatsapp": {"kind": "whatsapp", "from_number": WA_NUMBER}}
    return twilio_settings(tmp_path, im=providers)


@pytest.fixture
async def wa_server(engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[TrackingServer]:
    async with twilio_server(engine, wa_settings(tmp_path)) as running:
        yield running


async def wa_world(engine: AsyncEngine) -> dict[str, tuple[int, int]]:
    """A campaign and the ``WA_CONTACTS`` with SMS and IM consent, one IM row each (``sending``,
    leased to ``OWNER``); name → (contact id, delivery id)."""
    out: dict[str, tuple[int, int]] = {}
    async with engine.begin() as conn:
        await add_campaign(conn, WA_CAMPAIGN, "WA", NOW)
        for name, (phone, im_ids) in WA_CONTACTS.items():
            contact_id = await add_contact(
                conn, NOW, consent=["sms", "im"], external_id=name, phone=phone, im_ids=im_ids
            )
            delivery_id = await add_leased_row(
                conn, campaign_id=WA_CAMPAIGN, contact_id=contact_id, channel="im", owner=OWNER, at=NOW,
                timezone="America/New_York", tz_source="phone",
            )  # fmt: skip
            out[name] = (contact_id, delivery_id)
    return out


async def wa_sent(engine: AsyncEngine, sends: dict[int, tuple[int, str]], provider: str = "whatsapp") -> None:
    """The dispatcher records these WhatsApp sends: delivery id → (contact id, SID)."""
    outcomes = [
        Outcome(d, c, Decision(S.SENT, provider_id=p), channel="im", provider=provider) for d, (c, p) in sends.items()
    ]
    await record_outcomes(engine, WA_CAMPAIGN, outcomes, OWNER, NOW + timedelta(seconds=5))


def wa_status_form(n: int, status: str, code: str | None = None, to: str = "+14155550201") -> dict[str, str]:
    """A WhatsApp status callback as Twilio posts it: the SMS one, between WhatsApp addresses, with the channel."""
    return status_form(n, status, code, to=f"whatsapp:{to}") | {
        "From": f"whatsapp:{WA_NUMBER}",
        "ChannelInstallSid": "XE" + "0" * 32,
        "ChannelPrefix": "whatsapp",
        "ChannelToAddress": to,
    }


def wa_form(body: str, sender: str = "+14155550201", n: int = 950, to: str = WA_NUMBER) -> dict[str, str]:
    """An incoming WhatsApp message as Twilio posts it."""
    return {
        "AccountSid": ACCOUNT,
        "ApiVersion": "2010-04-01",
        "MessageSid": sid(n),
        "SmsMessageSid": sid(n),
        "SmsSid": sid(n),
        "SmsStatus": "received",
        "From": f"whatsapp:{sender}",
        "To": f"whatsapp:{to}",
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "MessageType": "text",
        "ProfileName": "Ana",
        "WaId": sender.removeprefix("+"),
    }


async def im_consents(engine: AsyncEngine, channel: str = "im") -> dict[int, bool]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(consents).where(consents.c.channel == channel))
        return {r.contact_id: r.granted for r in rows}


async def test_a_whatsapp_receipt_updates_its_row(engine: AsyncEngine, wa_server: TrackingServer) -> None:
    world = await wa_world(engine)
    (ca, da), (cb, db) = world["ana"], world["ben"]
    await wa_sent(engine, {da: (ca, sid(20)), db: (cb, sid(21))})

    assert (await post(wa_server, tr.STATUS_PATH, wa_status_form(20, "read")))[0] == 204
    assert (await post(wa_server, tr.STATUS_PATH, wa_status_form(21, "failed", "63016", to="+14155550202")))[0] == 204

    assert (await ledger(engine, da)).state == S.DELIVERED
    row = await ledger(engine, db)
    assert (row.state, row.last_error) == (
        S.BOUNCED,
        "63016 outside the 24-hour session window (approved template required)",
    )
    assert await suppressed(engine) == []


@pytest.mark.parametrize(
    ("who", "code", "address", "reason"),
    [
        ("ana", "63024", "whatsapp:+14155550201", "hard_bounce"),
        ("ana", "63003", "whatsapp:+14155550201", "hard_bounce"),
        ("ana", "63014", "whatsapp:+14155550201", "im_blocked"),
        ("ana", "21610", "whatsapp:+14155550201", "sms_stop"),
        ("ben", "63024", "whatsapp:+14155550202", "hard_bounce"),  # the phone stood in for the id
        ("cai", "63024", "whatsapp:14155550299", "hard_bounce"),  # the row's own address, as it is compared
    ],
)
async def test_a_suppressing_whatsapp_code_suppresses_the_rows_im_address_not_sms(
    engine: AsyncEngine, wa_server: TrackingServer, who: str, code: str, address: str, reason: str
) -> None:
    world = await wa_world(engine)
    contact, d = world[who]
    await wa_sent(engine, {d: (contact, sid(22))})
    to = "+" + address.removeprefix("whatsapp:").lstrip("+")

    assert (await post(wa_server, tr.STATUS_PATH, wa_status_form(22, "undelivered", code, to=to)))[0] == 204

    assert (await ledger(engine, d)).state == S.BOUNCED
    assert await suppressed(engine) == [("im", address, reason, f"twilio_status:{sid(22)}:{code}")]
    assert (await im_consents(engine))[contact] is True  # a receipt suppresses; consent is the contact's word


@pytest.mark.parametrize("code", ["63016", "63018", "63032", "63049", "30005", "30006", "21614", None])
async def test_other_whatsapp_failures_only_bounce(
    engine: AsyncEngine, wa_server: TrackingServer, code: str | None
) -> None:
    world = await wa_world(engine)
    contact, d = world["ana"]
    await wa_sent(engine, {d: (contact, sid(23))})

    assert (await post(wa_server, tr.STATUS_PATH, wa_status_form(23, "failed", code)))[0] == 204

    assert (await ledger(engine, d)).state == S.BOUNCED
    assert await suppressed(engine) == []  # SMS carrier codes say nothing about a WhatsApp address


async def test_a_whatsapp_receipt_before_its_row_is_recorded_suppresses_its_to(
    engine: AsyncEngine, wa_server: TrackingServer
) -> None:
    world = await wa_world(engine)  # rows still `sending`
    contact, d = world["ana"]

    assert (await post(wa_server, tr.STATUS_PATH, wa_status_form(24, "failed", "63024")))[0] == 204
    assert [r.provider_id for r in await pending_receipts(engine)] == [sid(24)]
    assert await suppressed(engine) == [
        ("im", "whatsapp:+14155550201", "hard_bounce", f"twilio_status:{sid(24)}:63024")
    ]

    await wa_sent(engine, {d: (contact, sid(24))})
    assert (await ledger(engine, d)).state == S.BOUNCED
    assert await pending_receipts(engine) == []
    assert len(await suppressed(engine)) == 1


async def test_an_sms_receipt_for_the_same_number_still_suppresses_sms(
    engine: AsyncEngine, wa_server: TrackingServer
) -> None:
    world = await sms_world(engine)
    d = world["carol"][1]
    await mark_sent(engine, d, sid(25))

    assert (await post(wa_server, tr.STATUS_PATH, status_form(25, "undelivered", "21610", to=PHONES["carol"])))[
        0
    ] == 204

    assert await suppressed(engine) == [("sms", PHONES["carol"], "sms_stop", f"twilio_status:{sid(25)}:21610")]


@pytest.mark.parametrize("body", ["STOP", " stop ", "ＳＴＯＰ", "退订", "unsubscribe"])
async def test_a_whatsapp_stop_suppresses_the_im_address_and_withdraws_im_consent_only(
    engine: AsyncEngine, wa_server: TrackingServer, body: str
) -> None:
    world = await wa_world(engine)

    got, _, answer = await post(wa_server, tr.INBOUND_PATH, wa_form(body))

    assert (got, answer) == (200, EMPTY)
    assert await suppressed(engine) == [("im", "whatsapp:+14155550201", "sms_stop", f"twilio_inbound:{sid(950)}")]
    im = await im_consents(engine)
    assert (im[world["ana"][0]], im[world["dee"][0]]) == (False, False)  # both have that WhatsApp number
    assert (im[world["ben"][0]], im[world["cai"][0]]) == (True, True)
    assert set((await im_consents(engine, "sms")).values()) == {True}  # SMS is another channel


async def test_a_whatsapp_stop_finds_the_phone_that_stands_in_and_ids_without_a_plus(
    engine: AsyncEngine, wa_server: TrackingServer
) -> None:
    world = await wa_world(engine)

    await post(wa_server, tr.INBOUND_PATH, wa_form("STOP", sender="+14155550202"))
    await post(wa_server, tr.INBOUND_PATH, wa_form("STOP", sender="+14155550299", n=951))

    assert [(a, r) for _, a, r, _ in await suppressed(engine)] == [
        ("whatsapp:+14155550202", "sms_stop"),
        ("whatsapp:+14155550299", "sms_stop"),
        ("whatsapp:14155550299", "sms_stop"),  # cai's id as stored: what the segment compares
    ]
    im = await im_consents(engine)
    assert (im[world["ben"][0]], im[world["cai"][0]], im[world["ana"][0]]) == (False, False, True)


async def test_a_whatsapp_start_lifts_stop_and_block_not_a_hard_bounce_and_grants_nothing(
    engine: AsyncEngine, wa_server: TrackingServer
) -> None:
    world = await wa_world(engine)
    await post(wa_server, tr.INBOUND_PATH, wa_form("STOP"))
    async with engine.begin() as conn:
        await te.suppress_addresses(conn, "im", ["whatsapp:+14155550202"], "im_blocked", "63014", NOW)
        await te.suppress_addresses(conn, "im", ["whatsapp:+14155550203"], "hard_bounce", "63024", NOW)
        await te.suppress_addresses(conn, "sms", ["+14155550201"], "sms_stop", "sms", NOW)

    for n, sender in enumerate(("+14155550201", "+14155550202", "+14155550203"), start=960):
        got, _, answer = await post(wa_server, tr.INBOUND_PATH, wa_form("START", sender=sender, n=n))
        assert (got, answer) == (200, EMPTY)

    assert [(c, a, r) for c, a, r, _ in await suppressed(engine)] == [
        ("sms", "+14155550201", "sms_stop"),  # a WhatsApp START is no SMS START
        ("im", "whatsapp:+14155550203", "hard_bounce"),
    ]
    assert (await im_consents(engine))[world["ana"][0]] is False


async def test_whatsapp_help_is_answered(engine: AsyncEngine, wa_server: TrackingServer) -> None:
    await wa_world(engine)

    got, _, answer = await post(wa_server, tr.INBOUND_PATH, wa_form("help"))

    assert got == 200 and b"<Message>Acme &amp; Sons: offers &amp; coupons" in answer
    assert await suppressed(engine) == []


async def test_a_whatsapp_stop_belongs_to_the_provider_of_the_number_it_was_sent_to(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await wa_world(engine)
    providers = {
        "whatsapp": {"kind": "whatsapp", "from_number": WA_NUMBER},
        "wa_eu": {"kind": "whatsapp", "from_number": "+447700900123"},
        "tg": {"kind": "telegram", "token": "123456:" + "A" * 35},
    }
    async with twilio_server(engine, wa_settings(tmp_path, **providers)) as running:
        await post(running, tr.INBOUND_PATH, wa_form("STOP", to="+447700900123"))
        await post(running, tr.INBOUND_PATH, wa_form("STOP", sender="+14155550202", to="+15550000000", n=951))

    assert [a for _, a, _, _ in await suppressed(engine)] == [
        "wa_eu:+14155550201",  # sent to wa_eu's number: that provider only
        "wa_eu:+14155550202",  # a number we do not know (a Messaging Service's): every WhatsApp provider
        "whatsapp:+14155550202",
    ]


async def test_whatsapp_logs_name_the_events_and_never_the_phone(
    engine: AsyncEngine, wa_server: TrackingServer
) -> None:
    world = await wa_world(engine)
    contact, d = world["ana"]
    await wa_sent(engine, {d: (contact, sid(26))})
    stream = io.StringIO()
    configure_logging("debug", "json", secrets=[TOKEN], stream=stream)
    try:
        await post(wa_server, tr.INBOUND_PATH, wa_form("STOP"))
        await post(wa_server, tr.INBOUND_PATH, wa_form("START", n=951))
        await post(wa_server, tr.STATUS_PATH, wa_status_form(26, "failed", "63024"))
    finally:
        structlog.reset_defaults()
    text = stream.getvalue()
    by_event = {line["event"]: line for line in map(json.loads, filter(str.strip, text.splitlines()))}
    assert by_event["whatsapp_opted_out"]["phone"] == pii_hash("+14155550201")
    assert by_event["whatsapp_opted_out"]["consents_withdrawn"] == 2
    assert by_event["whatsapp_opted_in"]["lifted"] == 1 and by_event["whatsapp_opted_in"]["provider"] == "whatsapp"
    assert by_event["twilio_bounced"]["suppression"] == "hard_bounce"
    assert "4155550201" not in text
