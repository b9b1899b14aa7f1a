"""One daemon's campaign version gate: it plans and sends a campaign only while it holds the version
in force (the rule: ``topslot.campaign_version``; the records: ``topslot.store.versions``).

The scheduler consults it:

- ``admit`` before each plan: records this node's version as the one in force if it wins, and says
  whether the node may plan the campaign;
- ``check`` when a bucket fires (the version in force read then), and ``holds`` before each claim
  batch of a bucket being sent;
- ``refresh`` every ``VERSION_POLL`` (with the campaigns of each reload): notices a newer version
  recorded by another node within seconds, records this node's own when it wins, keeps
  ``campaign_versions`` (what this process holds) for ``topslot status``, and returns the held
  campaigns that match again (the scheduler plans them and rebuilds its jobs).

The dispatch service claims no retry of a campaign in ``held``.

Events: ``campaign_version_mismatch`` (warning, once per change: the campaign, this node's version,
the one in force and who recorded it) when it holds a campaign back; ``campaign_version_match``
(info) when its files match the version in force again; ``campaign_version_recorded`` (info) when
its version replaced another one in force. Campaigns given in code (no files, no mtime) are recorded
as before and never held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.campaign_version import CampaignVersion, Standing, judge, model_version
from topslot.logs import get_logger
from topslot.store import versions
from topslot.store.versions import InForce

log = get_logger("scheduler")

VERSION_POLL = timedelta(seconds=3)  # how soon a version recorded by another node is noticed

VersionSource = Callable[[str], CampaignVersion | None]
"""Campaign id → this node's version of it, as loaded from its files (None: not loaded from files)."""


class VersionGate:
    """See the module docstring. ``owner``: this process (``processes.owner``); ``versions_of``:
    this node's versions (the daemon's campaign registry)."""

    def __init__(self, engine: AsyncEngine, owner: str, versions_of: VersionSource | None = None):
        self.engine = engine
        self.owner = owner
        self.versions_of = versions_of
        self.held: dict[str, InForce] = {}  # campaigns held back → the version in force they wait for
        self._logged: dict[str, tuple[str, str]] = {}  # the mismatch last logged: (this node's, in force)
        self._holding: dict[str, CampaignVersion] | None = None  # what ``campaign_versions`` says we hold

    def version(self, campaign: Campaign) -> CampaignVersion:
        """This node's version of ``campaign``: of its files, or of its model if given in code."""
        found = self.versions_of(campaign.id) if self.versions_of is not None else None
        return found if found is not None else model_version(campaign)

    def holds(self, campaign_id: str) -> bool:
        """The campaign is held back (as of the last admit, check or refresh)."""
        return campaign_id in self.held

    async def admit(self, campaign: Campaign, now: datetime) -> bool:
        """Record this node's version of ``campaign`` as the one in force if it wins; whether the
        node may plan and send the campaign (it holds the version in force)."""
        mine = self.version(campaign)
        recorded = await versions.record(self.engine, campaign, mine, now, by=self.owner)
        if recorded.replaced and recorded.before is not None and recorded.after.version.digest == mine.digest:
            log.info("campaign_version_recorded", campaign_id=campaign.id, version=mine.short,
                     replaced=recorded.before.version.short, replaced_by=recorded.before.recorded_by)  # fmt: skip
        return self._settle(campaign.id, mine, recorded.after)

    async def check(self, campaign: Campaign, now: datetime) -> bool:
        """Whether this node may send ``campaign`` now, by the version in force read now (its own
        recorded first if it wins). A campaign given in code always may."""
        mine = self.version(campaign)
        if mine.mtime is None:
            return True
        found = (await versions.in_force(self.engine, [campaign.id])).get(campaign.id)
        if found is None or judge(mine, found.version) is Standing.RECORD:
            return await self.admit(campaign, now)
        return self._settle(campaign.id, mine, found)

    async def refresh(self, campaigns: Mapping[str, Campaign], now: datetime) -> list[str]:
        """Judge every campaign loaded from files against the version in force (see the module
        docstring); returns those that were held and match now."""
        before = set(self.held)
        self.held = {cid: found for cid, found in self.held.items() if cid in campaigns}
        mine = {cid: self.version(c) for cid, c in campaigns.items()}
        mine = {cid: version for cid, version in mine.items() if version.mtime is not None}
        found = await versions.in_force(self.engine, sorted(mine))
        for cid, version in sorted(mine.items()):
            current = found.get(cid)
            if current is None or judge(version, current.version) is Standing.RECORD:
                await self.admit(campaigns[cid], now)
            else:
                self._settle(cid, version, current)
        if mine != self._holding:
            await versions.hold(self.engine, self.owner, mine, now)
            self._holding = mine
        return sorted((before - set(self.held)) & set(campaigns))

    def _settle(self, campaign_id: str, mine: CampaignVersion, in_force: InForce) -> bool:
        """Hold or release ``campaign_id`` by the version in force; log each change once."""
        if in_force.version.digest == mine.digest:
            self._logged.pop(campaign_id, None)
            if self.held.pop(campaign_id, None) is not None:
                log.info("campaign_version_match", campaign_id=campaign_id, version=mine.short)
            return True
        self.held[campaign_id] = in_force
        if self._logged.get(campaign_id) != (mine.digest, in_force.version.digest):
            self._logged[campaign_id] = (mine.digest, in_force.version.digest)
            log.warning(
                "campaign_version_mismatch", campaign_id=campaign_id, version=mine.short,
                in_force=in_force.version.short, in_force_by=in_force.recorded_by,
                version_mtime=_iso(mine.mtime), in_force_mtime=_iso(in_force.version.mtime),
            )  # fmt: skip
        return False


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
