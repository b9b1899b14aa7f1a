"""What the store knows about a batch of conversions, gathered in a few set-based look-ups
(``topslot.store.conversions``) and handed to ``rules.attribute`` one conversion at a time.

For each conversion of the batch: the credit of its order when it is a refund whose order is
stored; the campaign and contact its coupon code belongs to (generated codes decoded offline,
others looked up among the codes handed out: first under the usual spellings, then by canonical
form among the loaded campaigns' pools); the delivery its click id names once the signature is
verified, with the clicks recorded on it; the contact its ``contact_ref`` names; and the ledger
rows the rules choose from (that contact's in the coupon's campaign, and every handed-over or
holdout row of the people concerned, for the lift).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from topslot.attribution.coupons import CouponMatch, GeneratedDecoder, canonical_or_none, code_spellings
from topslot.attribution.inputs import ConversionInput
from topslot.attribution.rules import HOLDOUT_REASON, SENT_STATES, Attribution, ClickFacts, DeliveryFacts, attribute
from topslot.campaign import Campaign
from topslot.links import tokens
from topslot.links.keys import Keyring
from topslot.logs import get_logger
from topslot.store import conversions as store
from topslot.store.conversions import HandedOutCode, LedgerRow, StoredClick, StoredCredit

K = TypeVar("K")
Key = tuple[str, str, bool]  # ConversionInput.key: (kind, id, refund)
SCANNER = "scanner"  # the label of a click by a machine (topslot.tracking.classify)
ORIGINAL_NOTE = "order"  # the note of a refund's credit taken from its stored order
log = get_logger("conversions")


@dataclass(frozen=True)
class Evidence:
    """What was found for one batch, by conversion key (see the module docstring)."""

    originals: dict[Key, Attribution]  # refund → the credit of its stored order
    coupons: dict[Key, CouponMatch]  # → the owner of its coupon code
    clicks: dict[Key, int]  # → the delivery its verified click id names
    click_notes: dict[Key, str]  # → why its click id does not count (not checked, invalid)
    contact_ids: dict[str, int]  # contact_ref → contact id
    by_id: dict[int, DeliveryFacts]  # the rows clicks name
    by_pair: dict[tuple[str, int], list[DeliveryFacts]]  # (campaign, contact) → its handed-over rows (coupons)
    by_contact: dict[int, list[DeliveryFacts]]  # contact → its handed-over and holdout rows (lift)
    click_times: dict[int, tuple[datetime, ...]]  # delivery → its clicks (see ``click_times``)

    def attribute(self, conv: ConversionInput, campaigns: Mapping[str, Campaign]) -> Attribution:
        """``rules.attribute`` with what was found for ``conv``."""
        coupon = self.coupons.get(conv.key)
        delivery_id = self.clicks.get(conv.key)
        click = None
        if delivery_id is not None:
            click = ClickFacts(self.by_id.get(delivery_id), self.click_times.get(delivery_id, ()))
        contact_id = self.contact_ids.get(conv.contact_ref) if conv.contact_ref else None
        person = (
            contact_id if contact_id is not None else click.delivery.contact_id if click and click.delivery else None
        )
        return attribute(
            conv,
            coupon=coupon,
            coupon_deliveries=self.by_pair.get((coupon.campaign_id, coupon.contact_id), ()) if coupon else (),
            click=click,
            click_note=self.click_notes.get(conv.key),
            contact_id=contact_id,
            contact_deliveries=self.by_contact.get(person, ()) if person is not None else (),
            campaigns=campaigns,
        )


async def gather(
    conn: AsyncConnection,
    batch: Sequence[ConversionInput],
    campaigns: Mapping[str, Campaign],
    keyring: Keyring | None,
    decoder: GeneratedDecoder,
) -> Evidence:
    """Everything ``batch`` needs, in the caller's transaction (``keyring`` None: click ids are
    not checked)."""
    originals = await _originals(conn, [c for c in batch if c.refund])
    pools = {c.coupon.pool for c in campaigns.values() if c.coupon is not None and c.coupon.pool}
    wanted = [c for c in batch if c.coupon_code and c.key not in originals]
    coupons = await _coupon_matches(conn, wanted, decoder, pools)
    clicks, click_notes = verified_clicks(batch, keyring)
    contact_ids = await store.contact_ids(conn, {c.contact_ref for c in batch if c.contact_ref})
    by_id = _facts_by_id(await store.ledger_rows(conn, clicks.values()))
    pairs = {(m.campaign_id, m.contact_id) for m in coupons.values()}
    by_pair = _facts_lists(await store.handed_over_rows(conn, pairs))
    # contacts whose orders may fall back to contact attribution (holdout lift)
    people = set(contact_ids.values()) | {d.contact_id for d in by_id.values()}
    by_contact: dict[int, list[DeliveryFacts]] = {}
    if people and any(c.contact_ref or c.click_id for c in batch):
        rows = await store.handed_over_or_held_rows(conn, people, holdout_reason=HOLDOUT_REASON)
        by_contact = _facts_lists(rows)
    found_clicks = await store.clicks(conn, {d for d in clicks.values() if d in by_id})
    return Evidence(
        originals, coupons, clicks, click_notes, contact_ids, by_id, by_pair, by_contact, click_times(found_clicks)
    )


async def _originals(conn: AsyncConnection, refunds: Sequence[ConversionInput]) -> dict[Key, Attribution]:
    """Refund key → the attribution of its order, for refunds whose order is already stored (a
    refund in the same batch as its order takes it from there, see ``record``)."""
    if not refunds:
        return {}
    stored = await store.order_credits(conn, {c.order_id for c in refunds})
    return {("order", order_id, True): _attribution(credit) for order_id, credit in stored.items()}


def _attribution(credit: StoredCredit) -> Attribution:
    return Attribution(
        credit.attributed_by,  # type: ignore[arg-type]  # the schema's check constraint: one of AttributedBy
        credit.campaign_id,
        credit.delivery_id,
        credit.channel,
        credit.slot,
        credit.contact_id,
        credit.coupon_code,
        ORIGINAL_NOTE,
    )


async def _coupon_matches(
    conn: AsyncConnection, batch: Sequence[ConversionInput], decoder: GeneratedDecoder, pools: set[str]
) -> dict[Key, CouponMatch]:
    """Conversion key → the campaign and contact its code belongs to.

    Generated codes of loaded campaigns are decoded offline; the others are looked up among the
    codes handed out (reserved or assigned), first under the usual spellings (index), then, for
    what is still unknown, by comparing canonical forms with the handed-out codes of ``pools``
    (the loaded campaigns' pools: a scan of those codes, so it is limited to them).
    """
    found: dict[Key, CouponMatch] = {}
    pending: dict[Key, str] = {}
    for conv in batch:
        match = decoder.decode(conv.coupon_code or "")
        if match is not None:
            found[conv.key] = match
        else:
            pending[conv.key] = conv.coupon_code or ""
    if not pending:
        return found
    spellings = {key: code_spellings(typed) for key, typed in pending.items()}
    by_code = await store.handed_out_codes(conn, {s for forms in spellings.values() for s in forms})
    missing: dict[Key, str] = {}
    for key, forms in spellings.items():
        code = next((by_code[f] for f in forms if f in by_code), None)
        if code is not None:
            found[key] = _coupon_match(code)
        elif (canon := canonical_or_none(pending[key])) is not None:
            missing[key] = canon
    if missing and pools:
        by_canon = await store.handed_out_by_canonical(conn, set(missing.values()), pools)
        for key, canon in missing.items():
            if canon in by_canon:
                found[key] = _coupon_match(by_canon[canon])
    return found


def _coupon_match(code: HandedOutCode) -> CouponMatch:
    return CouponMatch(code.campaign_id, code.contact_id, code.code, "generated" if code.generated else "pool")


def verified_clicks(batch: Sequence[ConversionInput], keyring: Keyring | None) -> tuple[dict[Key, int], dict[Key, str]]:
    """Conversion key → the delivery its click id names; and why the others do not count."""
    delivery_ids: dict[Key, int] = {}
    notes: dict[Key, str] = {}
    for conv in batch:
        if not conv.click_id:
            continue
        if keyring is None:
            notes[conv.key] = "click_not_checked"
            continue
        try:
            claims = tokens.verify(conv.click_id, keyring, kind="click")
        except tokens.TokenError as exc:
            notes[conv.key] = "click_id_" + _error_name(exc)
            log.warning("conversion_click_id_invalid", reason=_error_name(exc))
            continue
        delivery_ids[conv.key] = claims.delivery_id
    return delivery_ids, notes


def _error_name(exc: tokens.TokenError) -> str:
    return {
        tokens.MalformedToken: "malformed",
        tokens.BadSignature: "bad_signature",
        tokens.UnknownKey: "unknown_key",
        tokens.WrongKind: "wrong_kind",
    }.get(type(exc), "invalid")


def click_times(found: Sequence[StoredClick]) -> dict[int, tuple[datetime, ...]]:
    """Delivery → its clicks, sorted: the human ones, or all of them when none is human."""
    human: dict[int, list[datetime]] = defaultdict(list)
    every: dict[int, list[datetime]] = defaultdict(list)
    for click in found:
        every[click.delivery_id].append(click.occurred_at)
        if click.label != SCANNER:
            human[click.delivery_id].append(click.occurred_at)
    return {d: tuple(sorted(human.get(d) or times)) for d, times in every.items()}


def delivery_facts(row: LedgerRow) -> DeliveryFacts:
    """A ledger row as the rules read it: handed over at its last update once sent."""
    return DeliveryFacts(
        id=row.id,
        campaign_id=row.campaign_id,
        contact_id=row.contact_id,
        channel=row.channel,
        slot=row.slot,
        state=row.state,
        skip_reason=row.skip_reason,
        coupon_code=row.coupon_code,
        due_utc=row.due_utc,
        handed_over_at=row.updated_at if row.state in SENT_STATES else None,
    )


def _facts_by_id(rows: Mapping[int, LedgerRow]) -> dict[int, DeliveryFacts]:
    return {key: delivery_facts(row) for key, row in rows.items()}


def _facts_lists(rows: Mapping[K, Sequence[LedgerRow]]) -> dict[K, list[DeliveryFacts]]:
    return {key: [delivery_facts(row) for row in found] for key, found in rows.items()}
