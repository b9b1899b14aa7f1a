"""Which campaigns are active, and what a reload changes. Pure: the caller loads the files.

Rules on reload:
- a campaign that loads cleanly replaces the active version (``loaded`` or ``updated``: its model
  or its version, file and templates as ``topslot.campaign_version`` hashes them, changed);
- a campaign whose file now has problems (or whose templates do) keeps its previous good version
  (``kept``) — a typo in a live file never stops a running campaign;
- a campaign whose file was removed, or whose file now loads cleanly as another campaign, is
  ``unloaded``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from topslot.campaign import Campaign
from topslot.campaign_version import CampaignVersion


@dataclass(frozen=True)
class Changes:
    loaded: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    unloaded: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.loaded or self.updated or self.unloaded)


class CampaignRegistry:
    def __init__(self) -> None:
        self._active: dict[str, Campaign] = {}
        self._sources: dict[str, Path] = {}
        self._versions: dict[str, CampaignVersion] = {}

    @property
    def active(self) -> Mapping[str, Campaign]:
        return dict(self._active)

    def source_of(self, campaign_id: str) -> Path | None:
        return self._sources.get(campaign_id)

    def version_of(self, campaign_id: str) -> CampaignVersion | None:
        """The version of the active campaign (None: not loaded from files)."""
        return self._versions.get(campaign_id)

    def apply(
        self,
        valid: Mapping[str, Campaign],
        sources: Mapping[str, Path],
        existing_files: set[Path],
        versions: Mapping[str, CampaignVersion] | None = None,
    ) -> Changes:
        """Merge a fresh load: ``valid`` campaigns, the file each came from, the files now on disk,
        each valid campaign's version."""
        versions = versions or {}
        changes = Changes()
        clean_files = {sources[cid] for cid in valid if cid in sources}
        for cid, campaign in sorted(valid.items()):
            previous = self._active.get(cid)
            if previous is None:
                changes.loaded.append(cid)
            elif previous != campaign or self._versions.get(cid) != versions.get(cid):
                changes.updated.append(cid)
            self._active[cid] = campaign
            if cid in versions:
                self._versions[cid] = versions[cid]
            else:
                self._versions.pop(cid, None)
            if cid in sources:
                self._sources[cid] = sources[cid]
        for cid in sorted(set(self._active) - set(valid)):
            source = self._sources.get(cid)
            if source is None or source not in existing_files or source in clean_files:
                changes.unloaded.append(cid)
                del self._active[cid]
                self._sources.pop(cid, None)
                self._versions.pop(cid, None)
            else:
                changes.kept.append(cid)
        return changes
