"""The whole loop over real sockets: topslot sends a bucket to an SMTP relay (the scripted server)
with VERP return paths; the relay then hands a DSN, an ARF complaint and a mailto: unsubscribe to
topslot's feedback receiver over LMTP or SMTP (Python's smtplib, in a thread); the ledger and the
suppression list follow. A forged return path is refused at RCPT."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from channels.scripted_smtp import ScriptedSmtpServer, unused_port
from dispatch.fixtures import DUE, NOW, campaign, import_people, ledger_by_email, settings
from sqlalchemy import select

from topslot.bounces.receiver import FeedbackReceiver
from topslot.clock import FakeClock
from topslot.dispatch.service import DispatchService
from topslot.links.keys import load_keyring
from topslot.links.verp import delivery_of
from topslot.scheduling.scheduler import BucketScheduler
from topslot.store.db import open_engine, upgrade
from topslot.store.schema import suppressions

from .corpus import DOMAIN, values

PEOPLE = ["mei@example.net", "kai@example.org", "ana@example.com"]


async def send_bucket(engine: Any, s: Any, clock: FakeClock) -> int:
    """Plan the test campaign and send its one email bucket (``dispatch.fixtures``); rows claimed."""
    service = DispatchService(engine, s, clock, node="test-node")
    try:
        c = campaign()
        scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
        await service.on_campaigns_changed({c.id: c})
        await scheduler.on_campaigns_changed({c.id: c})
        clock.set(DUE - timedelta(minutes=1))
        return await scheduler.fire_bucket(c.id, "email", DUE)
    finally:
        await service.close()


def hand_over(protocol: str, port: int, sender: str, rcpt: str, data: bytes) -> dict[str, tuple[int, bytes]]:
    """What a relay does: one message to the receiver; the refused recipients (smtplib's dict)."""
    client = smtplib.LMTP("127.0.0.1", port) if protocol == "lmtp" else smtplib.SMTP("127.0.0.1", port)
    try:
        return client.sendmail(sender, [rcpt], data)
    finally:
        client.quit()


@pytest.mark.parametrize("protocol", ["lmtp", "smtp"])
async def test_bounces_complaints_and_mailto_unsubscribes_close_the_loop(tmp_path: Path, protocol: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'topslot.db'}"
    engine = open_engine(url)
    await upgrade(engine)
    try:
        async with ScriptedSmtpServer() as relay:
            await import_people(engine, tmp_path, PEOPLE)
            bounces = {"domain": DOMAIN, "listen_port": 0, "protocol": protocol, "soft_limit": 2}
            s = settings(tmp_path, relay.port, database_url=url, bounces=bounces)
            clock = FakeClock(NOW)
            assert await send_bucket(engine, s, clock) == len(PEOPLE)
            keyring = load_keyring(s)
            rows = await ledger_by_email(engine)
            # every message left with its own signed return path; the From header is unchanged
            sent = {m.rcpt_to[0]: m for m in relay.accepted()}
            for email in PEOPLE:
                assert sent[email].mail_from.startswith("bounce+") and sent[email].mail_from.endswith("@" + DOMAIN)
                assert delivery_of(sent[email].mail_from, keyring, "bounce") == rows[email]["id"]
                assert b"\r\nFrom: " in b"\r\n" + sent[email].data

            receiver = FeedbackReceiver(engine, keyring, s.bounces, clock)
            await receiver.start()
            try:
                assert receiver.port is not None
                mei, kai, ana = (rows[e]["id"] for e in PEOPLE)
                dsn = _filled("postfix-user-unknown", mei, "mei@example.net", sent["mei@example.net"].mail_from)
                refused = await asyncio.to_thread(
                    hand_over, protocol, receiver.port, "", sent["mei@example.net"].mail_from, dsn
                )
                assert refused == {}
                arf = _filled("yahoo-arf-complaint", kai, "kai@example.org", sent["kai@example.org"].mail_from)
                await asyncio.to_thread(
                    hand_over, protocol, receiver.port, "feedback@arf.example", f"fbl@{DOMAIN}", arf
                )
                unsubscribe = f"unsubscribe+{values(ana, keyring=keyring)['unsub']}@{DOMAIN}"
                note = b"From: ana@example.com\r\nSubject: unsubscribe\r\n\r\nplease\r\n"
                await asyncio.to_thread(hand_over, protocol, receiver.port, "ana@example.com", unsubscribe, note)
                # a forged return path never gets past RCPT
                forged = values(mei, keyring=keyring)["forged"]
                with pytest.raises(smtplib.SMTPRecipientsRefused) as refusal:
                    await asyncio.to_thread(hand_over, protocol, receiver.port, "", forged, dsn)
                assert refusal.value.recipients[forged][0] == 550
            finally:
                await receiver.close()
            after = await ledger_by_email(engine)
            assert {e: after[e]["state"] for e in PEOPLE} == {
                "mei@example.net": "bounced", "kai@example.org": "sent", "ana@example.com": "sent",
            }  # fmt: skip
            async with engine.connect() as conn:
                listed = {r.address: r.reason for r in await conn.execute(select(suppressions))}
            assert listed == {
                "mei@example.net": "hard_bounce",
                "kai@example.org": "complaint",
                "ana@example.com": "unsubscribe",
            }
    finally:
        await engine.dispose()


def _filled(name: str, delivery_id: int, rcpt: str, verp: str) -> bytes:
    from string import Template

    from .corpus import CORPUS

    text = (CORPUS / f"{name}.eml").read_text(encoding="utf-8")
    filled = Template(text).safe_substitute({**values(delivery_id, rcpt), "verp": verp})
    return filled.replace("\n", "\r\n").encode("utf-8")


class BouncingRelay:
    """An aiosmtpd relay that does what relays do: accept every message with 250, then, for a
    recipient whose mailbox does not exist (``dead-…``), send the sender a DSN (RFC 3464, built with
    Python's email package from the message it got) to its envelope sender, over SMTP, to the MX of
    the return path: topslot's feedback receiver."""

    def __init__(self, receiver_port: int):
        self.receiver_port = receiver_port
        self.accepted: list[tuple[str, list[str]]] = []
        self.bouncing: list[threading.Thread] = []
        self.refused: list[dict[str, tuple[int, bytes]]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
        self.accepted.append((envelope.mail_from, list(envelope.rcpt_tos)))
        for rcpt in envelope.rcpt_tos:
            if rcpt.startswith("dead-"):  # queued now, bounced a moment later (another connection)
                dsn = _dsn(envelope.mail_from, rcpt, envelope.original_content)
                args = ("smtp", self.receiver_port, "", envelope.mail_from, dsn)
                later = threading.Thread(target=lambda a=args: self.refused.append(hand_over(*a)))
                self.bouncing.append(later)
                later.start()
        return "250 2.0.0 Ok: queued as 4F2A"


def _dsn(return_path: str, rcpt: str, original: bytes) -> bytes:
    from email.message import EmailMessage, Message
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.parser import BytesHeaderParser
    from email.policy import SMTP as SMTP_POLICY

    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@relay.test (Mail Delivery System)"
    report["To"] = return_path
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Auto-Submitted"] = "auto-replied"
    report.attach(MIMEText(f"<{rcpt}>: host mx.test said: 550 5.1.1 User unknown (in reply to RCPT TO command)\n"))
    status = Message()
    status.set_type("message/delivery-status")
    per_message, per_recipient = Message(), Message()
    per_message["Reporting-MTA"] = "dns; relay.test"
    per_recipient["Final-Recipient"] = f"rfc822; {rcpt}"
    per_recipient["Action"] = "failed"
    per_recipient["Status"] = "5.1.1"
    per_recipient["Diagnostic-Code"] = "smtp; 550 5.1.1 User unknown"
    status.set_payload([per_message, per_recipient])
    report.attach(status)
    headers = EmailMessage()
    headers.set_type("text/rfc822-headers")
    original_headers = BytesHeaderParser().parsebytes(original)
    headers.set_payload("".join(f"{k}: {v}\n" for k, v in original_headers.items()))
    report.attach(headers)
    return report.as_bytes(policy=SMTP_POLICY)  # CRLF line ends, as on the wire


async def test_a_relay_that_accepts_then_bounces(tmp_path: Path) -> None:
    """topslot → aiosmtpd relay (250 for all) → a DSN it generates → the receiver: the dead address is
    bounced and suppressed, the live one stays sent."""
    from aiosmtpd.controller import Controller

    url = f"sqlite+aiosqlite:///{tmp_path / 'topslot.db'}"
    engine = open_engine(url)
    await upgrade(engine)
    people = ["dead-mei@example.net", "kai@example.org"]
    try:
        await import_people(engine, tmp_path, people)
        bounces = {"domain": DOMAIN, "listen_port": 0, "protocol": "smtp"}
        s0 = settings(tmp_path, None, database_url=url, bounces=bounces)
        clock = FakeClock(NOW)
        receiver = FeedbackReceiver(engine, load_keyring(s0), s0.bounces, clock)
        await receiver.start()
        assert receiver.port is not None
        relay = BouncingRelay(receiver.port)
        relay_port = unused_port()
        controller = Controller(relay, hostname="127.0.0.1", port=relay_port)
        controller.start()
        try:
            assert (
                await send_bucket(engine, settings(tmp_path, relay_port, database_url=url, bounces=bounces), clock) == 2
            )
            for bounce in relay.bouncing:
                await asyncio.to_thread(bounce.join, 30)
            assert relay.refused == [{}]  # the receiver took the DSN
        finally:
            controller.stop()
            await receiver.close()
        assert sorted(r for _, rcpts in relay.accepted for r in rcpts) == sorted(people)
        rows = await ledger_by_email(engine)
        assert {e: rows[e]["state"] for e in people} == {"dead-mei@example.net": "bounced", "kai@example.org": "sent"}
        async with engine.connect() as conn:
            listed = {r.address: r.reason for r in await conn.execute(select(suppressions))}
        assert listed == {"dead-mei@example.net": "hard_bounce"}
    finally:
        await engine.dispose()


async def test_a_bounce_for_a_send_not_yet_recorded_is_451_after_a_wait(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from topslot.bounces import receiver as receiver_module
    from topslot.settings import BounceSettings

    from .corpus import KEYRING, RCPT, message
    from .test_record import seed, state

    monkeypatch.setattr(receiver_module, "PENDING_WAIT", 0.3)
    await seed(engine, {1: (1, RCPT, "sending")})  # the dispatcher has not recorded it yet
    receiver = FeedbackReceiver(engine, KEYRING, BounceSettings(listen_port=0), FakeClock(NOW))
    await receiver.start()
    try:
        assert receiver.port is not None
        dsn = message("postfix-user-unknown", 1)
        verp = values(1)["verp"]
        with pytest.raises(smtplib.SMTPDataError) as later:
            await asyncio.to_thread(hand_over, "lmtp", receiver.port, "", verp, dsn)
        assert later.value.smtp_code == 451  # the relay keeps it and tries again
    finally:
        await receiver.close()
    assert (await state(engine, 1))[0] == "sending"
