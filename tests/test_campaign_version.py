"""The campaign version rule (``topslot.campaign_version``): pure, the same on every node."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from topslot.campaign_version import CampaignVersion, Standing, judge, mtime_of, version_of, wins

T = datetime(2027, 5, 1, 8, 0, tzinfo=UTC)
LOW, HIGH = "1" * 64, "f" * 64


def v(digest: str, at: datetime | None) -> CampaignVersion:
    return CampaignVersion(digest, at)


def test_the_newest_mtime_wins_whatever_the_hash() -> None:
    newer, older = v(LOW, T + timedelta(seconds=1)), v(HIGH, T)
    assert wins(newer, older) and not wins(older, newer)
    assert judge(newer, older) is Standing.RECORD
    assert judge(older, newer) is Standing.HELD


def test_at_the_same_mtime_the_higher_hash_wins_on_every_node() -> None:
    a, b = v(HIGH, T), v(LOW, T)
    assert wins(a, b) and not wins(b, a)
    assert (judge(a, b), judge(b, a)) == (Standing.RECORD, Standing.HELD)


def test_the_same_hash_is_the_version_in_force_whatever_its_mtime() -> None:
    assert judge(v(LOW, T), v(LOW, T - timedelta(days=1))) is Standing.IN_FORCE
    assert judge(v(LOW, T - timedelta(days=1)), v(LOW, T)) is Standing.IN_FORCE


def test_nothing_in_force_yet_is_recorded() -> None:
    assert judge(v(LOW, T), None) is Standing.RECORD
    assert judge(v(LOW, None), None) is Standing.RECORD


def test_a_version_without_mtime_is_the_oldest_and_replaces_another_such() -> None:
    from_files, in_code = v(LOW, T), v(HIGH, None)
    assert judge(from_files, in_code) is Standing.RECORD
    assert judge(in_code, from_files) is Standing.HELD
    assert judge(v(LOW, None), v(HIGH, None)) is Standing.RECORD  # last writer wins, as before versions


def test_a_version_hashes_contents_and_template_names_not_where_files_live() -> None:
    one = version_of("a" * 64, {"offer/mail.html": "b" * 64, "base.html": "c" * 64}, [10_000, 20_000_000])
    same = version_of("a" * 64, {"base.html": "c" * 64, "offer/mail.html": "b" * 64}, [20_000_000])
    renamed = version_of("a" * 64, {"offer/other.html": "b" * 64, "base.html": "c" * 64}, [20_000_000])
    edited = version_of("a" * 64, {"offer/mail.html": "d" * 64, "base.html": "c" * 64}, [20_000_000])
    assert one == same and len(one.digest) == 64 and one.short == one.digest[:12]
    assert len({one.digest, renamed.digest, edited.digest}) == 3
    assert one.mtime == datetime(1970, 1, 1, 0, 0, 0, 20_000, tzinfo=UTC)  # the newest file


def test_an_mtime_is_kept_to_the_microsecond_exactly() -> None:
    ns = 1_798_000_000_123_456_789
    assert mtime_of(ns) == datetime.fromtimestamp(1_798_000_000, UTC) + timedelta(microseconds=123_456)
