"""One campaign version across nodes, with real schedulers sharing one ledger (SQLite and
PostgreSQL): a node whose files are older than the version in force neither plans, fires nor
claims retries of the campaign, says so once, and goes on as soon as its files match; a rolling
deploy ends with every node on the new version, sent only by nodes that hold it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from structlog.testing import capture_logs

from scheduling.ledger_fixtures import NOW, campaign, populate, rows, settings
from topslot.campaign_version import CampaignVersion
from topslot.clock import FakeClock
from topslot.dispatch.service import DispatchService
from topslot.scheduling.scheduler import BucketScheduler
from topslot.store import ledger, status, versions
from topslot.store.dispatch import claim_retries
from topslot.store.schema import deliveries

V1 = CampaignVersion("1" * 64, NOW - timedelta(days=1))
V2 = CampaignVersion("2" * 64, NOW - timedelta(hours=1))


class Node:
    """A scheduler whose campaign files are ``files`` (campaign id → version), changed by the test."""

    def __init__(self, engine, tmp_path, name: str, version: CampaignVersion) -> None:  # noqa: ANN001
        self.files = {"ledger-test": version}
        self.scheduler = BucketScheduler(engine, settings(tmp_path), FakeClock(NOW), owner=f"{name}/boot",
                                         versions_of=self.files.get)  # fmt: skip


def events(logs: list[dict], *names: str) -> list[dict]:
    return [e for e in logs if e["event"] in names]


async def test_an_older_node_holds_back_says_so_once_and_resumes_when_its_files_match(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    c = campaign(timezone="UTC")  # one bucket of four rows
    a, b = Node(engine, tmp_path, "node-a", V2), Node(engine, tmp_path, "node-b", V1)
    await b.scheduler.on_campaigns_changed({c.id: c})  # B started first, with the old files
    with capture_logs() as logs:
        await a.scheduler.on_campaigns_changed({c.id: c})  # A has the new ones: they win
    [recorded] = events(logs, "campaign_version_recorded")
    assert (recorded["version"], recorded["replaced"], recorded["replaced_by"]) == (V2.short, V1.short, "node-b/boot")
    assert (await versions.in_force(engine, [c.id]))[c.id] == versions.InForce(V2, "node-a/boot")
    [bucket] = await ledger.planned_buckets(engine, c.id)

    with capture_logs() as logs:
        await b.scheduler.watch_versions()  # B's poll notices, within seconds
        await b.scheduler.watch_versions()
        await b.scheduler.replan_all()
        assert await b.scheduler.fire_bucket(c.id, "email", bucket.due_utc) == 0
    [mismatch] = events(logs, "campaign_version_mismatch")  # once per change
    assert mismatch["log_level"] == "warning"
    assert (mismatch["campaign_id"], mismatch["version"], mismatch["in_force"], mismatch["in_force_by"]) == (
        c.id, V1.short, V2.short, "node-a/boot",
    )  # fmt: skip
    assert [e["reason"] for e in events(logs, "campaign_not_planned")] == ["version_mismatch"]
    assert not events(logs, "campaign_planned")
    assert [e["state"] for e in events(logs, "bucket_held")] == ["version_mismatch"]
    assert {r["state"] for r in await rows(engine) if r["skip_reason"] is None} == {"planned"}  # B claimed nothing

    async with engine.begin() as conn:  # one row waits for a retry: B's retry poller leaves it
        first = min(r["id"] for r in await rows(engine) if r["state"] == "planned")
        await conn.execute(
            update(deliveries).where(deliveries.c.id == first).values(state="retry_wait", next_attempt_utc=NOW)
        )
    later = FakeClock(bucket.due_utc + timedelta(hours=1))
    b_dispatch = DispatchService(
        engine, settings(tmp_path), later, node="node-b", held=lambda: b.scheduler.versions.held
    )
    assert await b_dispatch.retry_due() == 0
    assert [r["state"] for r in await rows(engine) if r["id"] == first] == ["retry_wait"]
    assert await a.scheduler.fire_bucket(c.id, "email", bucket.due_utc) == 3  # A, holding V2, sends

    b.files[c.id] = V2  # B's files are updated
    with capture_logs() as logs:
        await b.scheduler.watch_versions()
    names = [e["event"] for e in logs]
    assert "campaign_version_match" in names and names.index("campaign_planned") > names.index("campaign_version_match")
    assert "jobs_rebuilt" in names and not b.scheduler.versions.held
    assert len(await claim_retries(engine, "node-b/x", timedelta(minutes=5), later.now(),
                                   exclude=b.scheduler.versions.held)) == 1  # fmt: skip
    await b_dispatch.close()


async def test_a_rolling_deploy_ends_with_every_node_on_the_new_version(engine, tmp_path) -> None:
    await populate(engine, tmp_path)
    c = campaign(timezone="UTC")
    nodes = [Node(engine, tmp_path, name, V1) for name in ("node-a", "node-b", "node-c")]
    for node in nodes:
        await node.scheduler.on_campaigns_changed({c.id: c})
        await status.heartbeat(engine, owner=node.scheduler.owner, node=node.scheduler.owner.split("/")[0],
                               role="daemon", pid=1, version="0.1.0", started_at=NOW, now=NOW)  # fmt: skip
    [bucket] = await ledger.planned_buckets(engine, c.id)

    async def poll_all() -> None:
        for node in nodes:
            await node.scheduler.watch_versions()

    async def holding_another() -> list[str]:
        [row] = await status.campaign_rows(engine, NOW, dead_after=timedelta(days=365))
        return [h.owner for h in row.other_versions]

    with capture_logs() as logs:
        for step, node in enumerate(nodes):  # the deploy reaches one node after the other
            node.files[c.id] = V2
            await node.scheduler.on_campaigns_changed({c.id: c})  # its reload
            await poll_all()
            held = [n.scheduler.owner for n in nodes if n.scheduler.versions.holds(c.id)]
            assert held == [n.scheduler.owner for n in nodes[step + 1 :]]
            assert await holding_another() == held
            for n in nodes[step + 1 :]:  # a node still on V1 sends nothing of the campaign
                assert await n.scheduler.fire_bucket(c.id, "email", bucket.due_utc) == 0
    assert (await versions.in_force(engine, [c.id]))[c.id].version == V2
    assert [e["campaign_id"] for e in logs if e["event"] == "campaign_version_mismatch"] == [c.id, c.id]  # B, C
    assert len(events(logs, "campaign_version_match")) == 2
    assert await nodes[2].scheduler.fire_bucket(c.id, "email", bucket.due_utc) == 4
