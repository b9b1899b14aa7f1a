"""One campaign version across nodes: what a campaign really is on this node, and which version wins.

Every node reads the campaign files from its own disk, so two nodes may hold different versions of
one campaign (a deploy under way, a file edited on one machine). A version is a content hash: the
SHA-256 of the campaign file's bytes and of every template file it uses (the templates it names and
those they include, import or extend), each template by its name under the templates directory, so
the same files give the same hash wherever they are installed. With it goes the newest modification
time (mtime) of those files.

The rule, the same on every node (``judge``):

- the version with the newest content mtime wins; at an equal mtime, the higher hash (so every node
  decides the same);
- a node whose version wins records it in the database as the version in force (the campaign's row);
- a node whose version differs from the version in force, and does not win, holds the campaign
  back: it neither plans it, fires its buckets, nor claims its retries, until its files match the
  version in force again.

So a rolling deploy ends with every node on the new files, and the new version is sent only by
nodes that hold it. A rollback must give the old files a newer mtime (``touch``): a deploy tool
that restores old mtimes would leave the newer version in force, and every node holding the old
one would hold back.

A campaign given in code (tests, library use) has no files: its version is the hash of the model
with no mtime. A version without an mtime is older than any version read from files, and replaces
another such version (nothing to compare: the last writer wins, as before versions existed).

Pure: the hashing of bytes already read and the rule. Reading the files is ``topslot.config``'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from topslot.campaign import Campaign

_FORMAT = b"topslot campaign version 1\n"  # changes if what a version hashes changes
SHORT = 12  # hex digits of a hash shown in logs and status
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CampaignVersion:
    """A campaign's content on one node: ``digest`` (SHA-256, hex) and ``mtime``, the newest
    modification time of its files (aware UTC, microseconds); None for a campaign not read from files."""

    digest: str
    mtime: datetime | None

    @property
    def short(self) -> str:
        return self.digest[:SHORT]


def mtime_of(mtime_ns: int) -> datetime:
    """A file's ``st_mtime_ns`` as an aware UTC datetime, exact to the microsecond (what the
    database keeps), so a version read again compares equal to the one recorded."""
    return _EPOCH + timedelta(microseconds=mtime_ns // 1000)


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def version_of(campaign_file: str, templates: Mapping[str, str], mtimes_ns: Iterable[int]) -> CampaignVersion:
    """The version of a campaign: ``campaign_file`` the SHA-256 of its file's bytes, ``templates``
    each template it uses by name → the SHA-256 of its bytes, ``mtimes_ns`` those files' mtimes.
    The campaign file's own name and the directories do not count (nodes may install them anywhere)."""
    h = hashlib.sha256(_FORMAT)
    h.update(b"campaign " + campaign_file.encode() + b"\n")
    for name in sorted(templates):
        h.update(b"template " + name.encode() + b" " + templates[name].encode() + b"\n")
    return CampaignVersion(h.hexdigest(), mtime_of(max(mtimes_ns)))


def model_version(campaign: Campaign) -> CampaignVersion:
    """The version of a campaign given in code (no files): the hash of its model, no mtime."""
    return CampaignVersion(file_digest(campaign.model_dump_json(by_alias=True).encode()), None)


def wins(a: CampaignVersion, b: CampaignVersion) -> bool:
    """Whether ``a`` wins over a different version ``b``: the newer mtime (none is the oldest),
    then the higher hash. Two versions without an mtime: ``a``, the newcomer, wins."""
    if a.mtime is None and b.mtime is None:
        return True
    if a.mtime is None or b.mtime is None:
        return b.mtime is None
    return (a.mtime, a.digest) > (b.mtime, b.digest)


class Standing(StrEnum):
    """Where a node's version of a campaign stands against the version in force."""

    RECORD = "record"  # nothing in force yet, or this node's version wins: record it as in force
    IN_FORCE = "in_force"  # this node holds the version in force
    HELD = "held"  # another version is in force and wins: hold the campaign back


def judge(mine: CampaignVersion, in_force: CampaignVersion | None) -> Standing:
    """The rule (module docstring) for this node's version ``mine``."""
    if in_force is None:
        return Standing.RECORD
    if in_force.digest == mine.digest:
        return Standing.IN_FORCE
    return Standing.RECORD if wins(mine, in_force) else Standing.HELD
