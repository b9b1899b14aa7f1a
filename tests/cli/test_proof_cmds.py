"""``topslot send-test``: real proofs to a real SMTP server (aiosmtpd) and to the fake Twilio, links
clicked through the real tracking server, and nothing written to the ledger, coupons or events."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from cli_support import EXAMPLE, REPO, db_rows, run
from sqlalchemy import func, select

from topslot.cli.proof_cmds import ProofProblem, parse_addresses
from topslot.clock import SystemClock
from topslot.links.keys import load_keyring
from topslot.links.short import verify_short
from topslot.links.tokens import TEST_DELIVERY_ID, verify
from topslot.settings import load_settings
from topslot.store.db import open_engine
from topslot.store.schema import coupon_codes, deliveries, events, links, suppressions
from topslot.tracking.server import TrackingOptions, TrackingServer

sys.path.insert(0, str(REPO / "tests"))
from channels.fake_im_gateway import FakeImGateway  # noqa: E402
from channels.fake_twilio import FakeTwilio, refuse  # noqa: E402

CAMPAIGN = "mothers-day-2027"
COUNTED = (deliveries, coupon_codes, events, suppressions)


class Inbox:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802 - aiosmtpd's hook
        self.envelopes.append(envelope)
        return f"250 2.0.0 Ok: queued as P{len(self.envelopes)}"

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(e.content, policy=policy.default) for e in self.envelopes]  # type: ignore[misc]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


@contextmanager
def in_thread(fake: Any) -> Iterator[Any]:
    """An HTTP fake on its own event loop in a thread (the command runs its own loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.__aenter__(), loop).result(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def twilio() -> Iterator[FakeTwilio]:
    with in_thread(FakeTwilio(script={"+14155550199": refuse(21610)})) as fake:
        yield fake


def make_config(tmp_path: Path, extra: str = "", *, contacts: bool = True, tracking_port: int | None = None) -> Path:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config" / "campaigns", config / "campaigns")
    var = tmp_path / "var"
    (config / "topslot.yaml").write_text(
        f"database_url: sqlite+aiosqlite:///{var / 'topslot.db'}\nvar_dir: {var}\n"
        f"templates_dir: {REPO / 'templates'}\n"
        + (
            f"tracking_base_url: http://127.0.0.1:{tracking_port}\ntracking_port: {tracking_port}\n"
            if tracking_port
            else "tracking_base_url: https://t.shop.example.com\n"
        )
        + "compliance: {postal_address: 'Example Shop, 1 Example Road, Shanghai', sender_identity: Example Shop}\n"
        + extra,
        encoding="utf-8",
    )
    if contacts:
        code, _, err = run("contacts", "import", str(EXAMPLE / "contacts.csv"), "--config", str(config))
        assert code == 0, err
        code, _, err = run("events", "import", str(EXAMPLE / "events.csv"), "--config", str(config))
    else:
        code, _, err = run("db", "upgrade", "--config", str(config))
    assert code == 0, err
    return config


def counts(config: Path) -> list[int]:
    db = config.parent / "var" / "topslot.db"
    return [db_rows(db, select(func.count()).select_from(table))[0][0] for table in COUNTED]


def smtp_settings(port: int) -> str:
    return f"smtp: {{local: {{host: 127.0.0.1, port: {port}, tls: none, pool_size: 1}}}}\n"


def test_email_proofs_reach_a_real_smtp_server_marked_as_tests(tmp_path: Path, smtp: Any) -> None:
    controller, inbox = smtp
    config = make_config(tmp_path, smtp_settings(controller.port), tracking_port=free_port())
    before = counts(config)

    code, out, err = run(
        "send-test", CAMPAIGN, "--to", "qa@shop.example, boss@shop.example", "--contact", "C000001",
        "--config", str(config),
    )  # fmt: skip

    assert code == 0, err
    assert "rendered for contact C000001" in err
    lines = out.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"sent email proof to qa@shop\.example via smtp: \S+", lines[0]), lines[0]
    assert lines[1].startswith("sent email proof to boss@shop.example via smtp: ")
    assert sorted(e.rcpt_tos[0] for e in inbox.envelopes) == ["boss@shop.example", "qa@shop.example"]
    mails = inbox.messages()
    assert len({m["Message-ID"] for m in mails}) == 2  # each proof its own Message-ID
    keyring = load_keyring(load_settings(config))
    for mail in mails:
        assert mail["Subject"] == "[TEST] A gift for Mom, Lena"
        assert mail["X-Topslot-Test"] == "proof"
        text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "TEST-MOMPROOF00000" in text and "TEST-MOMPROOF00000" in html
        tokens = re.findall(r"/c/([A-Za-z0-9_-]+)", html)
        assert tokens
        assert {verify(t, keyring, "click").delivery_id for t in tokens} == {TEST_DELIVERY_ID}
        unsubscribe = re.search(r"/u/([A-Za-z0-9_-]+)", mail["List-Unsubscribe"])
        assert unsubscribe and verify(unsubscribe.group(1), keyring, "unsubscribe").delivery_id == TEST_DELIVERY_ID
    assert counts(config) == before == [0, 0, 0, 0]  # nothing in the ledger, coupons or events

    # a recipient of the proof opens it, clicks and unsubscribes: through the real tracking server
    html = mails[0].get_body(("html",)).get_content()  # type: ignore[union-attr]
    asyncio.run(_click_through(config, html))
    assert counts(config) == [0, 0, 0, 0]


async def _click_through(config: Path, html: str) -> None:
    settings = load_settings(config)
    engine = open_engine(settings.database_url)
    server = TrackingServer(
        engine, load_keyring(settings), SystemClock(), TrackingOptions.from_settings(settings, flush_interval=0.01)
    )
    await server.start()
    try:
        click = re.search(r'href="(http://127\.0\.0\.1:\d+/c/[^"]+)"', html)
        pixel = re.search(r'src="(http://127\.0\.0\.1:\d+/o/[^"]+)"', html)
        unsubscribe = re.search(r'href="(http://127\.0\.0\.1:\d+/u/[^"]+)"', html)
        assert click and pixel and unsubscribe
        async with aiohttp.ClientSession() as session:
            async with session.get(click.group(1), allow_redirects=False) as answer:
                assert answer.status == 302
                assert answer.headers["Location"].startswith("https://shop.example.com/")
                assert "tsid=" in answer.headers["Location"]
            async with session.get(pixel.group(1)) as answer:
                assert answer.status == 200
            async with session.post(unsubscribe.group(1), data={"List-Unsubscribe": "One-Click"}) as answer:
                assert answer.status == 200
    finally:
        await server.close()
        await engine.dispose()
    assert server.stats.accepted == 0


def test_sms_proof_goes_through_twilio_with_a_test_prefix(
    tmp_path: Path, twilio: FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOPSLOT_TWILIO__AUTH_TOKEN", twilio.auth_token)
    extra = (
        f"twilio: {{account_sid: {twilio.account_sid}, "
        f"from_number: '{twilio.phone_number}', base_url: '{twilio.url}', timeout_seconds: 5}}\n"
    )
    config = make_config(tmp_path, extra)

    code, out, err = run("send-test", CAMPAIGN, "--to", "+14155550101", "--channel", "sms", "--config", str(config))

    assert code == 0, err
    assert "the first of the audience" in err  # no --contact: a real contact of the segment
    (message,) = twilio.messages.values()
    assert out.strip() == f"sent sms proof to +14155550101 via twilio: {message.sid}"
    assert message.to == "+14155550101"
    assert message.body.startswith("[TEST] Example Shop: ")
    assert "TEST-MOMPROOF00000" in message.body
    short = re.search(r"/s/([A-Za-z0-9_-]{26})", message.body)
    assert short
    assert verify_short(short.group(1), load_keyring(load_settings(config))).delivery_id == TEST_DELIVERY_ID
    assert counts(config) == [0, 0, 0, 0]
    assert db_rows(config.parent / "var" / "topslot.db", select(func.count()).select_from(links))[0][0] >= 1

    code, out, err = run("send-test", CAMPAIGN, "--to", "+14155550199", "--channel", "sms", "--config", str(config))
    assert code == 1, (out, err)
    assert out.startswith("refused sms proof to +14155550199 by twilio: ")


def with_im(config: Path, provider: str = "") -> None:
    """Add IM to the example campaign (through ``provider``, or none: the outbox)."""
    yaml = config / "campaigns" / f"{CAMPAIGN}.yaml"
    text = yaml.read_text(encoding="utf-8").replace("channels: [email, sms]", "channels: [email, sms, im]")
    named = f"provider: {provider}, " if provider else ""
    text = text.replace(
        "  sms: {body: mothers-day/sms.txt.j2}\n",
        "  sms: {body: mothers-day/sms.txt.j2}\n"
        f'  im: {{{named}body: mothers-day/im.txt.j2, title: "A gift for Mom, {{{{ contact.first_name }}}}"}}\n',
    )
    yaml.write_text(text, encoding="utf-8")


def test_im_proofs_through_a_webhook_gateway_each_have_their_own_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with in_thread(FakeImGateway()) as gateway:
        monkeypatch.setenv("TOPSLOT_IM__WECOM__SECRET", gateway.secret)
        config = make_config(tmp_path, f"im: {{wecom: {{kind: webhook, url: '{gateway.url}'}}}}\n", contacts=False)
        with_im(config, "wecom")

        code, out, err = run(
            "send-test", CAMPAIGN, "--to", "zhangsan,wecom:lisi", "--channel", "im", "--config", str(config)
        )

        assert code == 0, err
        assert out.splitlines()[0].startswith("sent im proof to wecom:zhangsan via wecom: wecom:gw-")
        assert [m.recipient for m in gateway.messages.values()] == ["zhangsan", "lisi"]  # two keys: both forwarded
        assert gateway.duplicates == 0
        for request in gateway.requests:
            assert request.verified and request.key.startswith("test-")
            assert request.payload["delivery_id"] == 0 and request.payload["test"] is True
            assert request.payload["text"].startswith("[TEST] ")
            assert request.payload["card"]["coupon"] == "TEST-MOMPROOF00000"
    assert counts(config) == [0, 0, 0, 0]


def test_im_proof_without_an_im_provider_goes_to_the_outbox_file(tmp_path: Path) -> None:
    config = make_config(tmp_path, contacts=False)
    with_im(config)

    code, out, err = run("send-test", CAMPAIGN, "--to", "telegram:12345", "--channel", "im", "--config", str(config))

    assert code == 0, err
    assert out.startswith("sent im proof to telegram:12345 via outbox: ")
    assert "written, not sent" in out
    (line,) = (tmp_path / "var" / "outbox" / "im.jsonl").read_text(encoding="utf-8").splitlines()
    written = json.loads(line)
    assert written["to"] == "telegram:12345"
    assert written["body"].startswith("[TEST] ")
    assert written["card"]["title"] == "[TEST] A gift for Mom, Mei"
    assert written["card"]["coupon"] == "TEST-MOMPROOF00000"
    assert counts(config) == [0, 0, 0, 0]


def test_without_contacts_a_sample_contact_is_used(tmp_path: Path, smtp: Any) -> None:
    controller, inbox = smtp
    config = make_config(tmp_path, smtp_settings(controller.port), contacts=False)

    code, out, err = run("send-test", CAMPAIGN, "--to", "qa@shop.example", "--config", str(config))

    assert code == 0, err
    assert "a made-up sample contact" in err
    assert inbox.messages()[0]["Subject"].startswith("[TEST] ")


@pytest.mark.parametrize(
    ("channel", "to", "wrong"),
    [
        ("email", "qa@shop.example,not-an-address", "'not-an-address'"),
        ("email", "a b@shop.example", "'a b@shop.example'"),
        ("sms", "+1 415 555 0101", "E.164"),
        ("sms", "4155550101", "E.164"),
        ("email", " , ", "at least one address"),
    ],
)
def test_bad_addresses_are_refused_before_anything_is_sent(
    tmp_path: Path, smtp: Any, channel: str, to: str, wrong: str
) -> None:
    controller, inbox = smtp
    config = make_config(tmp_path, smtp_settings(controller.port), contacts=False)

    code, out, err = run("send-test", CAMPAIGN, "--to", to, "--channel", channel, "--config", str(config))

    assert code == 2
    assert wrong in err and "--to" in err
    assert out == "" and inbox.envelopes == []


def test_settings_problems_exit_2(tmp_path: Path) -> None:
    config = make_config(tmp_path, contacts=False)
    assert run("send-test", "nope", "--to", "qa@shop.example", "--config", str(config))[0] == 2
    assert run("send-test", CAMPAIGN, "--to", "qa@shop.example", "--channel", "fax", "--config", str(config))[0] == 2
    code, _, err = run("send-test", CAMPAIGN, "--to", "qa@shop.example", "--contact", "C999", "--config", str(config))
    assert code == 2 and "no contact" in err


def test_im_addresses() -> None:
    assert parse_addresses("12345, telegram:678", "im", "telegram") == ["telegram:12345", "telegram:678"]
    assert parse_addresses("whatsapp:+14155550101", "im", "whatsapp") == ["whatsapp:+14155550101"]
    for bad, provider in (("whatsapp:12ab", "whatsapp"), ("wecom:1", "telegram"), ("a b", "telegram"), ("1", None)):
        with pytest.raises(ProofProblem, match="IM id"):
            parse_addresses(bad, "im", provider)
    assert parse_addresses("QA@Shop.example,QA@Shop.example", "email") == ["QA@Shop.example"]


def test_a_test_coupon_never_verifies(tmp_path: Path) -> None:
    config = make_config(tmp_path, contacts=False)
    code, _, err = run("coupons", "verify", "TEST-MOMPROOF00000", "--config", str(config))
    assert code == 1
    assert "a test coupon of a proof (topslot send-test): never valid" in err
