"""What the planning rules of issue 13 cost: the same synthetic contacts planned under each rule,
side by side in one run (no database).

Variants: the baseline (``slot_choice: first``, every channel), ``split``, ``learned`` (each contact
with a history of a few messages per slot), ``channel_strategy: fallback``, ``first_available``,
and quiet hours with ``shift`` (the SMS slot 07:30 moved to 08:00) under the default rules. Each
variant is planned ``--repeat`` times, interleaved so a noisy neighbour hits them all; printed:
the median CPU seconds of planning (``time.process_time``: a busy neighbour barely moves it), rows,
rows per CPU second, and the ratio to the baseline.

    .venv/bin/python bench/plan_rules.py [--contacts 200000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from plan_pure import campaign, contacts, phone_pools

from topslot.campaign import Campaign
from topslot.pacing import QuietRules
from topslot.planning import PlanContact, Planner

NOW = datetime(2027, 5, 1, tzinfo=UTC)
SLOTS = ("07:30", "17:00")


def variant(**keys: Any) -> Campaign:
    data = campaign("once").model_dump(by_alias=True)
    data.update(keys)
    return Campaign.model_validate(data)


VARIANTS: dict[str, tuple[Campaign, QuietRules]] = {
    "first (baseline)": (variant(), QuietRules.none()),
    "split": (variant(slot_choice="split"), QuietRules.none()),
    "learned": (variant(slot_choice="learned"), QuietRules.none()),
    "first_available": (variant(channel_strategy="first_available"), QuietRules.none()),
    "fallback": (variant(channel_strategy="fallback"), QuietRules.none()),
    "quiet hours, shift": (variant(quiet_hours="shift"), QuietRules.defaults()),
}


def with_history(batch: list[PlanContact], rng: random.Random) -> list[PlanContact]:
    return [
        c._replace(history={s: (m := rng.randrange(4), rng.randrange(m + 1)) for s in SLOTS}) for c in batch
    ]


def plan_once(c: Campaign, quiet: QuietRules, batches: list[list[PlanContact]]) -> tuple[float, int]:
    population = {"07:30": (10_000, 1_200), "17:00": (10_000, 1_500)}
    planner = Planner(c, NOW, default_timezone="UTC", default_country="US", quiet=quiet, population=population)
    start = time.process_time()
    rows = 0
    for batch in batches:
        for _row in planner.plan_batch(batch):
            rows += 1
    return time.process_time() - start, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(5)
    batches = [with_history(b, rng) for b in contacts(args.contacts, 5000, phone_pools(500, random.Random(1)))]
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    rows: dict[str, int] = {}
    for _ in range(args.repeat):
        for name, (c, quiet) in VARIANTS.items():
            spent, rows[name] = plan_once(c, quiet, batches)
            seconds[name].append(spent)
    base = statistics.median(seconds["first (baseline)"])
    print(f"{args.contacts:,} contacts, medians of {args.repeat} interleaved runs (CPU seconds of planning)")
    print(f"{'variant':<20} {'CPU s':>7} {'rows':>9} {'rows/CPU s':>11} {'× baseline':>11}")
    for name in VARIANTS:
        spent = statistics.median(seconds[name])
        print(f"{name:<20} {spent:7.2f} {rows[name]:9,} {rows[name] / spent:11,.0f} {spent / base:11.2f}")


if __name__ == "__main__":
    main()
