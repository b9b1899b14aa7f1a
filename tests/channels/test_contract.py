"""One contract suite over every messenger (``topslot.channels.base.Messenger``), each against the
real thing: the outboxes against real files, SMTP against a real SMTP server over TCP, Twilio
against a fake Twilio over HTTP, the test kit in memory.

A provider joins the suite with one ``Harness``: how to build its messenger (through the registry
and real settings where it has settings), a message whose address makes the provider accept,
refuse, fail for now or answer ambiguously, and what the provider really received.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from channels import fake_im_gateway as gw
from channels import fake_telegram
from channels.fake_twilio import ACCEPT, DROP, FakeTwilio, refuse
from channels.scripted_smtp import ScriptedSmtpServer
from channels.support import envelope, server_config
from topslot.channel import CHANNELS
from topslot.channels.base import ContentTemplate, EmailEnvelope, Message, Messenger, TextMessage, on_handover
from topslot.channels.registry import Registry
from topslot.channels.testing import Answer, RecordingMessenger, ScriptedMessenger
from topslot.errors import AmbiguousSendError, PermanentSendError, TransientSendError
from topslot.settings import Settings

Outcome = Literal["accept", "refuse", "retry", "ambiguous"]


ALL: frozenset[Outcome] = frozenset({"accept", "refuse", "retry", "ambiguous"})


@dataclass
class Harness:
    """One provider under the contract."""

    messenger: Messenger
    message: Callable[[Outcome, int], Message]  # a message whose address makes the provider answer so
    delivered: Callable[[], list[str]]  # addresses the provider really took, in any order


def text(to: str, n: int) -> TextMessage:
    return TextMessage(n, to, f"Message {n} 母亲节快乐")


# ---------------------------------------------------------------- the harnesses


@asynccontextmanager
async def maildir(tmp_path: Path) -> AsyncIterator[Harness]:
    registry = Registry(Settings(config_dir=tmp_path, var_dir=tmp_path / "var"))
    messenger = registry.messenger("email")

    def delivered() -> list[str]:
        new = tmp_path / "var" / "outbox" / "new"
        files = sorted(new.iterdir()) if new.is_dir() else []
        return [f.read_bytes().split(b"\r\n", 2)[1].removeprefix(b"Delivered-To: ").decode() for f in files]

    yield Harness(messenger, lambda outcome, n: envelope(f"person{n}@a.example"), delivered)
    await registry.close()


def _text_outbox(channel: Literal["sms", "im"], address: Callable[[int], str]):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
        registry = Registry(Settings(config_dir=tmp_path, var_dir=tmp_path / "var"))
        messenger = registry.messenger(channel)

        def delivered() -> list[str]:
            path = tmp_path / "var" / "outbox" / f"{channel}.jsonl"
            lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
            return [json.loads(line)["to"] for line in lines]

        yield Harness(messenger, lambda outcome, n: text(address(n), n), delivered)
        await registry.close()

    return harness


sms_outbox = _text_outbox("sms", lambda n: f"+1415555{n:04d}")
im_outbox = _text_outbox("im", lambda n: f"wechat:wx{n}")


@asynccontextmanager
async def smtp(tmp_path: Path) -> AsyncIterator[Harness]:
    async with ScriptedSmtpServer() as server:
        settings = Settings(config_dir=tmp_path, var_dir=tmp_path, smtp={"main": server_config(server.port)})
        registry = Registry(settings)
        local = {"accept": "accept", "refuse": "hard-bounce", "retry": "greylist", "ambiguous": "drop-after-dot"}

        def message(outcome: Outcome, n: int) -> EmailEnvelope:
            return envelope(f"{local[outcome]}+{n}@a.example")

        def delivered() -> list[str]:
            return [r for m in server.accepted() for r in m.rcpt_to]

        yield Harness(registry.messenger("email"), message, delivered)
        await registry.close()


def twilio_account(fake: FakeTwilio, **extra: object) -> dict[str, object]:
    """``twilio:`` settings for the fake's account; its SMS sender (which twilio settings require) +15005550006."""
    return {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": "+15005550006",
        "base_url": fake.url,
        **extra,
    }


@asynccontextmanager
async def twilio(tmp_path: Path) -> AsyncIterator[Harness]:
    async with FakeTwilio() as fake:
        settings = Settings(
            config_dir=tmp_path,
            var_dir=tmp_path,
            twilio=twilio_account(fake, rate_per_second=10_000.0),
            compliance={"sender_identity": "Example Shop"},
        )
        registry = Registry(settings)
        prefix = {"accept": "+1415555", "refuse": "+1999100", "retry": "+1999200", "ambiguous": "+1999300"}
        answers = {"refuse": refuse(21211), "retry": [refuse(20429), ACCEPT], "ambiguous": DROP}

        def message(outcome: Outcome, n: int) -> TextMessage:
            to = f"{prefix[outcome]}{n:04d}"
            if outcome in answers:
                fake.script[to] = answers[outcome]
            return text(to, n)

        yield Harness(registry.messenger("sms"), message, fake.delivered_to)
        await registry.close()


@asynccontextmanager
async def telegram(tmp_path: Path) -> AsyncIterator[Harness]:
    async with fake_telegram.FakeTelegram() as fake:
        settings = Settings(
            config_dir=tmp_path,
            var_dir=tmp_path,
            im={"telegram": {"kind": "telegram", "token": fake.token, "base_url": fake.url, "rate_per_second": 10_000}},
        )
        registry = Registry(settings)
        first = {"accept": 1000, "refuse": 2000, "retry": 3000, "ambiguous": 4000}
        answers = {
            "refuse": fake_telegram.CHAT_NOT_FOUND,
            "retry": [fake_telegram.flood(1), fake_telegram.ACCEPT],
            "ambiguous": fake_telegram.DROP,
        }

        def message(outcome: Outcome, n: int) -> TextMessage:
            chat = str(first[outcome] + n)
            if outcome in answers:
                fake.script[chat] = answers[outcome]
            return text(f"telegram:{chat}", n)

        yield Harness(
            registry.messenger("im", "telegram"), message, lambda: [f"telegram:{c}" for c in fake.delivered_to()]
        )
        await registry.close()


@asynccontextmanager
async def whatsapp(tmp_path: Path) -> AsyncIterator[Harness]:
    async with FakeTwilio() as fake:
        settings = Settings(
            config_dir=tmp_path,
            var_dir=tmp_path,
            twilio=twilio_account(fake),
            im={"whatsapp": {"kind": "whatsapp", "from_number": "+14155238886", "rate_per_second": 10_000.0}},
            compliance={"sender_identity": "Example Shop"},
        )
        registry = Registry(settings)
        prefix = {"accept": "+1415555", "refuse": "+1999100", "retry": "+1999200", "ambiguous": "+1999300"}
        answers = {"refuse": refuse(63024), "retry": [refuse(63018), ACCEPT], "ambiguous": DROP}
        template = ContentTemplate("HX" + "0123456789abcdef" * 2, {"1": "母亲", "2": "MOM20"})

        def message(outcome: Outcome, n: int) -> TextMessage:
            to = f"whatsapp:{prefix[outcome]}{n:04d}"
            if outcome in answers:
                fake.script[to] = answers[outcome]
            return TextMessage(n, to, f"Message {n}", template=template, campaign_id="mothers-day")

        yield Harness(registry.messenger("im", "whatsapp"), message, fake.delivered_to)
        await registry.close()


@asynccontextmanager
async def im_webhook(tmp_path: Path) -> AsyncIterator[Harness]:
    async with gw.FakeImGateway() as fake:
        im = {"wecom": {"kind": "webhook", "url": fake.url, "secret": fake.secret, "rate_per_second": 10_000.0}}
        registry = Registry(Settings(config_dir=tmp_path, var_dir=tmp_path, im=im))
        answers: dict[str, gw.Script] = {
            "refuse": gw.refuse(404, "unknown user"),
            "retry": [gw.rate_limited("1"), gw.ACCEPT],
            "ambiguous": gw.DROP,
        }

        def message(outcome: Outcome, n: int) -> TextMessage:
            recipient = f"{outcome}-{n}"
            if outcome in answers:
                fake.script[recipient] = answers[outcome]
            return text(f"wecom:{recipient}", n)

        yield Harness(registry.messenger("im", "wecom"), message, fake.delivered_to)
        await registry.close()


@asynccontextmanager
async def recording(tmp_path: Path) -> AsyncIterator[Harness]:
    messenger = RecordingMessenger("sms")
    yield Harness(messenger, lambda outcome, n: text(f"+1415555{n:04d}", n), messenger.addresses)


@asynccontextmanager
async def scripted(tmp_path: Path) -> AsyncIterator[Harness]:
    tried: set[str] = set()

    def busy_once(message: Message) -> str | BaseException:  # 429 the first time, then accepted
        to = message.to if isinstance(message, TextMessage) else message.rcpt_to
        if to in tried:
            return f"SM{len(tried)}"
        tried.add(to)
        return TransientSendError("429 too many requests", code=20429)

    errors: dict[Outcome, Answer] = {
        "refuse": PermanentSendError("21211 invalid 'To'", code=21211),
        "retry": busy_once,
        "ambiguous": AmbiguousSendError("timed out after the request was written"),
    }
    script = {f"+1999000{n:04d}-{o}": e for o, e in errors.items() for n in range(100)}
    messenger = ScriptedMessenger("sms", script)

    def message(outcome: Outcome, n: int) -> TextMessage:
        return text(f"+1415555{n:04d}" if outcome == "accept" else f"+1999000{n:04d}-{outcome}", n)

    yield Harness(messenger, message, messenger.addresses)


ACCEPTS_ONLY: frozenset[Outcome] = frozenset({"accept"})  # a file or memory takes everything

HARNESSES: dict[str, tuple[Callable[[Path], AbstractAsyncContextManager[Harness]], frozenset[Outcome]]] = {
    "maildir-outbox": (maildir, ACCEPTS_ONLY),
    "sms-outbox": (sms_outbox, ACCEPTS_ONLY),
    "im-outbox": (im_outbox, ACCEPTS_ONLY),
    "smtp": (smtp, ALL),
    "twilio": (twilio, ALL),
    "im-webhook": (im_webhook, ALL),
    "whatsapp": (whatsapp, ALL),
    "telegram": (telegram, ALL),
    "recording-kit": (recording, ACCEPTS_ONLY),
    "scripted-kit": (scripted, ALL),
}


def able_to(outcome: Outcome) -> list[str]:
    """The harnesses whose provider can be made to answer ``outcome`` (the others always accept)."""
    return sorted(name for name, (_, outcomes) in HARNESSES.items() if outcome in outcomes)


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    factory, _ = HARNESSES[request.param]
    async with factory(tmp_path) as h:
        yield h


# ---------------------------------------------------------------- the contract


def test_it_describes_itself(harness: Harness) -> None:
    m = harness.messenger
    assert isinstance(m, Messenger)
    assert m.channel in CHANNELS
    assert isinstance(m.provider, str) and m.provider
    assert m.rate_per_second is None or m.rate_per_second > 0


async def test_an_accepted_message_returns_its_id_and_arrives_once(harness: Harness) -> None:
    message = harness.message("accept", 1)

    provider_id = await harness.messenger.send(message)

    assert isinstance(provider_id, str) and provider_id
    expected = message.rcpt_to if isinstance(message, EmailEnvelope) else message.to
    assert harness.delivered() == [expected]


async def test_concurrent_sends_each_arrive_once_with_distinct_ids(harness: Harness) -> None:
    messages = [harness.message("accept", n) for n in range(1, 21)]

    ids = await asyncio.gather(*(harness.messenger.send(m) for m in messages))

    assert len(set(ids)) == 20
    expected = [m.rcpt_to if isinstance(m, EmailEnvelope) else m.to for m in messages]
    assert sorted(harness.delivered()) == sorted(expected)


@pytest.mark.parametrize("harness", able_to("refuse"), indirect=True)
async def test_a_refusal_is_permanent_and_nothing_arrives(harness: Harness) -> None:
    with pytest.raises(PermanentSendError):
        await harness.messenger.send(harness.message("refuse", 1))
    assert harness.delivered() == []


@pytest.mark.parametrize("harness", able_to("retry"), indirect=True)
async def test_a_passing_failure_is_transient_nothing_arrives_and_a_retry_is_safe(harness: Harness) -> None:
    message = harness.message("retry", 1)
    with pytest.raises(TransientSendError):
        await harness.messenger.send(message)
    assert harness.delivered() == []

    assert await harness.messenger.send(message)  # the same message again, once the provider takes it
    assert harness.delivered() == [message.rcpt_to if isinstance(message, EmailEnvelope) else message.to]


@pytest.mark.parametrize("harness", able_to("ambiguous"), indirect=True)
async def test_an_ambiguous_hand_over_is_ambiguous(harness: Harness) -> None:
    with pytest.raises(AmbiguousSendError):
        await harness.messenger.send(harness.message("ambiguous", 1))


async def test_the_hand_over_is_on_record_before_anything_of_the_message_leaves(harness: Harness) -> None:
    seen_then: list[list[str]] = []

    async def hook() -> None:  # what the dispatcher's journal does: record, then let it go
        seen_then.append(harness.delivered())

    async def send() -> str:
        on_handover(hook)  # this task's own hook, as the dispatcher sets it per message
        return await harness.messenger.send(harness.message("accept", 1))

    assert await asyncio.create_task(send())
    assert seen_then == [[]]  # called once, and the provider had nothing of it yet
    assert len(harness.delivered()) == 1


async def test_a_hand_over_that_cannot_be_recorded_is_transient_and_nothing_leaves(harness: Harness) -> None:
    async def full() -> None:
        raise OSError(28, "No space left on device")

    async def send() -> str:
        on_handover(full)
        return await harness.messenger.send(harness.message("accept", 1))

    with pytest.raises(TransientSendError) as caught:
        await asyncio.create_task(send())
    assert caught.value.code == "journal"
    assert harness.delivered() == []
    assert await harness.messenger.send(harness.message("accept", 2))  # the messenger is still usable


async def test_after_close_sends_are_transient_and_close_is_idempotent(harness: Harness) -> None:
    await harness.messenger.close()
    await harness.messenger.close()
    with pytest.raises(TransientSendError):
        await harness.messenger.send(harness.message("accept", 1))
    assert harness.delivered() == []


@pytest.mark.parametrize(("timeout", "max_in_flight"), [(0, 20), (-1, 20), (15, 0)])
def test_every_http_messenger_refuses_a_timeout_or_concurrency_that_cannot_work(
    timeout: float, max_in_flight: int
) -> None:
    from topslot.channels.im_webhook import ImWebhook
    from topslot.channels.telegram import TelegramBot
    from topslot.channels.twilio_sms import TwilioSms

    builders = [
        lambda: TwilioSms(account_sid="AC" + "0" * 32, auth_token="t", from_number="+15550001111",
                          timeout=timeout, max_in_flight=max_in_flight),
        lambda: TelegramBot(token="1:t", timeout=timeout, max_in_flight=max_in_flight),
        lambda: ImWebhook("wecom", url="http://127.0.0.1:9/send", secret="s" * 16,
                          timeout=timeout, max_in_flight=max_in_flight),
    ]  # fmt: skip
    for build in builders:
        with pytest.raises(ValueError, match="timeout must be > 0 and max_in_flight >= 1"):
            build()
