"""One bucket of the example campaign, for the send benchmarks (send_pipeline.py, sms_pipeline.py,
im_pipeline.py), none of it timed: the campaign for one channel (``bench_campaign``), its settings
(``bench_settings``), its contacts (``person``), the ledger seeded with N contacts with consent for
that channel and one planned row each, all due at ``DUE`` (``seed_bucket``), and what sample renders
need (``campaign_kit``, ``recipient``). ``harness.fire_bucket`` fires it, timed. The campaign keeps
one slot (``slot_choice: first``: the example splits two) and the settings have no quiet hours, so
every row is due and sendable at 07:30 UTC whatever the recipient's country."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert

from topslot.campaign import Campaign
from topslot.settings import Settings
from topslot.store import ledger
from topslot.store.db import open_engine, upgrade
from topslot.store.schema import consents, contacts, deliveries, dispatch_starts
from topslot.yaml_source import load_yaml

if TYPE_CHECKING:
    from topslot.dispatch.dispatcher import CampaignKit
    from topslot.store.dispatch import Recipient

BATCH = 20_000
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config/campaigns/mothers-day-2027.yaml"
DUE = datetime(2027, 5, 6, 7, 30, tzinfo=UTC)  # the bucket: everyone at 07:30 UTC
SEEDED_AT = datetime(2027, 5, 1, tzinfo=UTC)
NAMES = ["Lena", "Noah", "Mei", "Zoë", "Ana", "Chloé", "Priya", "Hana", "Olivia", "Sofia"]
TRACKING = "https://t.shop.example.com"


def bench_campaign(campaign_id: str, channel: str, content: dict[str, Any] | None = None) -> Campaign:
    """The example campaign (its templates, coupon and landing page), ``channel`` only (with the
    example's content for it unless ``content``), everyone with its consent in one 07:30 UTC bucket."""
    data = dict(load_yaml(EXAMPLE).data)
    data.update(
        id=campaign_id,
        channels=[channel],
        audience={"all": [{"consent": channel}]},
        schedule={
            "start": DUE.date(), "end": DUE.date(), "slots": ["07:30"], "timezone": "UTC", "days": "every_day",
            "missed_slot": {"grace": "12h", "then": "skip"},
        },
        content={channel: content or data["content"][channel]},
        slot_choice="first",  # one slot: nothing to choose (the example splits its two)
    )  # fmt: skip
    data.pop("costs", None)
    return Campaign.model_validate(data)


def bench_settings(
    var_dir: Path, *, processes: int = 1, url: str | None = None, default_country: str = "US", **channel: Any
) -> Settings:
    """The repository's templates, UTC, ``TRACKING``, and the channel's settings (``smtp=``, ``twilio=``, ``im=``)."""
    extra: dict[str, Any] = {"database_url": url} if url else {}
    return Settings(
        **extra,
        dispatch_processes=processes,
        config_dir=REPO / "config",
        templates_dir=REPO / "templates",
        var_dir=var_dir,
        default_timezone="UTC",
        default_country=default_country,
        tracking_base_url=TRACKING,
        quiet_hours={"email": None, "sms": None, "im": None},  # the bucket is at 07:30 UTC for everyone
        compliance={
            "postal_address": "Example Shop, 1 Example Road, Shanghai 200000",
            "sender_identity": "Example Shop",
        },
        **channel,
    )


def person(i: int, external_id: str, *, country: str = "US", **fields: Any) -> dict[str, Any]:
    """Contact ``i + 1``'s row (a first name from ``NAMES``, UTC, created at ``SEEDED_AT``) with ``fields``."""
    return {
        "id": i + 1,
        "external_id": external_id,
        "first_name": NAMES[i % len(NAMES)],
        "last_name": "Example",
        "gender": "female",
        "country": country,
        "timezone": "UTC",
        "created_at": SEEDED_AT,
        "updated_at": SEEDED_AT,
        **fields,
    }


def campaign_kit(campaign: Campaign, settings: Callable[[Path], Settings]) -> CampaignKit:
    """The campaign compiled as the dispatcher compiles it (``settings(var_dir)``, a throwaway key), for
    rendering samples outside the timed runs."""
    from topslot.dispatch.dispatcher import CampaignKit
    from topslot.links.keys import Keyring

    with tempfile.TemporaryDirectory() as var_dir:
        return CampaignKit(campaign, settings(Path(var_dir)), Keyring({"k1": b"x" * 32}))


def recipient(p: dict[str, Any], campaign_id: str, channel: str) -> Recipient:
    """What the dispatcher loads to render the bucket's row for contact row ``p``."""
    from topslot.store.dispatch import Recipient

    return Recipient(
        delivery_id=p["id"], lease_epoch=1, campaign_id=campaign_id, channel=channel, slot="07:30",
        slot_date=DUE.date(), due_utc=DUE, timezone="UTC", attempts=0, coupon_code=None, contact_id=p["id"],
        external_id=p["external_id"], email=p.get("email"), phone=p.get("phone"), first_name=p["first_name"],
        last_name=p["last_name"], gender=p["gender"], birth_date=None, age=None, country=p["country"],
        locale=p.get("locale"), im_ids=p.get("im_ids"), attributes=None,
    )  # fmt: skip


async def seed_bucket(
    url: str,
    campaign: Campaign,
    channel: str,
    person: Callable[[int], dict[str, Any]],
    n: int,
    *,
    due: datetime = DUE,
    at: datetime = SEEDED_AT,
) -> None:
    """``n`` contacts (``person(i)`` gives contact ``i + 1``'s row) with ``channel`` consent and one
    ``planned`` row each in ``campaign``'s bucket ``due`` (07:30, UTC)."""
    engine = open_engine(url)
    await upgrade(engine)
    await ledger.record_campaign(engine, campaign, "bench", at)
    async with engine.begin() as conn:
        for start in range(0, n, BATCH):
            ids = range(start, min(n, start + BATCH))
            await conn.execute(insert(contacts), [person(i) for i in ids])
            await conn.execute(
                insert(consents),
                [{"contact_id": i + 1, "channel": channel, "granted": True, "recorded_at": at} for i in ids],
            )
            await conn.execute(
                insert(deliveries),
                [
                    {
                        "campaign_id": campaign.id, "contact_id": i + 1, "channel": channel,
                        "slot_date": due.date(), "slot": "07:30", "due_utc": due, "timezone": "UTC",
                        "tz_source": "campaign", "state": "planned", "plan_run": "bench",
                        "created_at": at, "updated_at": at,
                    }
                    for i in ids
                ],
            )  # fmt: skip
        start_utc = due - timedelta(minutes=10)
        await conn.execute(
            insert(dispatch_starts).values(campaign_id=campaign.id, channel=channel, due_utc=due, start_utc=start_utc)
        )
    await engine.dispose()
