"""Recording conversions with their attribution.

``record_conversions`` takes validated inputs (``topslot.attribution.inputs``) from the webhook or a
CSV import, in batches of one transaction each. Per batch it looks up what attribution needs in a
few set-based queries (``evidence.gather``: coupon codes, verified click ids' deliveries and clicks,
contacts by external id, their sent and holdout rows), credits each order with
``rules.attribute`` and inserts it (``topslot.store.conversions.insert_conversions``). An order id
already stored with the same refund flag is ignored (``ON CONFLICT DO NOTHING``), so a re-sent
webhook or a re-imported file changes nothing. A refund inherits the attribution of its order when
that order is known (stored, or earlier in the same batch).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.coupons import GeneratedDecoder
from topslot.attribution.evidence import gather
from topslot.attribution.inputs import ConversionInput
from topslot.attribution.rules import Attribution
from topslot.campaign import Campaign
from topslot.coupons.keys import coupon_keys
from topslot.links.keys import Keyring
from topslot.logs import get_logger
from topslot.store.conversions import insert_conversions, stored_keys
from topslot.store.db import IMMEDIATE

BATCH_SIZE = 500
Source = Literal["webhook", "import"]
log = get_logger("conversions")


@dataclass
class RecordResult:
    """What ``record_conversions`` did."""

    recorded: int = 0
    duplicates: int = 0  # kind and id (with the same refund flag) already stored, or repeated in the input
    attributed: Counter[str] = field(default_factory=Counter)  # coupon | click | contact | none → rows recorded
    currency_mismatches: int = 0  # recorded, but in another currency than their campaign's


async def record_conversions(
    engine: AsyncEngine,
    inputs: Iterable[ConversionInput],
    now: datetime,
    *,
    campaigns: Mapping[str, Campaign],
    keyring: Keyring | None,
    source: Source = "webhook",
    batch_size: int = BATCH_SIZE,
) -> RecordResult:
    """Attribute and store ``inputs``, one transaction per ``batch_size``.

    ``campaigns``: the loaded campaigns (click windows, generated-code schemes, lift windows);
    ``keyring``: the signing keys (verifies click ids and generated coupons; None: neither is
    checked, pool codes and contact ids still work).
    """
    decoder = GeneratedDecoder(campaigns.values(), coupon_keys(keyring).values() if keyring is not None else ())
    result = RecordResult()
    seen: set[tuple[str, str, bool]] = set()
    batch: list[ConversionInput] = []
    for item in inputs:
        if item.key in seen:
            result.duplicates += 1
            continue
        seen.add(item.key)
        batch.append(item)
        if len(batch) >= batch_size:
            await _record_batch(engine, batch, now, campaigns, keyring, decoder, source, result)
            batch = []
    if batch:
        await _record_batch(engine, batch, now, campaigns, keyring, decoder, source, result)
    if result.recorded or result.duplicates:
        log.info(
            "conversions_recorded",
            source=source,
            recorded=result.recorded,
            duplicates=result.duplicates,
            **{f"by_{k}": v for k, v in sorted(result.attributed.items())},
        )
    return result


async def _record_batch(
    engine: AsyncEngine,
    batch: list[ConversionInput],
    now: datetime,
    campaigns: Mapping[str, Campaign],
    keyring: Keyring | None,
    decoder: GeneratedDecoder,
    source: Source,
    result: RecordResult,
) -> None:
    async with engine.execution_options(**IMMEDIATE).begin() as conn:
        stored = await stored_keys(conn, (c.order_id for c in batch))
        fresh = [c for c in batch if c.key not in stored]
        result.duplicates += len(batch) - len(fresh)
        if not fresh:
            return
        evidence = await gather(conn, fresh, campaigns, keyring, decoder)
        records = []
        credited: dict[str, Attribution] = {}  # order id → its order's credit, for refunds in this batch
        for conv in sorted(fresh, key=lambda c: c.refund):  # orders before refunds
            credit = evidence.originals.get(conv.key)
            if credit is None and conv.refund and conv.order_id in credited:
                credit = credited[conv.order_id]
            if credit is None:
                credit = evidence.attribute(conv, campaigns)
                if credit.note and "click" in credit.note and conv.click_id:
                    log.info("conversion_click_not_credited", reason=credit.note, campaign_id=credit.campaign_id)
            if conv.kind == "order" and not conv.refund:
                credited[conv.order_id] = credit
            records.append(_row(conv, credit, now, source))
            _check_currency(conv, credit, campaigns, result)
        written = await insert_conversions(conn, records)
    result.recorded += len(written)
    result.duplicates += len(records) - len(written)
    result.attributed.update(written)


def _row(conv: ConversionInput, credit: Attribution, now: datetime, source: Source) -> dict[str, Any]:
    return {
        "order_id": conv.order_id,
        "refund": conv.refund,
        "coupon_code": credit.coupon_code or conv.coupon_code,
        "click_id": conv.click_id,
        "contact_ref": conv.contact_ref,
        "contact_id": credit.contact_id,
        "campaign_id": credit.campaign_id,
        "delivery_id": credit.delivery_id,
        "channel": credit.channel,
        "slot": credit.slot,
        "attributed_by": credit.attributed_by,
        "revenue": conv.revenue,
        "discount": conv.discount,
        "units": conv.units,
        "currency": conv.currency,
        "margin": conv.margin,
        "kind": conv.kind,
        "category": conv.category,
        "source": source,
        "occurred_at": conv.occurred_at,
        "received_at": now,
    }


def _check_currency(
    conv: ConversionInput, credit: Attribution, campaigns: Mapping[str, Campaign], result: RecordResult
) -> None:
    campaign = campaigns.get(credit.campaign_id) if credit.campaign_id else None
    if campaign is not None and conv.currency is not None and conv.currency != campaign.costs.currency:
        result.currency_mismatches += 1
        log.warning(
            "conversion_currency_mismatch",
            campaign_id=campaign.id,
            currency=conv.currency,
            campaign_currency=campaign.costs.currency,
        )
