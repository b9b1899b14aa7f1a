"""SMS through Twilio: the messenger over HTTP against a fake Twilio (fake_twilio.py), sending the
request the official ``twilio`` SDK's async client sends.

Every outcome is checked at both ends: the error kind the messenger raises, and what reached the
fake (exactly one POST per send: nothing is ever retried, since Twilio cannot drop a duplicate).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from channels.fake_twilio import (
    ACCEPT,
    DROP,
    Behaviour,
    FakeTwilio,
    num_segments,
    refuse,
    server_error,
    slow,
)
from channels.scripted_smtp import unused_port
from channels.support import FrozenTime
from topslot.channels.base import EmailEnvelope, Messenger, TextMessage
from topslot.channels.http import basic_auth, form_quote
from topslot.channels.outbox import JsonlTextOutbox
from topslot.channels.registry import Registry
from topslot.channels.twilio_sms import BUSY_BACKOFF, TwilioSms, classify, parse_retry_after
from topslot.errors import AmbiguousSendError, PermanentSendError, TransientSendError
from topslot.settings import Settings

SERVICE = "MG" + "fedcba9876543210" * 2
SID = re.compile(r"^SM[0-9a-f]{32}$")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as server:
        yield server


def twilio_settings(tmp_path: Path, fake: FakeTwilio, **overrides: Any) -> Settings:
    twilio: dict[str, Any] = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": "+15005550006",
        "base_url": fake.url,
        "rate_per_second": 10_000.0,
        "timeout_seconds": 5.0,
    }
    twilio.update(overrides)
    return Settings(
        config_dir=tmp_path,
        var_dir=tmp_path,
        tracking_base_url="https://t.shop.example/",
        twilio=twilio,
        compliance={"sender_identity": "Example Shop"},
    )


def make(fake: FakeTwilio, **options: Any) -> TwilioSms:
    values: dict[str, Any] = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": "+15005550006",
        "base_url": fake.url,
        "rate_per_second": 10_000.0,
        "timeout": 5.0,
    }
    values.update(options)
    return TwilioSms(**values)


@pytest.fixture
async def sms(fake: FakeTwilio) -> AsyncIterator[TwilioSms]:
    messenger = make(fake, jitter=lambda: 0.5)
    yield messenger
    await messenger.close()


def text(to: str, n: int = 1, body: str = "Mother's Day: 20% off today") -> TextMessage:
    return TextMessage(n, to, body)


# ---------------------------------------------------------------- accepted


async def test_the_request_is_the_one_the_twilio_sdk_client_sends(fake: FakeTwilio, sms: TwilioSms) -> None:
    """Posted with the messenger's own HTTP client, the request is what twilio's
    ``AsyncTwilioHttpClient`` sent for the same form and credentials (the messenger used it before),
    but for the User-Agent and compression."""
    from twilio.http.async_http_client import AsyncTwilioHttpClient

    message = text("+14155550100", body="Code MOM+20% by 20 May: https://t.example/s/Ab-_~ 母亲节 🎉 &=?")
    await sms.send(message)
    form = sms._form(message)
    assert form.decode() == urlencode({"To": message.to, "Body": message.body}) + sms._shared_form
    sdk = AsyncTwilioHttpClient(pool_connections=False)  # a session per request, no retries
    auth = {"Authorization": basic_auth(fake.account_sid, fake.auth_token)}
    headers = {**auth, "Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
    await sdk.request("POST", sms._messages_url, data=form, headers=headers)

    ours, theirs = fake.requests
    assert (ours.method, ours.path, ours.form, ours.auth) == (theirs.method, theirs.path, theirs.form, theirs.auth)
    # the same headers but for the agent's name and compression (ours asks for none: identity answers)
    assert ours.headers["User-Agent"].startswith("topslot") and "Accept-Encoding" not in ours.headers
    differing = {"User-Agent", "Accept-Encoding"}
    assert {k: v for k, v in ours.headers.items() if k not in differing} == {
        k: v for k, v in theirs.headers.items() if k not in differing
    }
    assert ours.answered == theirs.answered == 201


async def test_a_created_message_returns_its_sid_from_one_twilio_shaped_request(
    tmp_path: Path, fake: FakeTwilio
) -> None:
    registry = Registry(twilio_settings(tmp_path, fake))
    messenger = registry.messenger("sms")
    assert isinstance(messenger, TwilioSms) and isinstance(messenger, Messenger)
    assert (messenger.channel, messenger.provider) == ("sms", "twilio")

    sid = await messenger.send(text("+14155550100", body="母亲节快乐 🎉"))

    assert SID.match(sid) and fake.messages[sid].to == "+14155550100"
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json")
    assert request.auth == (fake.account_sid, fake.auth_token)
    assert request.form == {
        "To": "+14155550100",
        "From": "+15005550006",
        "Body": "母亲节快乐 🎉",
        "StatusCallback": "https://t.shop.example/twilio/status",
    }
    assert request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert request.answered == 201
    await registry.close()


async def test_a_messaging_service_sends_instead_of_the_from_number(tmp_path: Path, fake: FakeTwilio) -> None:
    registry = Registry(twilio_settings(tmp_path, fake, messaging_service_sid=SERVICE))

    sid = await registry.messenger("sms").send(text("+14155550100"))

    (request,) = fake.requests
    assert request.form["MessagingServiceSid"] == SERVICE and "From" not in request.form
    assert fake.messages[sid].status == "accepted"  # Twilio picks the sender later
    await registry.close()


async def test_without_status_callbacks_none_is_asked_for(tmp_path: Path, fake: FakeTwilio) -> None:
    registry = Registry(twilio_settings(tmp_path, fake, status_callbacks=False))

    await registry.messenger("sms").send(text("+14155550100"))

    assert "StatusCallback" not in fake.requests[0].form
    await registry.close()


async def test_edge_and_region_from_the_environment_cannot_redirect_it(
    fake: FakeTwilio, sms: TwilioSms, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "9" * 32)

    assert await sms.send(text("+14155550100"))
    assert fake.requests[0].auth == (fake.account_sid, fake.auth_token)


# ---------------------------------------------------------------- refused by Twilio

REFUSALS = [
    # (behaviour, error kind, suppress)
    (refuse(21610), PermanentSendError, True),  # replied STOP
    (refuse(21211), PermanentSendError, False),  # invalid To
    (refuse(21614), PermanentSendError, False),  # not a mobile number
    (refuse(21408), PermanentSendError, False),  # region not enabled
    (refuse(21612), PermanentSendError, False),  # not reachable from this sender
    (refuse(21606), PermanentSendError, False),  # From cannot send there
    (refuse(21999), PermanentSendError, False),  # any other 4xx
    (Behaviour(status=403, code=21408), PermanentSendError, False),  # a known refusal code wins over 403
    (refuse(20429), TransientSendError, None),  # too many requests
    (Behaviour(status=429), TransientSendError, None),  # 429 whatever the code
    (refuse(21611), TransientSendError, None),  # the sender's queue is full
    (refuse(20003), TransientSendError, None),  # credentials
    (Behaviour(status=403, code=20006), TransientSendError, None),  # access denied
    (refuse(20404), TransientSendError, None),  # no such account (a wrong base_url or SID)
    (server_error(500), AmbiguousSendError, None),
    (server_error(503), AmbiguousSendError, None),
    (Behaviour(status=502, raw="<html>Bad Gateway</html>"), AmbiguousSendError, None),
    (Behaviour(status=302, raw=""), AmbiguousSendError, None),  # not an answer we know
    (Behaviour(status=201, raw="{not json"), AmbiguousSendError, None),  # created, unreadable
    (Behaviour(status=201, raw='{"status": "queued"}'), AmbiguousSendError, None),  # created, no SID
]


@pytest.mark.parametrize(("behaviour", "kind", "suppress"), REFUSALS)
async def test_each_answer_maps_to_its_error_kind_after_exactly_one_request(
    fake: FakeTwilio, sms: TwilioSms, behaviour: Behaviour, kind: type[Exception], suppress: bool | None
) -> None:
    fake.script["+14155550100"] = behaviour

    with pytest.raises(kind) as raised:
        await sms.send(text("+14155550100"))

    assert type(raised.value) is kind
    if suppress is not None:
        assert isinstance(raised.value, PermanentSendError) and raised.value.suppress is suppress
    if behaviour.code is not None:
        assert raised.value.code == behaviour.code  # type: ignore[attr-defined]
    assert len(fake.requests) == 1  # never retried, not even a 5xx
    assert fake.delivered_to() == []


async def test_a_429_honours_retry_after(fake: FakeTwilio, sms: TwilioSms) -> None:
    fake.script["+14155550100"] = refuse(20429, retry_after="7")
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    fake.script["+14155550101"] = Behaviour(status=429, retry_after=when)

    with pytest.raises(TransientSendError) as seconds:
        await sms.send(text("+14155550100"))
    with pytest.raises(TransientSendError) as date:
        await sms.send(text("+14155550101"))

    assert seconds.value.retry_after == 7.0 and seconds.value.code == 20429
    assert date.value.retry_after is not None and 100 < date.value.retry_after <= 120


async def test_a_429_without_retry_after_backs_off_with_jitter(fake: FakeTwilio) -> None:
    fake.script["+14155550100"] = refuse(20429)
    draws = iter([0.0, 0.99])
    messenger = make(fake, jitter=lambda: next(draws))

    waits = []
    for _ in range(2):
        with pytest.raises(TransientSendError) as raised:
            await messenger.send(text("+14155550100"))
        waits.append(raised.value.retry_after)

    assert waits == [BUSY_BACKOFF, pytest.approx(BUSY_BACKOFF * 1.99)]
    await messenger.close()


async def test_a_busy_number_is_taken_once_twilio_has_room(fake: FakeTwilio, sms: TwilioSms) -> None:
    fake.script["+14155550100"] = [refuse(20429), ACCEPT]

    with pytest.raises(TransientSendError):
        await sms.send(text("+14155550100"))
    sid = await sms.send(text("+14155550100"))

    assert fake.delivered_to() == ["+14155550100"] and fake.messages[sid]
    assert [r.answered for r in fake.requests] == [429, 201]


async def test_wrong_credentials_are_transient_and_say_what_to_fix(fake: FakeTwilio) -> None:
    messenger = make(fake, auth_token="not-the-token")

    with pytest.raises(TransientSendError) as raised:
        await messenger.send(text("+14155550100"))

    assert raised.value.code == 20003 and "credentials" in str(raised.value)
    assert fake.requests[0].answered == 401 and fake.delivered_to() == []
    await messenger.close()


# ---------------------------------------------------------------- the network


async def test_no_answer_after_the_request_was_written_is_ambiguous_and_not_retried(fake: FakeTwilio) -> None:
    fake.script["+14155550100"] = slow(30)
    messenger = make(fake, timeout=0.3)

    with pytest.raises(AmbiguousSendError) as raised:
        await messenger.send(text("+14155550100"))

    assert raised.value.code == "timeout"
    assert len(fake.requests) == 1
    await messenger.close()


async def test_a_connection_dropped_after_the_request_is_ambiguous(fake: FakeTwilio, sms: TwilioSms) -> None:
    fake.script["+14155550100"] = DROP

    with pytest.raises(AmbiguousSendError) as raised:
        await sms.send(text("+14155550100"))

    assert raised.value.code == "dropped"
    assert len(fake.requests) == 1 and fake.requests[0].answered is None
    assert fake.delivered_to() == ["+14155550100"]  # Twilio did take it: resending would duplicate


async def test_connection_refused_is_transient() -> None:
    messenger = TwilioSms(
        account_sid="AC" + "0" * 32,
        auth_token="token",
        from_number="+15005550006",
        base_url=f"http://127.0.0.1:{unused_port()}",
        timeout=5.0,
    )

    with pytest.raises(TransientSendError) as raised:
        await messenger.send(text("+14155550100"))

    assert raised.value.code == "connect"
    await messenger.close()


async def test_a_connect_that_never_completes_is_transient(unanswered_port: int) -> None:
    messenger = TwilioSms(
        account_sid="AC" + "0" * 32,
        auth_token="token",
        from_number="+15005550006",
        base_url=f"http://127.0.0.1:{unanswered_port}",
        timeout=0.3,
    )

    with pytest.raises(TransientSendError) as raised:
        await messenger.send(text("+14155550100"))

    assert raised.value.code == "connect_timeout"  # nothing was written: safe to send again
    await messenger.close()


# ---------------------------------------------------------------- limits


async def test_requests_in_flight_never_exceed_max_in_flight(fake: FakeTwilio) -> None:
    fake.default = slow(0.1)
    messenger = make(fake, max_in_flight=3)

    sids = await asyncio.gather(*(messenger.send(text(f"+1415555{n:04d}", n)) for n in range(12)))

    assert len(set(sids)) == 12 and len(fake.requests) == 12
    assert fake.peak_in_flight == 3
    await messenger.close()


async def test_sends_are_paced_by_the_token_bucket(fake: FakeTwilio) -> None:
    time = FrozenTime()
    messenger = make(fake, rate_per_second=4.0, monotonic=time.monotonic, sleep=time.sleep)

    await asyncio.gather(*(messenger.send(text(f"+1415555{n:04d}", n)) for n in range(5)))

    assert time.sleeps == [0.25, 0.5, 0.75, 1.0]  # each waits its 1/rate turn behind the others
    time.now += 10
    time.sleeps.clear()
    await messenger.send(text("+14155550100"))
    assert time.sleeps == []  # tokens came back with time
    assert len(fake.requests) == 6
    await messenger.close()


async def test_each_of_n_processes_gets_its_share(tmp_path: Path, fake: FakeTwilio) -> None:
    settings = twilio_settings(tmp_path, fake, rate_per_second=30.0, max_in_flight=20)
    registry = Registry(settings, share=1 / 4)

    messenger = registry.messenger("sms")

    assert isinstance(messenger, TwilioSms)
    assert messenger.rate_per_second == pytest.approx(7.5) and messenger.bucket.rate == pytest.approx(7.5)
    assert messenger.max_in_flight == 5
    assert registry.rate("sms") == 30.0  # windows are sized by the whole node's rate
    await registry.close()


def test_without_twilio_settings_sms_go_to_the_outbox(tmp_path: Path) -> None:
    registry = Registry(Settings(config_dir=tmp_path, var_dir=tmp_path))

    assert isinstance(registry.messenger("sms"), JsonlTextOutbox)
    assert registry.provider("sms").name == "outbox"


# ---------------------------------------------------------------- closing


async def test_close_is_idempotent_and_later_sends_are_transient(fake: FakeTwilio) -> None:
    messenger = make(fake)
    await messenger.send(text("+14155550100"))
    client = messenger._http

    await messenger.close()
    await messenger.close()

    assert client.closed and client.open_connections == 0
    with pytest.raises(TransientSendError):
        await messenger.send(text("+14155550101"))
    assert len(fake.requests) == 1


async def test_close_lets_a_request_in_flight_finish(fake: FakeTwilio) -> None:
    fake.default = slow(0.2)
    messenger = make(fake)
    sending = asyncio.create_task(messenger.send(text("+14155550100")))
    while not fake.requests:
        await asyncio.sleep(0.01)

    await messenger.close()

    assert SID.match(await sending)


async def test_it_takes_text_messages_only(sms: TwilioSms) -> None:
    with pytest.raises(TypeError):
        await sms.send(EmailEnvelope(1, "a@b.example", "c@d.example", b"x"))


# ---------------------------------------------------------------- the mapping itself


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, 21610, PermanentSendError),
        (400, 400, PermanentSendError),  # twilio's stand-in code for a body without one
        (404, None, TransientSendError),  # wrong base_url: nothing was created
        (404, 20404, TransientSendError),
        (401, None, TransientSendError),
        (500, 500, AmbiguousSendError),
        (503, None, AmbiguousSendError),
        (301, None, AmbiguousSendError),
    ],
)
def test_classify(status: int, code: int | None, kind: type[Exception]) -> None:
    error = classify(status, code, "text", jitter=lambda: 0.0)
    assert type(error) is kind


def test_retry_after_is_seconds_or_a_date_within_an_hour() -> None:
    now = datetime(2026, 5, 10, 7, 30, tzinfo=UTC)
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("999999") == 3600.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after(None) is None


# ---------------------------------------------------------------- the fake's webhooks


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str], str]]]]:
    """A webhook endpoint on 127.0.0.1 recording (path, form, X-Twilio-Signature)."""
    seen: list[tuple[str, dict[str, str], str]] = []

    async def hook(request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        seen.append((request.path, form, request.headers.get("X-Twilio-Signature", "")))
        return web.Response(text="<Response/>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_the_fake_posts_signed_status_callbacks_and_inbound_sms(
    fake: FakeTwilio, receiver: tuple[str, list[tuple[str, dict[str, str], str]]]
) -> None:
    base, seen = receiver
    messenger = make(fake, status_callback=f"{base}/twilio/status")
    sid = await messenger.send(text("+14155550100"))
    validator = RequestValidator(fake.auth_token)

    status = await fake.post_status(sid, "undelivered", error_code=30003)
    inbound = await fake.post_inbound("+14155550100", "STOP", f"{base}/twilio/inbound")

    assert status.status == inbound.status == 200
    (path, form, signature), (in_path, in_form, in_signature) = seen
    assert path == "/twilio/status"
    assert form == {
        "AccountSid": fake.account_sid,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": sid,
        "MessageStatus": "undelivered",
        "SmsSid": sid,
        "SmsStatus": "undelivered",
        "To": "+14155550100",
        "ErrorCode": "30003",
    }
    assert validator.validate(f"{base}/twilio/status", form, signature)
    assert not validator.validate(f"{base}/twilio/status", {**form, "MessageStatus": "delivered"}, signature)
    assert in_path == "/twilio/inbound"
    assert (in_form["From"], in_form["To"], in_form["Body"], in_form["SmsStatus"]) == (
        "+14155550100",
        fake.phone_number,
        "STOP",
        "received",
    )
    assert in_form["MessageSid"] == in_form["SmsSid"] and SID.match(in_form["MessageSid"])
    assert validator.validate(f"{base}/twilio/inbound", in_form, in_signature)
    assert fake.messages[sid].status == "undelivered"
    await messenger.close()


async def test_the_fake_validates_like_twilio(fake: FakeTwilio, sms: TwilioSms) -> None:
    with pytest.raises(PermanentSendError) as raised:
        await sms.send(text("555-0100"))
    assert raised.value.code == 21211
    with pytest.raises(PermanentSendError):
        await sms.send(text("+14155550100", body="x" * 1601))
    assert [r.answered for r in fake.requests] == [400, 400]


def test_segments_are_counted_as_twilio_bills_them() -> None:
    assert num_segments("a" * 160) == 1
    assert num_segments("a" * 161) == 2
    assert num_segments("€" * 80) == 1  # extension characters take two septets
    assert num_segments("母" * 70) == 1
    assert num_segments("母" * 71) == 2
    assert num_segments("🎉" * 35) == 1  # two UTF-16 units each


@given(st.text())
def test_form_values_are_quoted_exactly_as_quote_plus_does(value: str) -> None:
    try:
        expected = quote_plus(value)
    except UnicodeEncodeError:  # a lone surrogate: neither can encode it
        with pytest.raises(UnicodeEncodeError):
            form_quote(value)
        return
    assert form_quote(value) == expected
