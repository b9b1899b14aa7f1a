"""``topslot deliveries status|retry`` against a ledger with sent and unknown rows."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

from cli_support import EXAMPLE, run
from sqlalchemy import insert, select

from topslot.settings import load_settings
from topslot.store.db import open_engine
from topslot.store.schema import campaigns, contacts, deliveries

NOW = datetime(2027, 5, 6, tzinfo=UTC)


def _seed(config_dir: Path) -> None:
    async def work() -> None:
        engine = open_engine(load_settings(config_dir).database_url)
        async with engine.begin() as conn:
            ids = list((await conn.execute(select(contacts.c.id).limit(3))).scalars())
            await conn.execute(insert(campaigns).values(id="c1", name="c1", config_hash="x", loaded_at=NOW))
            await conn.execute(
                insert(deliveries),
                [
                    {"campaign_id": "c1", "contact_id": cid, "channel": "email", "slot_date": date(2027, 5, 6),
                     "slot": "07:30", "due_utc": NOW, "timezone": "UTC",
                     "tz_source": "contact", "state": state, "provider": via, "created_at": NOW, "updated_at": NOW}
                    for cid, state, via in zip(
                        ids, ("sent", "unknown", "unknown"), ("outbox", "smtp", "smtp"), strict=True
                    )
                ],
            )  # fmt: skip
        await engine.dispose()

    asyncio.run(work())


def test_status_then_retry_unknown(config_dir: Path) -> None:
    assert run("contacts", "import", str(EXAMPLE / "contacts.csv"), "--config", str(config_dir))[0] == 0
    _seed(config_dir)
    code, out, _ = run("deliveries", "status", "c1", "--config", str(config_dir))
    assert code == 0 and "unknown" in out and "sent" in out
    assert "outbox write (not sent)" in out  # what a file outbox took is never shown as a send
    code, out, _ = run("deliveries", "retry", "c1", "--state", "unknown", "--config", str(config_dir))
    assert code == 0 and "2 unknown deliveries of c1 queued for a retry" in out
    code, out, _ = run("deliveries", "status", "c1", "--config", str(config_dir))
    assert "retry_wait" in out and "unknown" not in out
    code, _, err = run("deliveries", "retry", "c1", "--state", "sent", "--config", str(config_dir))
    assert code == 2 and "--state" in err and "unknown" in err  # a choice: click refuses it
    code, _, err = run("deliveries", "status", "nope", "--config", str(config_dir))
    assert code == 1 and "no deliveries" in err
