"""The holdout hash: stable, uniform, independent per campaign, monotone in the share."""

from __future__ import annotations

from topslot.attribution.holdout import holdout_score, in_holdout


def test_scores_are_stable_and_in_range() -> None:
    assert holdout_score("mothers-day-2027", 1234) == holdout_score("mothers-day-2027", "1234")
    scores = [holdout_score("c", i) for i in range(20_000)]
    assert all(0 <= s < 1 for s in scores)


def test_about_the_share_is_held_out() -> None:
    held = sum(in_holdout("mothers-day-2027", i, 0.05) for i in range(1, 20_001))
    # binomial(20000, 0.05): mean 1000, sd ~31; 5 sd either way
    assert 845 <= held <= 1155


def test_raising_the_share_keeps_everybody_already_out() -> None:
    five = {i for i in range(5000) if in_holdout("c", i, 0.05)}
    ten = {i for i in range(5000) if in_holdout("c", i, 0.10)}
    assert five < ten


def test_campaigns_draw_independent_groups_and_zero_keeps_nobody() -> None:
    a = {i for i in range(5000) if in_holdout("a", i, 0.1)}
    b = {i for i in range(5000) if in_holdout("b", i, 0.1)}
    assert a != b and len(a & b) < len(a) / 2
    assert not any(in_holdout("a", i, 0.0) for i in range(1000))
