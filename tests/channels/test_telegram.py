"""IM through a Telegram bot, over HTTP against a fake Bot API (fake_telegram.py).

Every outcome is checked at both ends: the error kind the messenger raises, and what reached the
fake (exactly one POST per send: nothing is ever retried, since Telegram cannot drop a duplicate).
The bot token is in the request URL: no error message, traceback or log line may show it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from channels.fake_telegram import (
    ACCEPT,
    BLOCKED,
    CANT_INITIATE,
    CHAT_NOT_FOUND,
    DEACTIVATED,
    DROP,
    Behaviour,
    FakeTelegram,
    flood,
    refuse,
    server_error,
    slow,
)
from channels.scripted_smtp import unused_port
from channels.support import FrozenTime, envelope
from topslot.channels.base import Card, Messenger, TextMessage
from topslot.channels.http import AnswerLost, hand_over, redact
from topslot.channels.registry import Registry
from topslot.channels.telegram import BUSY_BACKOFF, TelegramBot, classify, render
from topslot.delivery import SuppressionReason
from topslot.errors import AmbiguousSendError, PermanentSendError, SendError, TransientSendError
from topslot.settings import Settings

CARD = Card("Mother's Day", "https://t.shop.example/c/abc123", "Shop now", "MOM-7Q2X")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


def make(fake: FakeTelegram, **options: Any) -> TelegramBot:
    values: dict[str, Any] = {"token": fake.token, "base_url": fake.url, "rate_per_second": 10_000.0, "timeout": 5.0}
    values.update(options)
    return TelegramBot(**values)


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[TelegramBot]:
    messenger = make(fake, jitter=lambda: 0.5)
    yield messenger
    await messenger.close()


def im(chat: str, n: int = 1, body: str = "20% off today", card: Card | None = CARD) -> TextMessage:
    return TextMessage(n, f"telegram:{chat}", body, card, campaign_id="mothers-day")


def telegram_settings(tmp_path: Path, fake: FakeTelegram, name: str = "telegram", **overrides: Any) -> Settings:
    provider: dict[str, Any] = {"kind": "telegram", "token": fake.token, "base_url": fake.url}
    provider.update(overrides)
    return Settings(config_dir=tmp_path, var_dir=tmp_path, im={name: provider})


# ---------------------------------------------------------------- sent


async def test_a_message_is_one_post_with_the_card_as_bold_title_and_a_button(
    fake: FakeTelegram, bot: TelegramBot
) -> None:
    provider_id = await bot.send(im("1001"))

    assert provider_id == "1001:1"  # "<chat_id>:<message_id>"
    [request] = fake.requests
    assert request.method == "POST" and request.path == f"/bot{fake.token}/sendMessage"
    assert request.content_type == "application/json" and request.answered == 200
    assert request.params == {
        "chat_id": 1001,
        "text": "<b>Mother's Day</b>\n\n20% off today",
        "parse_mode": "HTML",
        "disable_web_page_preview": True,
        "reply_markup": {"inline_keyboard": [[{"text": "Shop now", "url": "https://t.shop.example/c/abc123"}]]},
    }
    [sent] = fake.messages
    assert sent.chat_id == "1001" and sent.message_id == 1 and sent.disable_web_page_preview


async def test_message_ids_count_per_chat_and_provider_ids_stay_distinct(fake: FakeTelegram, bot: TelegramBot) -> None:
    ids = [await bot.send(im(chat, n)) for n, chat in enumerate(["1001", "1002", "1001"])]

    assert ids == ["1001:1", "1002:1", "1001:2"]


async def test_body_and_title_are_html_escaped_so_telegram_shows_them_as_written(
    fake: FakeTelegram, bot: TelegramBot
) -> None:
    card = Card("Tom & Jerry <b>", "https://t.shop.example/c/x?a=1&b=2", "Go >", None)
    body = 'Price < 10 & "quoted" > 5 <script>alert(1)</script> &amp; 母亲节快乐'

    await bot.send(im("1001", body=body, card=card))

    [sent] = fake.messages
    assert sent.text == (
        "<b>Tom &amp; Jerry &lt;b&gt;</b>\n\n"
        'Price &lt; 10 &amp; "quoted" &gt; 5 &lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; 母亲节快乐'
    )
    assert fake.requests[0].answered == 200  # the fake parsed it as Telegram's HTML
    # the link and the label are JSON values, not markup: as they are
    assert sent.reply_markup == {"inline_keyboard": [[{"text": "Go >", "url": "https://t.shop.example/c/x?a=1&b=2"}]]}


def test_what_telegram_shows_is_the_text_as_written() -> None:
    from channels.fake_telegram import _entities

    message = im("1", body="a < b && c > d", card=Card("Ü & <x>", "https://x.example", "Go", None))

    plain, entities = _entities(render(message)["text"])

    assert plain == "Ü & <x>\n\na < b && c > d"
    assert entities == [{"offset": 0, "length": 7, "type": "bold"}]


async def test_without_a_card_there_is_no_title_and_no_keyboard(fake: FakeTelegram, bot: TelegramBot) -> None:
    await bot.send(im("1001", body="Just text & more", card=None))

    params = fake.requests[0].params
    assert params["text"] == "Just text &amp; more" and "reply_markup" not in params


async def test_a_card_without_a_title_still_has_its_button(fake: FakeTelegram, bot: TelegramBot) -> None:
    await bot.send(im("1001", card=Card(None, "https://t.shop.example/c/1", "Open", None)))

    params = fake.requests[0].params
    assert params["text"] == "20% off today"
    assert params["reply_markup"] == {"inline_keyboard": [[{"text": "Open", "url": "https://t.shop.example/c/1"}]]}


async def test_a_channel_username_and_a_group_id_are_chats_too(fake: FakeTelegram, bot: TelegramBot) -> None:
    assert await bot.send(im("@shop_news")) == "@shop_news:1"
    assert await bot.send(im("-1001234567890")) == "-1001234567890:1"

    assert [r.params["chat_id"] for r in fake.requests] == ["@shop_news", -1001234567890]


# ---------------------------------------------------------------- refused by Telegram

ANSWERS = [
    # (behaviour, error kind, suppress)
    (BLOCKED, PermanentSendError, True),
    (DEACTIVATED, PermanentSendError, True),
    (CANT_INITIATE, PermanentSendError, True),
    (refuse(403, "Forbidden: bot was kicked from the group chat"), PermanentSendError, True),
    (refuse(400, "Forbidden: bot was blocked by the user"), PermanentSendError, True),  # codes may change
    (CHAT_NOT_FOUND, PermanentSendError, False),
    (refuse(403, "Forbidden: bot can't send messages to bots"), PermanentSendError, False),
    (refuse(400, "Bad Request: message is too long"), PermanentSendError, False),  # any other 4xx
    (refuse(400, "Bad Request: group chat was upgraded to a supergroup chat"), PermanentSendError, False),
    (flood(7), TransientSendError, None),
    (refuse(400, "Bad Request: slow down", retry_after=3), TransientSendError, None),  # retry_after decides
    (refuse(429, "Too Many Requests"), TransientSendError, None),  # 429 without retry_after
    (refuse(401, "Unauthorized"), TransientSendError, None),
    (refuse(404, "Not Found"), TransientSendError, None),
    (server_error(500), AmbiguousSendError, None),
    (server_error(502), AmbiguousSendError, None),
    (Behaviour(status=502, raw="<html>502 Bad Gateway</html>"), AmbiguousSendError, None),
    (Behaviour(status=302, raw=""), AmbiguousSendError, None),  # not an answer we know
    (Behaviour(status=200, raw="{not json"), AmbiguousSendError, None),
    (Behaviour(status=200, raw='{"ok": false, "error_code": 400, "description": "?"}'), AmbiguousSendError, None),
    (Behaviour(status=200, raw='{"ok": true, "result": {"chat": {"id": 1}}}'), AmbiguousSendError, None),
    (Behaviour(status=200, raw='{"ok": true, "result": {"message_id": "7"}}'), AmbiguousSendError, None),
]


@pytest.mark.parametrize(("behaviour", "kind", "suppress"), ANSWERS)
async def test_each_answer_maps_to_its_error_kind_after_exactly_one_request(
    fake: FakeTelegram, bot: TelegramBot, behaviour: Behaviour, kind: type[Exception], suppress: bool | None
) -> None:
    fake.script["1001"] = behaviour

    with pytest.raises(kind) as raised:
        await bot.send(im("1001"))

    assert type(raised.value) is kind
    if suppress is not None:
        assert isinstance(raised.value, PermanentSendError) and raised.value.suppress is suppress
        if suppress:
            assert raised.value.suppress_reason == SuppressionReason.IM_BLOCKED
    if behaviour.description is not None:
        assert behaviour.description in str(raised.value)
        assert raised.value.code == behaviour.status  # type: ignore[attr-defined]
    assert len(fake.requests) == 1  # never retried, not even a 5xx
    assert fake.delivered_to() == []


async def test_flood_control_honours_retry_after(fake: FakeTelegram, bot: TelegramBot) -> None:
    fake.script["1001"] = flood(7)
    fake.script["1002"] = refuse(400, "Bad Request: wait", retry_after=20)

    with pytest.raises(TransientSendError) as seven:
        await bot.send(im("1001"))
    with pytest.raises(TransientSendError) as twenty:
        await bot.send(im("1002"))

    assert seven.value.retry_after == 7.0 and seven.value.code == 429
    assert twenty.value.retry_after == 20.0


async def test_a_429_without_retry_after_backs_off_with_jitter(fake: FakeTelegram) -> None:
    fake.script["1001"] = refuse(429, "Too Many Requests")
    draws = iter([0.0, 0.99])
    messenger = make(fake, jitter=lambda: next(draws))

    waits = []
    for _ in range(2):
        with pytest.raises(TransientSendError) as raised:
            await messenger.send(im("1001"))
        waits.append(raised.value.retry_after)

    assert waits == [BUSY_BACKOFF, pytest.approx(BUSY_BACKOFF * 1.99)]
    await messenger.close()


async def test_a_flooded_chat_is_taken_once_telegram_has_room(fake: FakeTelegram, bot: TelegramBot) -> None:
    fake.script["1001"] = [flood(1), ACCEPT]

    with pytest.raises(TransientSendError):
        await bot.send(im("1001"))
    assert await bot.send(im("1001")) == "1001:1"

    assert fake.delivered_to() == ["1001"]
    assert [r.answered for r in fake.requests] == [429, 200]


async def test_a_wrong_token_is_transient_says_what_to_fix_and_never_shows_the_token(fake: FakeTelegram) -> None:
    wrong = "987654321:AAWrongTokenWrongTokenWrongToken123"
    messenger = make(fake, token=wrong, name="tg_shop")

    with pytest.raises(TransientSendError) as raised:
        await messenger.send(im("1001"))

    message = str(raised.value)
    assert raised.value.code == 401 and "im.tg_shop.token" in message and "TOPSLOT_IM__TG_SHOP__TOKEN" in message
    assert wrong not in message and fake.token not in message
    assert fake.requests[0].answered == 401 and fake.delivered_to() == []
    await messenger.close()


async def test_a_malformed_token_is_a_404_and_transient(fake: FakeTelegram) -> None:
    messenger = make(fake, token="not-a-bot-token")

    with pytest.raises(TransientSendError) as raised:
        await messenger.send(im("1001"))

    assert raised.value.code == 404 and "im.telegram.token" in str(raised.value)
    assert "not-a-bot-token" not in str(raised.value)
    await messenger.close()


# ---------------------------------------------------------------- the network


async def test_no_answer_after_the_request_was_written_is_ambiguous_and_not_retried(fake: FakeTelegram) -> None:
    fake.script["1001"] = slow(30)
    messenger = make(fake, timeout=0.3)

    with pytest.raises(AmbiguousSendError) as raised:
        await messenger.send(im("1001"))

    assert raised.value.code == "timeout"
    assert len(fake.requests) == 1
    await messenger.close()


async def test_a_connection_dropped_after_the_request_is_ambiguous(fake: FakeTelegram, bot: TelegramBot) -> None:
    fake.script["1001"] = DROP

    with pytest.raises(AmbiguousSendError) as raised:
        await bot.send(im("1001"))

    assert raised.value.code == "dropped"
    assert len(fake.requests) == 1 and fake.requests[0].answered is None
    assert fake.delivered_to() == ["1001"]  # Telegram did send it: resending would duplicate


async def test_connection_refused_is_transient() -> None:
    messenger = TelegramBot(token="1:secret-token", base_url=f"http://127.0.0.1:{unused_port()}", timeout=5.0)

    with pytest.raises(TransientSendError) as raised:
        await messenger.send(im("1001"))

    assert raised.value.code == "connect" and "secret-token" not in str(raised.value)
    await messenger.close()


async def test_a_connect_that_never_completes_is_transient(unanswered_port: int) -> None:
    messenger = TelegramBot(token="1:secret-token", base_url=f"http://127.0.0.1:{unanswered_port}", timeout=0.3)

    with pytest.raises(TransientSendError) as raised:
        await messenger.send(im("1001"))

    assert raised.value.code == "connect_timeout"  # nothing was written: safe to send again
    await messenger.close()


# ---------------------------------------------------------------- the token stays secret

TOKEN_LEAKS = [
    BLOCKED,
    CHAT_NOT_FOUND,
    flood(3),
    server_error(500),
    Behaviour(status=200, raw="{}"),
    slow(30),
    DROP,
    # a proxy that quotes the URL back
    Behaviour(status=404, raw='{"ok": false, "error_code": 404, "description": "no route for /bot{token}/x"}'),
]


@pytest.mark.parametrize("behaviour", TOKEN_LEAKS)
async def test_the_token_is_in_no_error_traceback_or_log(
    fake: FakeTelegram, behaviour: Behaviour, caplog: pytest.LogCaptureFixture
) -> None:
    if behaviour.raw is not None:
        behaviour = Behaviour(status=behaviour.status, raw=behaviour.raw.replace("{token}", fake.token))
    fake.script["1001"] = behaviour
    messenger = make(fake, timeout=0.3)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(SendError) as raised:
        await messenger.send(im("1001"))
    await messenger.close()

    shown = "".join(traceback.format_exception(raised.value)) + repr(raised.value) + repr(messenger)
    assert fake.token not in shown and fake.token.split(":")[1] not in shown
    assert fake.token not in caplog.text


async def test_connection_errors_never_show_the_token(unused_tcp_port: int) -> None:
    token = "42:AAThisIsTheSecretPart"
    messenger = TelegramBot(token=token, base_url=f"http://127.0.0.1:{unused_tcp_port}")  # nobody listens

    with pytest.raises(TransientSendError) as raised:
        await messenger.send(im("1001"))

    assert raised.value.code == "connect" and "could not connect" in str(raised.value)
    assert "AAThisIsTheSecretPart" not in "".join(traceback.format_exception(raised.value)) + repr(messenger)
    await messenger.close()
    with pytest.raises(ValueError) as invalid:  # a port out of range: refused when built, the token unsaid
        TelegramBot(token=token, base_url="http://127.0.0.1:99999")
    assert "AAThisIsTheSecretPart" not in "".join(traceback.format_exception(invalid.value))


async def test_hand_over_redacts_every_secret_it_is_given() -> None:
    with pytest.raises(AmbiguousSendError) as raised:
        async with hand_over("Telegram", 5, secrets=("s3cret", "")) as attempt:
            attempt.written = True
            raise AnswerLost("broken body from http://x/bots3cret/sendMessage")

    assert "s3cret" not in str(raised.value) and raised.value.code == "dropped"
    assert redact("a-b-a", ["a", ""]) == "***-b-***"


# ---------------------------------------------------------------- limits


async def test_requests_in_flight_never_exceed_max_in_flight(fake: FakeTelegram) -> None:
    fake.default = slow(0.1)
    messenger = make(fake, max_in_flight=3)

    ids = await asyncio.gather(*(messenger.send(im(str(1000 + n), n)) for n in range(12)))

    assert len(set(ids)) == 12 and len(fake.requests) == 12
    assert fake.peak_in_flight == 3
    await messenger.close()


async def test_sends_are_paced_by_the_token_bucket(fake: FakeTelegram) -> None:
    time = FrozenTime()
    messenger = make(fake, rate_per_second=4.0, monotonic=time.monotonic, sleep=time.sleep)

    await asyncio.gather(*(messenger.send(im(str(1000 + n), n)) for n in range(5)))

    assert time.sleeps == [0.25, 0.5, 0.75, 1.0]  # each waits its 1/rate turn behind the others
    time.now += 10
    time.sleeps.clear()
    await messenger.send(im("1001"))
    assert time.sleeps == []  # tokens came back with time
    assert len(fake.requests) == 6
    await messenger.close()


# ---------------------------------------------------------------- settings and the registry


async def test_the_registry_builds_it_from_the_im_settings_with_each_process_share(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = telegram_settings(tmp_path, fake, "tg_shop", rate_per_second=30.0, max_in_flight=20)
    registry = Registry(settings, share=1 / 4)

    messenger = registry.messenger("im", "tg_shop")

    assert isinstance(messenger, TelegramBot) and isinstance(messenger, Messenger)
    assert messenger.channel == "im" and messenger.provider == "tg_shop"
    assert messenger.rate_per_second == pytest.approx(7.5) and messenger.bucket.rate == pytest.approx(7.5)
    assert messenger.max_in_flight == 5
    assert registry.rate("im", "tg_shop") == 30.0  # windows are sized by the whole node's rate
    assert await messenger.send(im("1001")) == "1001:1"
    assert fake.requests[0].path == f"/bot{fake.token}/sendMessage"
    await registry.close()


def test_the_token_comes_from_the_environment(
    tmp_path: Path, fake: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPSLOT_IM__TELEGRAM__TOKEN", fake.token)
    settings = Settings(
        config_dir=tmp_path, var_dir=tmp_path, im={"telegram": {"kind": "telegram", "base_url": fake.url}}
    )

    messenger = Registry(settings).messenger("im", "telegram")

    assert isinstance(messenger, TelegramBot) and messenger.provider == "telegram"
    assert fake.token not in repr(messenger) and fake.token not in repr(settings)


def test_it_refuses_bad_options() -> None:
    with pytest.raises(ValueError):
        TelegramBot(token="")
    with pytest.raises(ValueError):
        TelegramBot(token="1:x", max_in_flight=0)
    with pytest.raises(ValueError):
        TelegramBot(token="1:x", timeout=0)


# ---------------------------------------------------------------- closing


async def test_close_is_idempotent_and_later_sends_are_transient(fake: FakeTelegram) -> None:
    messenger = make(fake)
    await messenger.send(im("1001"))
    client = messenger._http

    await messenger.close()
    await messenger.close()

    assert client.closed and client.open_connections == 0
    with pytest.raises(TransientSendError):
        await messenger.send(im("1002"))
    assert len(fake.requests) == 1


async def test_close_lets_a_request_in_flight_finish(fake: FakeTelegram) -> None:
    fake.default = slow(0.2)
    messenger = make(fake)
    sending = asyncio.create_task(messenger.send(im("1001")))
    while not fake.requests:
        await asyncio.sleep(0.01)

    await messenger.close()

    assert await sending == "1001:1"


async def test_it_takes_text_messages_only(bot: TelegramBot) -> None:
    with pytest.raises(TypeError):
        await bot.send(envelope("a@b.example"))


# ---------------------------------------------------------------- classify alone


def test_classify_keys_on_the_description_and_retry_after_not_the_code() -> None:
    blocked = classify(418, {"ok": False, "error_code": 418, "description": "Forbidden: user is deactivated"})
    waits = classify(500, {"ok": False, "description": "busy", "parameters": {"retry_after": 12}})
    header = classify(429, {}, retry_after="9")
    busy_server = classify(503, {}, retry_after="9")  # a 5xx may have sent it, whatever it asks
    gone = classify(403, {"ok": False, "error_code": 403, "description": "Bad Request: CHAT NOT FOUND"})

    assert isinstance(blocked, PermanentSendError) and blocked.suppress and blocked.code == 418
    assert isinstance(waits, TransientSendError) and waits.retry_after == 12.0
    assert isinstance(header, TransientSendError) and header.retry_after == 9.0
    assert isinstance(busy_server, AmbiguousSendError)
    assert isinstance(gone, PermanentSendError) and not gone.suppress


# ---------------------------------------------------------------- the fake itself


async def test_the_fake_takes_a_form_body_like_telegram(fake: FakeTelegram) -> None:
    markup = json.dumps({"inline_keyboard": [[{"text": "Go", "url": "https://x.example/"}]]})
    form = {"chat_id": "1001", "text": "<b>Hi</b> there", "parse_mode": "HTML", "reply_markup": markup}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{fake.url}/bot{fake.token}/sendMessage", data=form) as response:
            answer = await response.json()
        async with session.post(f"{fake.url}/bot{fake.token}/sendMessage", data={"chat_id": "1"}) as response:
            empty = (response.status, await response.json())
        async with session.post(f"{fake.url}/bot{fake.token}/sendMessage", data={**form, "text": "a & b"}) as response:
            unescaped = (response.status, await response.json())

    assert answer["ok"] is True and answer["result"]["text"] == "Hi there"
    assert answer["result"]["entities"] == [{"offset": 0, "length": 2, "type": "bold"}]
    assert answer["result"]["chat"]["id"] == 1001 and answer["result"]["message_id"] == 1
    assert empty == (400, {"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"})
    assert unescaped[0] == 400 and "can't parse entities" in unescaped[1]["description"]
    assert fake.messages[0].reply_markup == json.loads(markup)
