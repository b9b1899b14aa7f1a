"""Link signing speed: tokens signed/s, verified/s, and the links of a whole email per second
(best of three runs each).

"Whole email" = what the renderer asks per message: ``landing_url``, ``track(landing_url)``, two
more tracked links, the open pixel, ``unsubscribe_url`` and ``unsubscribe_mailto``. Pure CPU, no I/O.

    .venv/bin/python bench/links.py [--n 200000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from topslot.campaign import Campaign
from topslot.links.factory import CampaignLinks
from topslot.links.keys import Keyring
from topslot.links.tokens import sign, verify
from topslot.links.urls import link_key, normalise_url
from topslot.yaml_source import load_yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "config/campaigns/mothers-day-2027.yaml"
TARGET_SIGN_PER_S = 100_000


def rate(label: str, n: int, run: Callable[[int], object], repeat: int = 3) -> float:
    """Best of ``repeat`` runs: the machine is shared, the best run is the least disturbed one."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        run(n)
        best = max(best, n / (time.perf_counter() - start))
    print(f"{label:<44} {best:>12,.0f} /s")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    n = parser.parse_args().n
    keyring = Keyring({"k2026": b"benchmark-key-0123456789abcdef"})
    key = link_key(normalise_url("https://shop.example.com/mothers-day"))
    base_id = 10_000_000

    def sign_clicks(count: int) -> None:
        for i in range(count):
            sign(keyring, "click", base_id + i, key)

    tokens = [sign(keyring, "click", base_id + i, key) for i in range(min(n, 100_000))]

    def verify_clicks(count: int) -> None:
        for i in range(count):
            verify(tokens[i % len(tokens)], keyring, "click")

    links = CampaignLinks(Campaign.model_validate(load_yaml(EXAMPLE).data), keyring, "https://t.shop.example.com")

    def whole_emails(count: int) -> None:
        for i in range(count):
            msg = links.for_delivery(base_id + i, "email")
            msg.track(msg.landing_url)
            msg.track("https://shop.example.com/faq")
            msg.track("https://shop.example.com/stores?city=Shanghai")
            _ = (msg.open_pixel_url, msg.unsubscribe_url, msg.unsubscribe_mailto)

    print(f"topslot link benchmark, {n:,} iterations each")
    signed = rate("click tokens signed", n, sign_clicks)
    rate("click tokens verified", n, verify_clicks)
    emails = rate("emails linked (3 clicks, pixel, unsubscribe)", n // 4, whole_emails)
    print(f"{'tokens signed per email':<44} {5:>12}")
    print(f"{'signing target':<44} {TARGET_SIGN_PER_S:>12,} /s  ({'met' if signed >= TARGET_SIGN_PER_S else 'MISSED'})")
    print(f"{'link work per email at 2,000 msg/s':<44} {2000 / emails * 100:>11.1f} % of one core")


if __name__ == "__main__":
    main()
