"""IM through a signed webhook gateway (``kind: webhook``) over real HTTP, against a fake gateway
(fake_im_gateway.py) that verifies every request the way the docs tell a gateway to.

Every outcome is checked at both ends: the error kind the messenger raises, and what reached the
gateway (one POST per send; the same Idempotency-Key on a retry, so the gateway forwards it once).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from channels.fake_im_gateway import (
    ACCEPT,
    DROP,
    SECRET,
    Behaviour,
    FakeImGateway,
    accept,
    rate_limited,
    refuse,
    server_error,
    slow,
    verify,
)
from channels.scripted_smtp import unused_port
from topslot.attribution.webhook import authenticate
from topslot.channels import im_webhook as iw
from topslot.channels.base import Card, EmailEnvelope, Messenger, TextMessage
from topslot.channels.im_webhook import BUSY_BACKOFF, ImWebhook, classify
from topslot.channels.limits import LocalLimits
from topslot.clock import FakeClock
from topslot.errors import AmbiguousSendError, PermanentSendError, SendError, TransientSendError
from topslot.settings import Settings

SENT_AT = datetime(2027, 5, 9, 7, 30, 5, 123456, tzinfo=UTC)
CARD = Card("Mother's Day 母亲节", "https://t.example.com/t/c/abc", "Shop now", "MOM-7Q2K")


@pytest.fixture
async def fake() -> AsyncIterator[FakeImGateway]:
    async with FakeImGateway() as server:
        yield server


@pytest.fixture
async def messenger(fake: FakeImGateway) -> AsyncIterator[ImWebhook]:
    m = webhook(fake)
    yield m
    await m.close()


def webhook(fake: FakeImGateway, **options: Any) -> ImWebhook:
    values: dict[str, Any] = {
        "url": fake.url,
        "secret": fake.secret,
        "rate_per_second": 10_000.0,
        "timeout": 5.0,
        "clock": FakeClock(SENT_AT),
        "jitter": lambda: 0.5,
    }
    values.update(options)
    return ImWebhook("wecom", **values)


def im(n: int, recipient: str | None = None, *, card: Card | None = CARD) -> TextMessage:
    return TextMessage(n, f"wecom:{recipient or f'user{n}'}", f"妈妈节快乐 {n}", card, campaign_id="mothers-day-2027")


# ---------------------------------------------------------------- the request


async def test_one_signed_json_post_with_the_documented_payload(fake: FakeImGateway, messenger: ImWebhook) -> None:
    provider_id = await messenger.send(im(42, "zhangsan"))

    assert provider_id == "wecom:gw-1"
    (request,) = fake.requests
    assert request.verified and not request.duplicate and request.answered == 200
    assert request.payload == {
        "version": 1,
        "provider": "wecom",
        "delivery_id": 42,
        "campaign_id": "mothers-day-2027",
        "recipient": "zhangsan",
        "text": "妈妈节快乐 42",
        "card": {
            "title": "Mother's Day 母亲节",
            "text": "妈妈节快乐 42",
            "link": "https://t.example.com/t/c/abc",
            "button": "Shop now",
            "coupon": "MOM-7Q2K",
        },
        "sent_at": "2027-05-09T07:30:05Z",
    }
    assert "妈妈节".encode() in request.body  # UTF-8, not \\u escapes
    headers = request.headers
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert headers["Idempotency-Key"] == "42"
    assert headers["User-Agent"] == iw.USER_AGENT
    assert abs(int(headers["X-Topslot-Timestamp"]) - datetime.now(UTC).timestamp()) < 5  # real time, not the clock
    assert headers["X-Topslot-Signature"].startswith("sha256=")


async def test_the_signature_verifies_with_the_documented_verifier_and_the_conversion_one(
    fake: FakeImGateway, messenger: ImWebhook
) -> None:
    await messenger.send(im(1))
    (request,) = fake.requests
    stamp, signature = request.headers["X-Topslot-Timestamp"], request.headers["X-Topslot-Signature"]
    assert verify(SECRET, request.body, stamp, signature)
    authenticate(request.body, signature, stamp, SECRET, datetime.now(UTC))  # the same scheme as /conversions
    assert not verify(SECRET, request.body + b" ", stamp, signature)
    assert not verify("another-secret-0123456789", request.body, stamp, signature)
    assert not verify(SECRET, request.body, str(int(stamp) - 301), signature)


async def test_a_message_without_a_card_posts_card_null(fake: FakeImGateway, messenger: ImWebhook) -> None:
    await messenger.send(im(3, card=None))
    payload = fake.requests[0].payload
    assert payload is not None and payload["card"] is None and payload["text"] == "妈妈节快乐 3"


async def test_a_stale_or_wrong_signature_is_refused_by_the_gateway_and_transient(fake: FakeImGateway) -> None:
    for m in (webhook(fake, wall=lambda: 1_000_000.0), webhook(fake, secret="not-the-gateway-secret-123456")):
        with pytest.raises(TransientSendError) as caught:
            await m.send(im(5))
        assert caught.value.code == 401 and "check im.wecom.secret" in str(caught.value)
        assert "not-the-gateway-secret" not in str(caught.value)
        await m.close()
    assert fake.messages == {} and [r.verified for r in fake.requests] == [False, False]


# ---------------------------------------------------------------- provider ids


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        (accept("id"), "wecom:gw-1"),
        (accept("message_id"), "wecom:gw-1"),
        (accept(None), "wecom:77"),
        (Behaviour(status=202, raw='{"id": 12345}'), "wecom:12345"),
        (Behaviour(status=200, raw="OK"), "wecom:77"),
        (Behaviour(status=200, raw='{"id": "has space"}'), "wecom:77"),
        (Behaviour(status=200, raw='{"id": true, "message_id": "m-9"}'), "wecom:m-9"),
        (Behaviour(status=200, raw=json.dumps({"id": "x" * 129})), "wecom:77"),
    ],
)
async def test_the_provider_id_is_the_gateways_id_or_the_delivery_id(
    fake: FakeImGateway, messenger: ImWebhook, behaviour: Behaviour, expected: str
) -> None:
    fake.default = behaviour
    assert await messenger.send(im(77)) == expected
    assert len(fake.requests) == 1


# ---------------------------------------------------------------- refusals


async def test_a_4xx_is_permanent_with_the_bounded_reason_and_never_the_secret(
    fake: FakeImGateway, messenger: ImWebhook
) -> None:
    fake.script["gone"] = refuse(404, f"unknown user\n(signed with {SECRET}) " + "x" * 500)
    with pytest.raises(PermanentSendError) as caught:
        await messenger.send(im(8, "gone"))
    text = str(caught.value)
    assert caught.value.code == 404 and not caught.value.suppress
    assert text.startswith("wecom gateway HTTP 404: unknown user (signed with ***) xxx")
    assert SECRET not in text and "\n" not in text and len(text) < 260
    assert fake.messages == {} and len(fake.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (400, '{"error": "recipient is not in the group"}', "recipient is not in the group"),
        (422, '{"error": {"message": "text too long"}}', "text too long"),
        (400, '{"errcode": 93000, "errmsg": "invalid webhook url"}', "invalid webhook url"),
        (410, "recipient left", "recipient left"),
        (400, "<html><body>Bad Request</body></html>", ""),
    ],
)
async def test_the_reason_is_read_from_the_answer(
    fake: FakeImGateway, messenger: ImWebhook, status: int, body: str, reason: str
) -> None:
    fake.default = Behaviour(status=status, raw=body)
    with pytest.raises(PermanentSendError) as caught:
        await messenger.send(im(9))
    assert str(caught.value) == f"wecom gateway HTTP {status}" + (f": {reason}" if reason else "")


async def test_429_is_transient_with_retry_after_and_the_retry_carries_the_same_key(
    fake: FakeImGateway, messenger: ImWebhook
) -> None:
    fake.script["busy"] = [rate_limited("7"), ACCEPT]
    message = im(10, "busy")
    with pytest.raises(TransientSendError) as caught:
        await messenger.send(message)
    assert (caught.value.code, caught.value.retry_after) == (429, 7.0)
    assert fake.messages == {}

    assert await messenger.send(message) == "wecom:gw-1"
    assert [r.headers["Idempotency-Key"] for r in fake.requests] == ["10", "10"]
    assert fake.delivered_to() == ["wecom:busy"]


async def test_429_without_retry_after_waits_a_jittered_while_or_what_the_body_says(
    fake: FakeImGateway, messenger: ImWebhook
) -> None:
    fake.default = rate_limited(None)
    with pytest.raises(TransientSendError) as caught:
        await messenger.send(im(11))
    assert caught.value.retry_after == BUSY_BACKOFF * 1.5
    fake.default = Behaviour(status=429, raw='{"error": "slow down", "retry_after": 12}')
    with pytest.raises(TransientSendError) as caught:
        await messenger.send(im(12))
    assert caught.value.retry_after == 12.0 and "slow down" in str(caught.value)


@pytest.mark.parametrize("forwarded", [False, True], ids=["not-forwarded", "forwarded-then-crashed"])
async def test_a_5xx_is_transient_and_the_retry_is_forwarded_once(
    fake: FakeImGateway, messenger: ImWebhook, forwarded: bool
) -> None:
    fake.script["flaky"] = [server_error(503, forwarded=forwarded), ACCEPT]
    message = im(13, "flaky")
    with pytest.raises(TransientSendError) as caught:
        await messenger.send(message)
    assert caught.value.code == 503 and "safe to repeat" in str(caught.value)

    assert await messenger.send(message) == "wecom:gw-1"
    assert fake.delivered_to() == ["wecom:flaky"]  # once, whether the 503 had forwarded it or not
    assert [r.duplicate for r in fake.requests] == [False, forwarded]


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (401, TransientSendError, 401),
        (403, TransientSendError, 403),
        (408, TransientSendError, 408),
        (409, AmbiguousSendError, 409),
        (307, AmbiguousSendError, 307),
        (500, TransientSendError, 500),
        (502, TransientSendError, 502),
    ],
)
async def test_other_statuses(
    fake: FakeImGateway, messenger: ImWebhook, status: int, error: type[SendError], code: int
) -> None:
    fake.default = Behaviour(status=status, reason="nope", forwarded=False)
    with pytest.raises(error) as caught:
        await messenger.send(im(14))
    assert type(caught.value) is error and caught.value.code == code
    assert len(fake.requests) == 1  # no redirect followed, nothing repeated


# ---------------------------------------------------------------- the connection


async def test_no_connection_is_transient_and_nothing_was_sent() -> None:
    m = ImWebhook("wecom", url=f"http://127.0.0.1:{unused_port()}/send", secret=SECRET, timeout=2.0)
    with pytest.raises(TransientSendError) as caught:
        await m.send(im(15))
    assert caught.value.code == "connect"
    await m.close()


async def test_a_timeout_after_the_request_was_written_is_ambiguous(fake: FakeImGateway) -> None:
    fake.default = slow(5.0)
    m = webhook(fake, timeout=0.3)
    with pytest.raises(AmbiguousSendError) as caught:
        await m.send(im(16))
    assert caught.value.code == "timeout"
    assert len(fake.requests) == 1
    await m.close()


async def test_a_drop_after_the_body_was_read_is_ambiguous(fake: FakeImGateway, messenger: ImWebhook) -> None:
    fake.default = DROP
    with pytest.raises(AmbiguousSendError) as caught:
        await messenger.send(im(17))
    assert caught.value.code == "dropped"
    assert fake.delivered_to() == ["wecom:user17"]  # the worst case: the gateway had it
    assert len(fake.requests) == 1


# ---------------------------------------------------------------- the messenger


async def test_never_twice_for_the_same_key_and_one_post_per_send(fake: FakeImGateway, messenger: ImWebhook) -> None:
    messages = [im(n) for n in range(100, 130)]
    ids = await asyncio.gather(*(messenger.send(m) for m in messages))
    assert len(set(ids)) == 30 and len(fake.requests) == 30
    again = await messenger.send(messages[0])  # the dispatcher never does this; the key protects anyway
    assert again == ids[0]
    assert len(fake.messages) == 30 and fake.duplicates == 1


async def test_it_keeps_to_max_in_flight(fake: FakeImGateway) -> None:
    fake.default = slow(0.2)
    m = webhook(fake, max_in_flight=3)
    await asyncio.gather(*(m.send(im(n)) for n in range(200, 209)))
    assert fake.peak_in_flight == 3 and len(fake.messages) == 9
    await m.close()


async def test_close_waits_for_sends_in_flight_then_refuses(fake: FakeImGateway, messenger: ImWebhook) -> None:
    fake.default = slow(0.3)
    sending = asyncio.create_task(messenger.send(im(20)))
    await asyncio.sleep(0.1)
    await messenger.close()
    assert await sending == "wecom:gw-1"
    with pytest.raises(TransientSendError):
        await messenger.send(im(21))
    await messenger.close()
    assert len(fake.requests) == 1


async def test_it_takes_text_messages_only(messenger: ImWebhook) -> None:
    with pytest.raises(TypeError):
        await messenger.send(EmailEnvelope(1, "a@b.example", "c@d.example", b"x"))


def test_it_is_built_from_the_settings_with_its_share(tmp_path: Path) -> None:
    settings = Settings(
        config_dir=tmp_path,
        var_dir=tmp_path,
        im={
            "wecom": {
                "kind": "webhook",
                "url": "https://gw.example.com/topslot",
                "secret": SECRET,
                "rate_per_second": 0.3,
                "max_in_flight": 4,
                "timeout_seconds": 7,
            }
        },
    )
    m = iw.build(settings, "wecom", FakeClock(SENT_AT), LocalLimits(0.5))
    assert isinstance(m, Messenger)
    assert (m.channel, m.provider, m.url, m.timeout) == ("im", "wecom", "https://gw.example.com/topslot", 7)
    assert (m.rate_per_second, m.max_in_flight) == (0.15, 2)
    with pytest.raises(ValueError):
        iw.build(settings, "dingtalk", FakeClock(SENT_AT), LocalLimits())


# ---------------------------------------------------------------- classify, pure


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (201, None),
        (204, None),
        (400, PermanentSendError),
        (404, PermanentSendError),
        (410, PermanentSendError),
        (422, PermanentSendError),
        (401, TransientSendError),
        (403, TransientSendError),
        (407, TransientSendError),
        (408, TransientSendError),
        (429, TransientSendError),
        (409, AmbiguousSendError),
        (500, TransientSendError),
        (503, TransientSendError),
        (504, TransientSendError),
        (100, AmbiguousSendError),
        (302, AmbiguousSendError),
    ],
)
def test_classify_maps_every_status(status: int, kind: type[SendError] | None) -> None:
    if kind is None:
        assert classify("wecom", 5, status, b"") == "wecom:5"
        return
    with pytest.raises(kind) as caught:
        classify("wecom", 5, status, b'{"error": "why"}', {"retry-after": "3"}, jitter=lambda: 0.0)
    assert type(caught.value) is kind and "why" in str(caught.value)
    if status == 429:
        assert isinstance(caught.value, TransientSendError) and caught.value.retry_after == 3.0


def test_reasons_are_one_printable_bounded_line() -> None:
    assert iw.clean_text("a\x00b\r\n\tc  d", 50) == "a b c d"
    assert iw.clean_text("x" * 300, 200) == "x" * 199 + "…"
    assert iw.answer_reason(b"", {"message": 42}) == "42"
    assert iw.answer_reason(b"[1]", {}) == ""


def test_sent_at_is_the_daemons_clock_in_utc() -> None:
    clock = FakeClock(SENT_AT + timedelta(hours=3))
    m = ImWebhook("wecom", url="http://127.0.0.1:9/x", secret=SECRET, clock=clock)
    assert m.payload(im(1))["sent_at"] == "2027-05-09T10:30:05Z"
