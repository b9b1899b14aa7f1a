"""Two real daemons on one database (SQLite, and PostgreSQL as several nodes use it), each with its
own campaign files: the one whose files are older notices the newer version the other recorded,
holds the campaign back (``campaign_version_mismatch``, shown by ``topslot status``), and plans it
again as soon as its files match (``campaign_version_match``)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from runtime.conftest import campaign_yaml
from runtime.daemon_support import WAIT, LogTap, until
from topslot.cli import app
from topslot.runtime import Daemon
from topslot.settings import load_settings
from topslot.store import status
from topslot.store.db import open_engine

CAMPAIGN_ID = "spring-2027"
OLD_TEMPLATE = '<p>A small gift for you.</p>\n<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
NEW_TEMPLATE = '<p>A bigger gift for you.</p>\n<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
A_DAY_AGO_NS = (int(datetime.now(UTC).timestamp()) - 86_400) * 10**9


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """One database for both daemons: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
        return
    url = request.getfixturevalue("pg_test_url")
    name = f"topslot_versions_{uuid.uuid4().hex[:12]}"
    admin = open_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))  # name is generated above, not input
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


def node(root: Path, database_url: str, template: str) -> Path:
    """A node's own configuration directory, campaign file and templates."""
    (root / "config" / "campaigns").mkdir(parents=True)
    (root / "templates" / "offer").mkdir(parents=True)
    (root / "config" / "topslot.yaml").write_text(
        f"log_format: json\ndatabase_url: {database_url}\nvar_dir: {root / 'var'}\n"
        f"templates_dir: {root / 'templates'}\n"
        "compliance:\n  sender_identity: Example Shop\n  postal_address: 1 Example Road\n"
    )
    (root / "config" / "campaigns" / "spring.yaml").write_text(campaign_yaml(CAMPAIGN_ID))
    (root / "templates" / "offer" / "email.html.j2").write_text(template)
    return root


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


def status_json(config: Path) -> dict:
    done = CliRunner().invoke(app, ["status", "--json", "--config", str(config)])
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)


async def test_the_node_with_older_files_holds_back_until_they_match(
    tmp_path: Path, database_url: str, logs: LogTap, monkeypatch: pytest.MonkeyPatch
) -> None:
    b_root = node(tmp_path / "node-b", database_url, OLD_TEMPLATE)
    for path in (b_root / "config" / "campaigns" / "spring.yaml", b_root / "templates" / "offer" / "email.html.j2"):
        os.utime(path, ns=(A_DAY_AGO_NS, A_DAY_AGO_NS))  # deployed yesterday
    a_root = node(tmp_path / "node-a", database_url, NEW_TEMPLATE)  # only the template differs: deployed now

    def daemon(root: Path, first: bool) -> Daemon:
        settings = load_settings(root / "config")
        return Daemon(settings, log_stream=logs, watch_debounce_ms=100, settle_ms=300, track=False,
                      handle_signals=False, configure_logs=first)  # fmt: skip

    monkeypatch.setenv("TOPSLOT_NODE_ID", "node-b")
    async with daemon(b_root, True) as b:  # B runs the old version; then A starts with the new one
        monkeypatch.setenv("TOPSLOT_NODE_ID", "node-a")
        async with daemon(a_root, False) as a:
            old, new = b.registry.version_of(CAMPAIGN_ID), a.registry.version_of(CAMPAIGN_ID)
            assert old is not None and new is not None and old.digest != new.digest
            assert [e["version"] for e in logs.events("campaign_version_recorded")] == [new.short]

            await until(lambda: bool(logs.events("campaign_version_mismatch")))  # B's poll, within seconds
            [mismatch] = logs.events("campaign_version_mismatch")
            assert mismatch["level"] == "warning"
            assert (mismatch["campaign_id"], mismatch["version"], mismatch["in_force"], mismatch["in_force_by"]) == (
                CAMPAIGN_ID, old.short, new.short, a.dispatch.owner,
            )  # fmt: skip
            assert b.scheduler is not None and b.scheduler.versions.holds(CAMPAIGN_ID)
            assert a.scheduler is not None and not a.scheduler.versions.holds(CAMPAIGN_ID)
            assert b.dispatch is not None and b.dispatch.held() == {CAMPAIGN_ID}  # its retries wait too

            async def b_shown() -> bool:
                [row] = await status.campaign_rows(a.engine, datetime.now(UTC), dead_after=timedelta(seconds=30))
                return [(h.owner, h.version) for h in row.other_versions] == [(b.dispatch.owner, old.digest)]

            await eventually(b_shown)
            [row] = (await asyncio.to_thread(status_json, a_root / "config"))["campaigns"]
            assert (row["version"], row["version_by"]) == (new.digest, a.dispatch.owner)
            assert [h["owner"] for h in row["other_versions"]] == [b.dispatch.owner]

            planned = len(logs.events("campaign_planned"))
            (b_root / "templates" / "offer" / "email.html.j2").write_text(NEW_TEMPLATE)  # the deploy reaches B
            await until(lambda: bool(logs.events("campaign_version_match")))
            assert logs.events("campaign_version_match")[0]["version"] == new.short
            await until(lambda: len(logs.events("campaign_planned")) > planned)  # B plans it again
            assert not b.scheduler.versions.holds(CAMPAIGN_ID) and b.dispatch.held() == set()

            async def nobody_differs() -> bool:
                return (await status.campaign_rows(a.engine, datetime.now(UTC), dead_after=timedelta(seconds=30)))[
                    0
                ].other_versions == []

            await eventually(nobody_differs)
    assert len(logs.events("campaign_version_mismatch")) == 1
