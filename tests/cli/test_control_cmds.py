"""``topslot campaigns list|pause|resume|cancel`` and ``topslot status`` against a SQLite ledger."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from cli_support import EXAMPLE, db_rows, run
from sqlalchemy import insert, select

from topslot.campaign import Campaign
from topslot.campaign_version import CampaignVersion
from topslot.settings import load_settings
from topslot.store import status, versions
from topslot.store.db import open_engine, prepare_database
from topslot.store.schema import campaign_controls, campaigns, contacts, deliveries

DUE = datetime(2099, 5, 6, 7, 30, tzinfo=UTC)  # ahead: a next bucket


def _seed(config_dir: Path) -> None:
    async def work() -> None:
        engine = open_engine(load_settings(config_dir).database_url)
        async with engine.begin() as conn:
            ids = list((await conn.execute(select(contacts.c.id).limit(3))).scalars())
            await conn.execute(insert(campaigns).values(id="c1", name="Spring", config_hash="x", loaded_at=DUE))
            await conn.execute(
                insert(deliveries),
                [
                    {"campaign_id": "c1", "contact_id": cid, "channel": "email", "slot_date": date(2099, 5, 6),
                     "slot": "07:30", "due_utc": DUE, "timezone": "UTC",
                     "tz_source": "contact", "state": state, "lease_owner": owner, "created_at": DUE,
                     "updated_at": DUE}
                    for cid, state, owner in zip(
                        ids, ("planned", "planned", "sending"), (None, None, "n1/abc"), strict=True
                    )
                ],
            )  # fmt: skip
        now = datetime.now(UTC)
        await status.heartbeat(engine, owner="n1/abc", node="n1", role="daemon", pid=42, version="0.1.0",
                               started_at=now, now=now)  # fmt: skip
        await engine.dispose()

    asyncio.run(work())


def test_pause_resume_cancel_and_status(config_dir: Path) -> None:
    cfg = ("--config", str(config_dir))
    assert run("contacts", "import", str(EXAMPLE / "contacts.csv"), *cfg)[0] == 0
    _seed(config_dir)
    code, out, _ = run("campaigns", "list", *cfg)
    assert code == 0 and "c1" in out and "active" in out and "planned 2" in out
    code, out, _ = run("campaigns", "pause", "c1", "--reason", "wrong price", *cfg)
    assert code == 0 and "c1: paused" in out
    assert "already paused" in run("campaigns", "pause", "c1", *cfg)[1]
    code, out, _ = run("campaigns", "list", "--json", *cfg)
    [listed] = json.loads(out)
    assert (listed["state"], listed["reason"]) == ("paused", "wrong price")
    assert listed["rows"] == {"planned": 2, "sending": 1}
    assert listed["next_buckets"][0]["rows"] == 2

    code, out, _ = run("status", *cfg)
    assert code == 0 and "n1/abc" in out and "running" in out and "paused" in out and "sending" in out
    code, out, _ = run("status", "--json", *cfg)
    found = json.loads(out)
    assert [p["owner"] for p in found["processes"]] == ["n1/abc"]
    assert found["in_flight"] == [
        {"owner": "n1/abc", "campaign_id": "c1", "state": "sending", "rows": 1, "lease_expires_utc": None}
    ]
    assert found["controls"][0]["action"] == "pause"

    code, out, _ = run("campaigns", "resume", "c1", *cfg)
    assert code == 0 and "c1: resumed" in out
    code, out, _ = run("campaigns", "cancel", "c1", "--yes", "--reason", "recalled", *cfg)
    assert code == 0 and "c1: cancelled; 2 unsent rows retired" in out
    db = Path(load_settings(config_dir).database_url.split("///", 1)[1])
    assert sorted(r.state for r in db_rows(db, select(deliveries.c.state))) == ["sending", "skipped", "skipped"]
    assert [r.action for r in db_rows(db, select(campaign_controls.c.action).order_by(campaign_controls.c.id))] == [
        "pause", "resume", "cancel",
    ]  # fmt: skip
    code, _, err = run("campaigns", "resume", "c1", *cfg)
    assert code == 1 and "cannot be undone" in err
    code, _, err = run("campaigns", "pause", "nope", *cfg)
    assert code == 1 and "not in the database" in err
    assert run("campaigns", "cancel", "c1", *cfg)[0] == 1  # no --yes and no answer: nothing done


def test_status_shows_each_campaigns_version_in_force_and_who_holds_another(config_dir: Path) -> None:
    cfg = ("--config", str(config_dir))
    old, new = CampaignVersion("a" * 64, DUE - timedelta(days=1)), CampaignVersion("b" * 64, DUE)

    async def work() -> None:
        engine = await prepare_database(load_settings(config_dir).database_url)
        spring = Campaign.model_construct(id="c1", name="Spring")
        await versions.record(engine, spring, new, DUE, by="n2/def")
        now = datetime.now(UTC)
        for owner, held in (("n1/abc", old), ("n2/def", new)):
            await status.heartbeat(engine, owner=owner, node=owner[:2], role="daemon", pid=42, version="0.1.0",
                                   started_at=now, now=now)  # fmt: skip
            await versions.hold(engine, owner, {"c1": held}, now)
        await engine.dispose()

    asyncio.run(work())
    code, out, _ = run("status", "--json", *cfg)
    [row] = json.loads(out)["campaigns"]
    assert (row["version"], row["version_mtime"], row["version_by"]) == (new.digest, DUE.isoformat(), "n2/def")
    assert [(h["owner"], h["version"]) for h in row["other_versions"]] == [("n1/abc", old.digest)]
    code, out, _ = run("status", *cfg)
    assert code == 0 and "version" in out and new.short in out and f"n1/abc holds {old.short}" in out
    code, out, _ = run("campaigns", "list", *cfg)
    assert code == 0 and new.short in out and f"n1/abc holds {old.short}" in out
