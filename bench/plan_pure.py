"""Plan 1,000,000 synthetic contacts over 30 zones through the planning facade (no database).

Prints contacts/s, rows/s and peak RSS. Contacts are generated lazily in batches, so memory
stays flat: the audience is never held whole.

    .venv/bin/python bench/plan_pure.py [--contacts 1000000] [--batch 5000] [--every-slot]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import phonenumbers
from phonenumbers import PhoneNumberType

from topslot.campaign import Campaign
from topslot.planning import PlanContact, Planner, PlanSummaryBuilder, summary_lines

# (zone, country, a phone prefix in that zone)
ZONES = [
    ("Asia/Shanghai", "CN", "+86138"),
    ("Asia/Hong_Kong", "HK", "+8529"),
    ("Asia/Tokyo", "JP", "+8190"),
    ("Asia/Seoul", "KR", "+8210"),
    ("Asia/Singapore", "SG", "+659"),
    ("Asia/Kolkata", "IN", "+9198"),
    ("Asia/Dubai", "AE", "+97150"),
    ("Asia/Jakarta", "ID", "+6281"),
    ("Asia/Bangkok", "TH", "+6681"),
    ("Asia/Manila", "PH", "+63917"),
    ("Australia/Sydney", "AU", "+61212"),
    ("Australia/Perth", "AU", "+61892"),
    ("Australia/Lord_Howe", "AU", "+61265"),
    ("Pacific/Auckland", "NZ", "+6493"),
    ("Europe/London", "GB", "+44207"),
    ("Europe/Paris", "FR", "+33612"),
    ("Europe/Berlin", "DE", "+49151"),
    ("Europe/Madrid", "ES", "+34912"),
    ("Europe/Rome", "IT", "+39347"),
    ("Europe/Moscow", "RU", "+7495"),
    ("Africa/Johannesburg", "ZA", "+2782"),
    ("Africa/Lagos", "NG", "+234803"),
    ("America/New_York", "US", "+1212"),
    ("America/Chicago", "US", "+1312"),
    ("America/Denver", "US", "+1303"),
    ("America/Los_Angeles", "US", "+1415"),
    ("America/Sao_Paulo", "BR", "+5511"),
    ("America/Mexico_City", "MX", "+5255"),
    ("America/Toronto", "CA", "+1416"),
    ("America/Argentina/Buenos_Aires", "AR", "+54911"),
]
CHANNEL_SETS = [("email", "sms"), ("email",), ("sms",)]


def campaign(per_recipient: str) -> Campaign:
    return Campaign.model_validate(
        {
            "id": "bench-2027",
            "name": "bench",
            "channels": ["email", "sms"],
            "audience": {"all": [{"tag": "bench"}]},
            "schedule": {
                "start": "2027-05-06",
                "end": "2027-05-09",
                "fallback_timezone": "Asia/Shanghai",
                "default_country": "CN",
                "per_recipient": per_recipient,
            },
            "landing_page": {"url": "https://shop.example.com/"},
            "content": {
                "email": {"from": "Shop <news@shop.example.com>", "subject": "Hi", "html": "b/email.html.j2"},
                "sms": {"body": "b/sms.txt.j2"},
            },
        }
    )


def phone_pools(per_zone: int, rng: random.Random) -> list[list[str]]:
    """Valid numbers per zone: the region's example number with random line digits (checked once)."""
    pools = []
    for _zone, country, _prefix in ZONES:
        pool: list[str] = []
        kinds = (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE)
        examples = [phonenumbers.example_number_for_type(country, kind) for kind in kinds]
        while len(pool) < per_zone:
            example = examples[len(pool) % 2]
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            candidate = e164[:-6] + f"{rng.randrange(10**6):06d}"
            if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
                pool.append(candidate)
        pools.append(pool)
    return pools


def contacts(total: int, batch: int, pools: list[list[str]], seed: int = 7) -> Iterator[list[PlanContact]]:
    """70 % with their own zone, 20 % known only by phone, 10 % only by country."""
    rng = random.Random(seed)
    for first in range(0, total, batch):
        rows = []
        for contact_id in range(first, min(first + batch, total)):
            index = rng.randrange(len(ZONES))
            zone, country, _ = ZONES[index]
            base = rng.choice(pools[index])
            phone = base[:-4] + f"{rng.randrange(10000):04d}"  # same block, another line
            kind = rng.random()
            channels = CHANNEL_SETS[contact_id % 3]
            if kind < 0.7:
                rows.append(PlanContact(contact_id, zone, phone, country, channels))
            elif kind < 0.9:
                rows.append(PlanContact(contact_id, None, phone, None, channels))
            else:
                rows.append(PlanContact(contact_id, None, None, country, channels))
        yield rows


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--every-slot", action="store_true")
    parser.add_argument("--pool", type=int, default=2000, help="distinct number blocks per zone")
    args = parser.parse_args()

    now = datetime(2027, 5, 1, tzinfo=UTC)
    planner = Planner(
        campaign("every_slot" if args.every_slot else "once"), now, default_timezone="UTC", default_country="US"
    )
    pools = phone_pools(args.pool, random.Random(1))

    # Time the synthetic audience alone first, so the planner's own cost can be told apart.
    started = time.perf_counter()
    for _batch in contacts(args.contacts, args.batch, pools):
        pass
    generation = time.perf_counter() - started

    builder = PlanSummaryBuilder()
    rows = 0
    started = time.perf_counter()
    for batch in contacts(args.contacts, args.batch, pools):
        for row in planner.plan_batch(batch):
            builder.add(row)
            rows += 1
    total = time.perf_counter() - started
    elapsed = total - generation
    summary = builder.build({"email": 2000, "sms": 30}, campaign("once").schedule.arrive_within)

    print(
        f"contacts:      {planner.contacts_seen:,} over {len(ZONES)} zones ({'every_slot' if args.every_slot else 'once'})"
    )
    print(f"rows:          {rows:,} (planned {planner.rows_planned:,}, skipped {planner.rows_skipped:,})")
    print(f"left out:      {dict(planner.left_out)}")
    print(
        f"elapsed:       {total:.2f} s with generation, {generation:.2f} s generation alone, {elapsed:.2f} s planning"
    )
    print(
        f"contacts/s:    {planner.contacts_seen / elapsed:,.0f} planning only ({planner.contacts_seen / total:,.0f} with generation)"
    )
    print(f"rows/s:        {rows / elapsed:,.0f} planning only")
    print(f"buckets:       {len(summary.windows)} (channel × UTC instant), warnings {len(summary.warnings)}")
    print(f"peak RSS:      {peak_rss_mb():.0f} MB")
    for line in summary_lines(summary, channels=["email", "sms"])[-3:]:
        print("  " + line)


if __name__ == "__main__":
    main()
