"""slot_choice: split is a fair, stable randomisation; learned finds each recipient's better slot."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from planning.test_planner import campaign
from topslot.attribution.holdout import holdout_score
from topslot.campaign import Campaign
from topslot.delivery import SlotBasis
from topslot.planning.slot_choice import SlotChooser, population_rates, split_slot

SLOTS = ("07:30", "17:00")


def choosing(mode: str, **learned: object) -> Campaign:
    base = campaign(slots=list(SLOTS))
    return base.model_copy(update={"slot_choice": mode, "learned": base.learned.model_copy(update=learned)})


def test_first_chooses_nothing() -> None:
    assert SlotChooser(choosing("first")).choose(7) == (None, SlotBasis.FIRST)


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=30), st.integers(0, 10**9))
def test_split_is_balanced_and_stable_across_replans(campaign_id: str, offset: int) -> None:
    ids = range(offset, offset + 4000)
    first = [split_slot(campaign_id, i, SLOTS) for i in ids]
    again = [split_slot(campaign_id, i, SLOTS) for i in ids]  # a re-plan: same answer for everyone
    assert first == again
    share = Counter(first)["07:30"] / len(first)
    assert 0.45 < share < 0.55  # 4000 fair coin flips: 6 standard deviations either side


def test_split_is_independent_of_the_holdout_and_of_other_campaigns() -> None:
    ids = range(20000)
    held = [i for i in ids if holdout_score("spring", i) < 0.1]
    among_held = Counter(split_slot("spring", i, SLOTS) for i in held)["07:30"] / len(held)
    assert 0.45 < among_held < 0.55  # the control group is not made of one slot
    same = sum(split_slot("spring", i, SLOTS) == split_slot("summer", i, SLOTS) for i in ids) / len(ids)
    assert 0.47 < same < 0.53  # another campaign draws afresh


def test_learned_without_history_gets_the_default_and_exploration_is_random() -> None:
    chooser = SlotChooser(choosing("learned", exploration=0.2))
    picks = [chooser.choose(i, None) for i in range(5000)]
    bases = Counter(basis for _slot, basis in picks)
    assert 0.17 < bases[SlotBasis.EXPLORATION] / 5000 < 0.23
    assert bases[SlotBasis.DEFAULT] == 5000 - bases[SlotBasis.EXPLORATION]
    assert {slot for slot, basis in picks if basis == SlotBasis.DEFAULT} == {"07:30"}
    explored = Counter(slot for slot, basis in picks if basis == SlotBasis.EXPLORATION)
    assert 0.4 < explored["17:00"] / sum(explored.values()) < 0.6


def test_learned_weighs_history_against_the_population() -> None:
    population = {"07:30": (1000, 100), "17:00": (1000, 200)}  # 10 % and 20 %
    chooser = SlotChooser(choosing("learned", exploration=0, prior_weight=2), population)
    assert population_rates(SLOTS, population) == {"07:30": 0.1, "17:00": 0.2}
    # One engaged 07:30 message: (1 + 0.2) / 3 = 0.4 > 0.2 → 07:30
    assert chooser.choose(1, {"07:30": (1, 1)}) == ("07:30", SlotBasis.HISTORY)
    # Three unengaged 17:00 messages: (0 + 0.4) / 5 = 0.08 < 0.1 → 07:30
    assert chooser.choose(2, {"17:00": (3, 0)}) == ("07:30", SlotBasis.HISTORY)
    # One unengaged 07:30 message: 0.2 / 3 = 0.067 < 0.2 → 17:00
    assert chooser.choose(3, {"07:30": (1, 0)}) == ("17:00", SlotBasis.HISTORY)
    # History at other slots only: no evidence about these
    assert chooser.choose(4, {"12:00": (5, 5)}) == ("07:30", SlotBasis.DEFAULT)


def test_learned_converges_to_each_recipients_true_slot_within_a_few_campaigns() -> None:
    """A population whose members each prefer one slot (40 % engagement there, 10 % at the other),
    half of them each way; each campaign sends once to everyone at the slot ``learned`` picks and
    records what happened. The share picking the true slot is printed per campaign."""
    rng = random.Random(20261202)
    people = range(3000)
    truth = {p: SLOTS[rng.random() < 0.5] for p in people}
    history: dict[int, dict[str, tuple[int, int]]] = {p: {} for p in people}
    shares = []
    for n in range(6):
        population: dict[str, tuple[int, int]] = {}
        for record in history.values():
            for slot, (m, e) in record.items():
                pm, pe = population.get(slot, (0, 0))
                population[slot] = (pm + m, pe + e)
        chooser = SlotChooser(choosing("learned", exploration=0.1).model_copy(update={"id": f"c{n}"}), population)
        right = 0
        for p in people:
            slot, basis = chooser.choose(p, history[p])
            right += slot == truth[p] and basis != SlotBasis.EXPLORATION
            engaged = rng.random() < (0.4 if slot == truth[p] else 0.1)
            m, e = history[p].get(slot, (0, 0))
            history[p][slot] = (m + 1, e + engaged)
        shares.append(right / len(people))
    print("share of recipients given their true slot (exploration aside), campaign by campaign:", shares)
    assert shares[0] < 0.5  # no history: everyone gets the default
    assert shares[-1] > 0.7  # most recipients found within six campaigns (90 % are not exploring)
    assert shares[-1] > shares[1]
