"""WhatsApp through Twilio: the real ``twilio`` client over HTTP against a fake Twilio (fake_twilio.py).

Every outcome is checked at both ends: the error the messenger raises, and what reached the fake
(exactly one POST per send, never a ``Body``; a message WhatsApp cannot take sends nothing at all).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from channels.fake_twilio import ACCEPT, DROP, Behaviour, FakeTwilio, refuse, server_error
from topslot.channels.base import ContentTemplate, Messenger, TextMessage
from topslot.channels.http import basic_auth
from topslot.channels.registry import Registry
from topslot.channels.twilio_sms import BUSY_BACKOFF, TwilioSms
from topslot.channels.twilio_whatsapp import (
    SENDER_LIMIT_BACKOFF,
    TwilioWhatsApp,
    classify_whatsapp,
    content_variables,
    whatsapp_address,
)
from topslot.delivery import SuppressionReason
from topslot.errors import AmbiguousSendError, PermanentSendError, TransientSendError
from topslot.settings import Settings

SENDER = "+14155238886"
SERVICE = "MG" + "fedcba9876543210" * 2
CONTENT = "HX" + "0123456789abcdef" * 2
SID = re.compile(r"^SM[0-9a-f]{32}$")
TO = "whatsapp:+14155550100"


@pytest.fixture
async def fake() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio() as server:
        yield server


def wa_settings(tmp_path: Path, fake: FakeTwilio, *, twilio: dict[str, Any] | None = None, **provider: Any) -> Settings:
    return Settings(
        config_dir=tmp_path,
        var_dir=tmp_path,
        tracking_base_url="https://t.shop.example/",
        twilio={
            "account_sid": fake.account_sid,
            "auth_token": fake.auth_token,
            "from_number": "+15005550006",
            "base_url": fake.url,
            **(twilio or {}),
        },
        im={"whatsapp": {"kind": "whatsapp", "from_number": SENDER, "rate_per_second": 10_000.0, **provider}},
        compliance={"sender_identity": "Example Shop"},
    )


def make(fake: FakeTwilio, **options: Any) -> TwilioWhatsApp:
    values: dict[str, Any] = {
        "account_sid": fake.account_sid,
        "auth_token": fake.auth_token,
        "from_number": SENDER,
        "base_url": fake.url,
        "rate_per_second": 10_000.0,
        "timeout": 5.0,
        "jitter": lambda: 0.5,
    }
    values.update(options)
    return TwilioWhatsApp(**values)


@pytest.fixture
async def wa(fake: FakeTwilio) -> AsyncIterator[TwilioWhatsApp]:
    messenger = make(fake)
    yield messenger
    await messenger.close()


def push(
    to: str = TO, n: int = 1, variables: dict[str, str] | None = None, sid: str = CONTENT, template: bool = True
) -> TextMessage:
    vars_ = {"1": "Ada", "2": "MOM20"} if variables is None else variables
    return TextMessage(n, to, "Mother's Day: 20% off", template=ContentTemplate(sid, vars_) if template else None)


# ---------------------------------------------------------------- accepted


async def test_a_template_is_created_from_one_twilio_shaped_request(tmp_path: Path, fake: FakeTwilio) -> None:
    registry = Registry(wa_settings(tmp_path, fake))
    messenger = registry.messenger("im", "whatsapp")
    assert isinstance(messenger, TwilioWhatsApp) and isinstance(messenger, Messenger)
    assert (messenger.channel, messenger.provider) == ("im", "whatsapp")

    sid = await messenger.send(
        push(variables={"1": "母亲", "2": "MOM20", "10": "x", "3": "https://t.shop.example/c/1"})
    )

    assert SID.match(sid)
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json")
    assert request.auth == (fake.account_sid, fake.auth_token)
    assert request.form == {
        "To": TO,
        "From": f"whatsapp:{SENDER}",
        "ContentSid": CONTENT,
        "ContentVariables": '{"1":"母亲","2":"MOM20","3":"https://t.shop.example/c/1","10":"x"}',
        "StatusCallback": "https://t.shop.example/twilio/status",
    }
    assert "Body" not in request.form  # a template is never sent as free-form text (63016)
    created = fake.messages[sid]
    assert created.to == TO and created.content_sid == CONTENT
    assert created.content_variables == {"1": "母亲", "2": "MOM20", "3": "https://t.shop.example/c/1", "10": "x"}
    await registry.close()


async def test_a_messaging_service_sends_instead_of_the_from_number(tmp_path: Path, fake: FakeTwilio) -> None:
    settings = wa_settings(tmp_path, fake, from_number=None, messaging_service_sid=SERVICE)
    registry = Registry(settings)

    await registry.messenger("im", "whatsapp").send(push())

    (request,) = fake.requests
    assert request.form["MessagingServiceSid"] == SERVICE and "From" not in request.form
    assert request.form["To"] == TO
    await registry.close()


async def test_without_status_callbacks_none_is_asked_for(tmp_path: Path, fake: FakeTwilio) -> None:
    registry = Registry(wa_settings(tmp_path, fake, twilio={"status_callbacks": False}))

    await registry.messenger("im", "whatsapp").send(push())

    assert "StatusCallback" not in fake.requests[0].form
    await registry.close()


async def test_a_template_without_variables_sends_none(fake: FakeTwilio, wa: TwilioWhatsApp) -> None:
    await wa.send(push(variables={}))

    assert "ContentVariables" not in fake.requests[0].form
    assert fake.requests[0].form["ContentSid"] == CONTENT


@pytest.mark.parametrize(
    ("recipient", "to"),
    [
        ("whatsapp:+14155550100", "whatsapp:+14155550100"),
        ("whatsapp:14155550100", "whatsapp:+14155550100"),  # a WhatsApp id as WhatsApp writes it
        ("whatsapp:+1 415-555-0100", "whatsapp:+14155550100"),
        ("wa:+8613800138000", "whatsapp:+8613800138000"),  # a provider named otherwise: still whatsapp:
    ],
)
async def test_the_recipient_is_whatsapp_e164(fake: FakeTwilio, wa: TwilioWhatsApp, recipient: str, to: str) -> None:
    await wa.send(push(to=recipient))

    assert fake.requests[0].form["To"] == to


def test_whatsapp_address() -> None:
    assert whatsapp_address("+442071838750") == "whatsapp:+442071838750"
    assert whatsapp_address("whatsapp:+442071838750") == "whatsapp:+442071838750"
    assert whatsapp_address("＋４４２０７１８３８７５０") == "whatsapp:+442071838750"  # full-width
    for junk in ("", "alice", "+1", "12", "+" + "1" * 40):
        assert whatsapp_address(junk) is None


def test_content_variables_are_a_compact_json_object_in_numeric_order() -> None:
    text = content_variables({"2": "b", "10": "j", "1": 'a "q" & é'})
    assert text == '{"1":"a \\"q\\" & é","2":"b","10":"j"}'
    assert json.loads(text) == {"1": 'a "q" & é', "2": "b", "10": "j"}


async def test_each_of_n_processes_gets_its_share(tmp_path: Path, fake: FakeTwilio) -> None:
    registry = Registry(wa_settings(tmp_path, fake, rate_per_second=80.0, max_in_flight=20), share=1 / 4)

    messenger = registry.messenger("im", "whatsapp")

    assert isinstance(messenger, TwilioWhatsApp)
    assert messenger.rate_per_second == pytest.approx(20.0) and messenger.bucket.rate == pytest.approx(20.0)
    assert messenger.max_in_flight == 5
    assert registry.rate("im", "whatsapp") == 80.0
    assert isinstance(registry.messenger("sms"), TwilioSms)  # the same account still sends SMS
    await registry.close()


async def test_the_provider_is_named_by_its_settings(tmp_path: Path, fake: FakeTwilio) -> None:
    settings = Settings(
        config_dir=tmp_path,
        var_dir=tmp_path,
        twilio={"account_sid": fake.account_sid, "auth_token": fake.auth_token, "from_number": "+15005550006"},
        im={"wa_eu": {"kind": "whatsapp", "from_number": SENDER}},
        compliance={"sender_identity": "Example Shop"},
    )
    registry = Registry(settings)

    messenger = registry.messenger("im", "wa_eu")

    assert isinstance(messenger, TwilioWhatsApp) and messenger.provider == "wa_eu"
    await registry.close()


# ---------------------------------------------------------------- refused before anything is sent


async def test_a_message_without_a_template_is_refused_and_nothing_is_sent(
    fake: FakeTwilio, wa: TwilioWhatsApp
) -> None:
    with pytest.raises(PermanentSendError) as raised:
        await wa.send(push(template=False))

    assert raised.value.code == "template_required" and not raised.value.suppress
    assert "content_sid" in str(raised.value) and "template" in str(raised.value)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (push(to="whatsapp:alice"), "invalid_to"),
        (push(to="whatsapp:"), "invalid_to"),
        (push(sid="HX123"), "invalid_content_sid"),
        (push(sid="MG" + "0" * 32), "invalid_content_sid"),
    ],
)
async def test_what_twilio_would_refuse_is_refused_here(
    fake: FakeTwilio, wa: TwilioWhatsApp, message: TextMessage, code: str
) -> None:
    with pytest.raises(PermanentSendError) as raised:
        await wa.send(message)

    assert raised.value.code == code and not raised.value.suppress
    assert fake.requests == []


# ---------------------------------------------------------------- refused by Twilio

R = SuppressionReason
REFUSALS = [
    # (behaviour, error kind, suppress reason or False for "not suppressed"; None: not permanent)
    (refuse(63016), PermanentSendError, False),  # outside the session window: template required
    (refuse(63003), PermanentSendError, R.HARD_BOUNCE),  # To invalid / inactive on WhatsApp
    (refuse(63024), PermanentSendError, R.HARD_BOUNCE),  # not a WhatsApp user
    (refuse(63014), PermanentSendError, R.IM_BLOCKED),  # the recipient blocked the business
    (refuse(21610), PermanentSendError, R.SMS_STOP),  # Twilio holds a STOP for this address
    (refuse(63032), PermanentSendError, False),  # Meta's marketing experiment: not the user's choice
    (refuse(63049), PermanentSendError, False),  # Meta withheld the marketing message
    (refuse(21211), PermanentSendError, False),  # invalid To
    (refuse(21655), PermanentSendError, False),  # Twilio does not know the content SID
    (refuse(63018), TransientSendError, None),  # the sender's messaging limit
    (refuse(63007), TransientSendError, None),  # From is no WhatsApp sender of the account: settings
    (refuse(20429), TransientSendError, None),
    (refuse(20003), TransientSendError, None),
    (server_error(500), AmbiguousSendError, None),
    (Behaviour(status=201, raw='{"status": "queued"}'), AmbiguousSendError, None),
]


@pytest.mark.parametrize(("behaviour", "kind", "reason"), REFUSALS)
async def test_each_answer_maps_to_its_error_kind_after_exactly_one_request(
    fake: FakeTwilio, wa: TwilioWhatsApp, behaviour: Behaviour, kind: type[Exception], reason: object
) -> None:
    fake.script[TO] = behaviour

    with pytest.raises(kind) as raised:
        await wa.send(push())

    assert type(raised.value) is kind
    if isinstance(raised.value, PermanentSendError):
        assert raised.value.suppress is bool(reason)
        if reason:
            assert raised.value.suppress_reason == reason
    if behaviour.code is not None:
        assert raised.value.code == behaviour.code  # type: ignore[attr-defined]
    assert len(fake.requests) == 1  # never retried
    assert fake.delivered_to() == []


async def test_the_senders_limit_honours_retry_after_else_waits_minutes(fake: FakeTwilio, wa: TwilioWhatsApp) -> None:
    fake.script[TO] = refuse(63018, retry_after="90")
    fake.script["whatsapp:+14155550101"] = refuse(63018)
    fake.script["whatsapp:+14155550102"] = refuse(20429)

    with pytest.raises(TransientSendError) as told:
        await wa.send(push())
    with pytest.raises(TransientSendError) as untold:
        await wa.send(push(to="whatsapp:+14155550101"))
    with pytest.raises(TransientSendError) as busy:
        await wa.send(push(to="whatsapp:+14155550102"))

    assert told.value.retry_after == 90.0 and told.value.code == 63018
    assert untold.value.retry_after == pytest.approx(SENDER_LIMIT_BACKOFF * 1.5)  # jitter 0.5
    assert busy.value.retry_after == pytest.approx(BUSY_BACKOFF * 1.5)  # SMS's 429 handling


async def test_a_sender_that_is_not_whatsapp_says_what_to_fix(fake: FakeTwilio, wa: TwilioWhatsApp) -> None:
    fake.script[TO] = refuse(63007)

    with pytest.raises(TransientSendError) as raised:
        await wa.send(push())

    assert "im.whatsapp.from_number" in str(raised.value)


async def test_a_session_window_refusal_says_a_template_is_needed(fake: FakeTwilio, wa: TwilioWhatsApp) -> None:
    fake.script[TO] = refuse(63016)

    with pytest.raises(PermanentSendError) as raised:
        await wa.send(push())

    assert "approved template" in str(raised.value)


async def test_a_busy_recipient_is_taken_once_twilio_has_room(fake: FakeTwilio, wa: TwilioWhatsApp) -> None:
    fake.script[TO] = [refuse(63018), ACCEPT]

    with pytest.raises(TransientSendError):
        await wa.send(push())
    sid = await wa.send(push())

    assert fake.delivered_to() == [TO] and fake.messages[sid]
    assert [r.answered for r in fake.requests] == [400, 201]


async def test_a_connection_dropped_after_the_request_is_ambiguous(fake: FakeTwilio, wa: TwilioWhatsApp) -> None:
    fake.script[TO] = DROP

    with pytest.raises(AmbiguousSendError) as raised:
        await wa.send(push())

    assert raised.value.code == "dropped" and len(fake.requests) == 1
    assert fake.delivered_to() == [TO]


async def test_close_is_idempotent_and_later_sends_are_transient(fake: FakeTwilio) -> None:
    messenger = make(fake)
    await messenger.send(push())

    await messenger.close()
    await messenger.close()

    with pytest.raises(TransientSendError):
        await messenger.send(push(template=False))  # closed comes first, even for a message it would refuse
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (400, 63016, PermanentSendError),
        (429, 63018, TransientSendError),
        (400, 63024, PermanentSendError),
        (400, 400, PermanentSendError),
        (404, None, TransientSendError),
        (503, None, AmbiguousSendError),
    ],
)
def test_classify_whatsapp(status: int, code: int | None, kind: type[Exception]) -> None:
    assert type(classify_whatsapp(status, code, "text", jitter=lambda: 0.0)) is kind


# ---------------------------------------------------------------- the fake, as Twilio takes WhatsApp


async def test_the_fake_validates_whatsapp_like_twilio(fake: FakeTwilio) -> None:
    raw = [
        ({"ContentSid": "HX1"}, 21655),
        ({"ContentSid": CONTENT, "ContentVariables": "[1, 2]"}, 21656),
        ({"ContentSid": CONTENT, "ContentVariables": '{"1": 5}'}, 21656),
        ({"ContentSid": CONTENT, "To": "+14155550100"}, 30016),  # a whatsapp: sender to an SMS number
        ({"ContentSid": CONTENT, "To": "whatsapp:555"}, 21211),
    ]
    credentials = {"Authorization": basic_auth(fake.account_sid, fake.auth_token)}
    async with aiohttp.ClientSession() as session:
        for fields, code in raw:
            form = {"To": TO, "From": f"whatsapp:{SENDER}", **fields}
            async with session.post(f"{fake.url}{fake.messages_path}", data=form, headers=credentials) as response:
                assert (response.status, (await response.json())["code"]) == (400, code)
    assert fake.messages == {}


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    async def hook(request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        assert RequestValidator(FakeTwilio.auth_token).validate(
            str(request.url), form, request.headers.get("X-Twilio-Signature", "")
        )
        seen.append(form)
        return web.Response(text="<Response/>", content_type="text/xml")

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    await runner.cleanup()


async def test_the_fake_posts_whatsapp_status_callbacks_and_inbound_messages(
    fake: FakeTwilio, receiver: tuple[str, list[dict[str, str]]]
) -> None:
    base, seen = receiver
    messenger = make(fake, status_callback=f"{base}/twilio/status")
    sid = await messenger.send(push())

    await fake.post_status(sid, "failed", error_code=63024)
    await fake.post_inbound("whatsapp:+14155550100", "STOP", f"{base}/twilio/inbound")

    status, inbound = seen
    assert (status["To"], status["From"], status["MessageStatus"], status["ErrorCode"]) == (
        TO,
        f"whatsapp:{SENDER}",
        "failed",
        "63024",
    )
    assert (status["ChannelPrefix"], status["ChannelToAddress"]) == ("whatsapp", "+14155550100")
    assert (inbound["From"], inbound["To"], inbound["Body"], inbound["WaId"]) == (
        "whatsapp:+14155550100",
        f"whatsapp:{fake.phone_number}",
        "STOP",
        "14155550100",
    )
    await messenger.close()
