"""The whole loop over real sockets: topslot sends a bucket to an SMTP relay (the scripted server)
with VERP return paths; the relay then hands a DSN, an ARF complaint and a mailto: unsubscribe to
topslot's feedback receiver over LMTP or SMTP (Python's smtplib, in a thread); the ledger and the
suppression list follow. A forged return path is refused at RCPT."""

from __future__ import annotations

import asyncio
import smtplib
from datetime import timedelta
from pathlib import Path

import pytest
from channels.scripted_smtp import ScriptedSmtpServer
from dispatch.fixtures import DUE, NOW, campaign, import_people, ledger_by_email, settings
from sqlalchemy import select

from daemon.bounces.receiver import FeedbackReceiver
from daemon.clock import FakeClock
from daemon.dispatch.service import DispatchService
from daemon.links.keys import load_keyring
from daemon.links.verp import delivery_of
from daemon.scheduling.scheduler import BucketScheduler
from daemon.store.db import open_engine, upgrade
from daemon.store.schema import suppressions

from .corpus import DOMAIN, values

PEOPLE = ["mei@example.net", "kai@example.org", "ana@example.com"]


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
            service = DispatchService(engine, s, clock, node="test-node")
            c = campaign()
            scheduler = BucketScheduler(engine, s, clock, owner=service.owner, on_claimed=service.dispatch)
            await service.on_campaigns_changed({c.id: c})
            await scheduler.on_campaigns_changed({c.id: c})
            clock.set(DUE - timedelta(minutes=1))
            assert await scheduler.fire_bucket(c.id, "email", DUE) == len(PEOPLE)
            await service.close()
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
