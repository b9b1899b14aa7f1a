"""Deterministic fake contacts and events (shared by the example data and the benchmark).

    .venv/bin/python bench/example_data.py            # rewrites config/example/{contacts,events}.csv

Everything is obviously fake: example.com / example.net addresses, US numbers in the fictional
555-01xx range, other countries' numbers derived from phonenumbers' own example numbers.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path

import phonenumbers

CONTACT_COLUMNS = [
    "external_id", "first_name", "last_name", "email", "phone", "gender", "birth_date", "age", "country",
    "timezone", "locale", "tags", "consent_email", "consent_sms", "consent_im", "consent_source", "consent_at",
    "im_wechat", "im_telegram", "loyalty_tier", "loyalty_points", "signup_channel",
]  # fmt: skip
EVENT_COLUMNS = ["type", "contact", "order_id", "sku", "category", "amount", "currency", "time", "term"]

# country → (weight, zones, locale, currency)
COUNTRIES = {
    "CN": (18, ["Asia/Shanghai"], "zh-CN", "CNY"),
    "US": (22, ["America/New_York", "America/Chicago", "America/Denver", "America/Phoenix",
                "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu"], "en-US", "USD"),
    "GB": (8, ["Europe/London"], "en-GB", "GBP"),
    "DE": (7, ["Europe/Berlin"], "de-DE", "EUR"),
    "FR": (6, ["Europe/Paris"], "fr-FR", "EUR"),
    "JP": (7, ["Asia/Tokyo"], "ja-JP", "JPY"),
    "AU": (7, ["Australia/Sydney", "Australia/Melbourne", "Australia/Brisbane", "Australia/Perth",
               "Australia/Adelaide"], "en-AU", "AUD"),
    "IN": (8, ["Asia/Kolkata"], "en-IN", "INR"),
    "BR": (6, ["America/Sao_Paulo", "America/Manaus"], "pt-BR", "BRL"),
    "SG": (4, ["Asia/Singapore"], "en-SG", "SGD"),
    "NZ": (3, ["Pacific/Auckland"], "en-NZ", "NZD"),
    "KR": (4, ["Asia/Seoul"], "ko-KR", "KRW"),
}  # fmt: skip
US_AREA = {
    "America/New_York": "212", "America/Chicago": "312", "America/Denver": "303", "America/Phoenix": "602",
    "America/Los_Angeles": "213", "America/Anchorage": "907", "Pacific/Honolulu": "808",
}  # fmt: skip
FEMALE = ["Ava", "Mia", "Lena", "Chloe", "Sofia", "Hana", "Mei", "Priya", "Ana", "Emma", "Yuna", "Olivia", "Li Na", "Aiko", "Isla", "Grace"]
MALE = ["Liam", "Noah", "Jonas", "Hugo", "Kenji", "Arjun", "Lucas", "Wei", "Minjun", "Oliver", "Jack", "Mateo", "Hao", "Felix"]
LAST = ["Example", "Sample", "Testwood", "Placeholder", "Fakename", "Demo", "Mockford", "Specimen", "Dummy", "Fixture"]
CATEGORIES = {  # category → (skus, price range)
    "cosmetics": (["LIP-101", "LIP-102", "MASC-201", "FOUND-301", "BLUSH-401"], (8, 60)),
    "skincare": (["SERUM-11", "CREAM-12", "MASK-13"], (12, 90)),
    "fragrance": (["EDP-21", "EDT-22"], (30, 150)),
    "womens-apparel": (["DRESS-31", "SCARF-32", "BLOUSE-33"], (20, 120)),
    "menswear": (["SHIRT-41", "TIE-42"], (15, 90)),
    "electronics": (["EARBUD-51", "CHARGER-52"], (10, 250)),
    "books": (["BOOK-61", "BOOK-62", "BOOK-63"], (5, 40)),
    "home": (["CANDLE-71", "MUG-72"], (6, 45)),
}
TERMS = ["mother's day gift", "lipstick", "vitamin c serum", "perfume", "running shoes", "laptop bag",
         "母亲节礼物", "口红", "scented candle", "summer dress", "wireless earbuds"]  # fmt: skip
REFERENCE = date(2027, 5, 6)  # the example campaign's first day
HISTORY_START = datetime(2025, 6, 1, tzinfo=UTC)
HISTORY_END = datetime(2026, 11, 20, tzinfo=UTC)


@cache
def _phone_pool(country: str) -> tuple[str, ...]:
    """Valid E.164 numbers for a country, made by varying the last digits of its example number."""
    example = phonenumbers.example_number_for_type(country, phonenumbers.PhoneNumberType.MOBILE)
    national = str(example.national_number)
    found = []
    for i in range(100):
        candidate = phonenumbers.parse(f"+{example.country_code}{national[:-2]}{i:02d}")
        if phonenumbers.is_valid_number(candidate):
            found.append(phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164))
    return tuple(found)


def _phone(rng: random.Random, country: str, zone: str) -> str:
    if country == "US":
        return f"+1 {US_AREA[zone]} 555 01{rng.randrange(100):02d}"
    return rng.choice(_phone_pool(country))


def _yes_no(rng: random.Random, yes: float, no: float) -> str:
    roll = rng.random()
    return "yes" if roll < yes else "no" if roll < yes + no else ""


def contacts(n: int, seed: int = 2027) -> Iterator[dict[str, str]]:
    rng = random.Random(seed)
    codes = list(COUNTRIES)
    weights = [COUNTRIES[c][0] for c in codes]
    staff = set(rng.sample(range(n), k=max(1, n // 50)))
    unsubscribed = set(rng.sample(range(n), k=max(1, n // 100)))
    for i in range(n):
        country = rng.choices(codes, weights)[0]
        _, zones, locale, _ = COUNTRIES[country]
        zone = rng.choice(zones)
        if country == "AU" and i % 150 == 7:
            zone = "Australia/Lord_Howe"
        roll = rng.random()
        gender = "female" if roll < 0.56 else "male" if roll < 0.95 else "other" if roll < 0.97 else ""
        first = rng.choice(FEMALE if gender == "female" else MALE if gender == "male" else FEMALE + MALE)
        last = rng.choice(LAST)
        age = rng.randint(18, 75)
        birth = REFERENCE - timedelta(days=age * 365 + rng.randrange(365))
        form = rng.random()
        tags = [t for t, p in (("vip", 0.1), ("newsletter", 0.3)) if rng.random() < p]
        if i in staff:
            tags.append("staff")
        row = {
            "external_id": f"C{i + 1:06d}",
            "first_name": first,
            "last_name": last,
            "email": f"{first.lower().replace(' ', '.')}.{last.lower()}{i + 1}@{rng.choice(['example.com', 'example.net'])}"
            if rng.random() < 0.92 else "",
            "phone": _phone(rng, country, zone) if rng.random() < 0.8 else "",
            "gender": gender,
            "birth_date": birth.isoformat() if form < 0.8 else "",
            "age": str(age) if 0.8 <= form < 0.9 else "",
            "country": country,
            "timezone": zone if rng.random() < 0.85 else "",
            "locale": locale,
            "tags": ";".join(tags),
            "consent_email": _yes_no(rng, 0.82, 0.08),
            "consent_sms": _yes_no(rng, 0.55, 0.2),
            "consent_im": "",
            "consent_source": rng.choice(["signup-form", "checkout", "store-visit"]),
            "consent_at": (HISTORY_START + timedelta(days=rng.randrange(400))).isoformat().replace("+00:00", "Z"),
            "im_wechat": "",
            "im_telegram": "",
            "loyalty_tier": rng.choice(["bronze", "bronze", "silver", "gold"]),
            "loyalty_points": str(rng.randrange(0, 5000)),
            "signup_channel": rng.choice(["web", "app", "store"]),
        }
        if rng.random() < 0.2:
            row["im_wechat" if country == "CN" else "im_telegram"] = f"im_{i + 1:06d}"
            row["consent_im"] = _yes_no(rng, 0.8, 0.2)
        if i in unsubscribed:  # looks like someone who opted out everywhere
            row.update(consent_email="denied", consent_sms="denied", consent_source="unsubscribe-link")
        yield row


def events(rows: list[dict[str, str]] | Iterator[dict[str, str]], seed: int = 2027, per_contact: float = 3.0) -> Iterator[dict[str, str]]:
    rng = random.Random(seed + 1)
    span = (HISTORY_END - HISTORY_START).total_seconds()
    order = 0
    for row in rows:
        currency = COUNTRIES[row["country"]][3]
        female = row["gender"] == "female"
        for _ in range(rng.randint(0, int(per_contact * 2))):
            order += 1
            if female and rng.random() < 0.5:
                category = "cosmetics"
            else:
                category = rng.choice(list(CATEGORIES))
            skus, (low, high) = CATEGORIES[category]
            when = HISTORY_START + timedelta(seconds=rng.randrange(int(span)))
            yield {
                "type": "purchase", "contact": row["external_id"], "order_id": f"O{order:08d}",
                "sku": rng.choice(skus), "category": category, "amount": f"{rng.uniform(low, high):.2f}",
                "currency": currency, "time": when.isoformat().replace("+00:00", "Z"), "term": "",
            }  # fmt: skip
        if rng.random() < 0.3:
            when = HISTORY_START + timedelta(seconds=rng.randrange(int(span)))
            yield {
                "type": "search", "contact": row["external_id"], "order_id": "", "sku": "", "category": "",
                "amount": "", "currency": "", "time": when.isoformat().replace("+00:00", "Z"), "term": rng.choice(TERMS),
            }  # fmt: skip


def write_csv(path: Path, columns: list[str], rows: Iterator[dict[str, str]] | list[dict[str, str]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "config" / "example"
    people = list(contacts(300))
    print("contacts:", write_csv(out / "contacts.csv", CONTACT_COLUMNS, people))
    print("events:", write_csv(out / "events.csv", EVENT_COLUMNS, events(people)))


if __name__ == "__main__":
    main()
