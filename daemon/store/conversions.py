"""Conversions in the database: recording orders with their attribution, and the per-group facts
ROI reports are computed from.

``record_conversions`` takes validated inputs (``daemon.attribution.inputs``) from the webhook or a
CSV import, looks up what attribution needs in a few set-based queries per batch (coupon codes,
verified click ids' deliveries and clicks, contacts by external id, their sent and holdout rows),
credits each order with ``daemon.attribution.rules.attribute`` and inserts it. An order id already
stored with the same refund flag is ignored (``ON CONFLICT DO NOTHING``), so a re-sent webhook or a
re-imported file changes nothing. A refund inherits the attribution of its order when that order
is known.

``conversion_facts`` gathers, for one campaign, every coupon/click conversion (``lines``), the
messages handed over per channel, and the treated/holdout counts of the lift, per group.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import and_, case, distinct, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from daemon.attribution.coupons import CouponMatch, GeneratedDecoder, canonical_or_none, code_spellings
from daemon.attribution.inputs import ConversionInput
from daemon.attribution.roi import ConversionLine, LiftCounts, RoiFigures, Totals, money, roi_figures, totals
from daemon.attribution.rules import (
    HOLDOUT_REASON,
    REVENUE_ATTRIBUTIONS,
    SENT_STATES,
    Attribution,
    ClickFacts,
    DeliveryFacts,
    attribute,
)
from daemon.attribution.windows import campaign_window
from daemon.campaign import Campaign, Costs
from daemon.coupons import codes
from daemon.coupons.keys import coupon_keys
from daemon.links import tokens
from daemon.links.keys import Keyring
from daemon.logs import get_logger
from daemon.store.db import IMMEDIATE
from daemon.store.dialect import upsert_insert
from daemon.store.schema import contacts, conversions, coupon_codes, deliveries, events

BATCH_SIZE = 500
Source = Literal["webhook", "import"]
GroupBy = Literal["channel", "slot", "timezone"]
GROUP_KEYS: tuple[str, ...] = ("channel", "slot", "timezone")
ALL = "all"  # the group key when facts are not grouped
NO_GROUP = "(none)"  # conversions credited to the campaign without a known delivery
_SCANNER = "scanner"
log = get_logger("conversions")


@dataclass
class RecordResult:
    """What ``record_conversions`` did."""

    recorded: int = 0
    duplicates: int = 0  # order id (with the same refund flag) already stored, or repeated in the input
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
    seen: set[tuple[str, bool]] = set()
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
        stored = await _stored_keys(conn, batch)
        fresh = [c for c in batch if c.key not in stored]
        result.duplicates += len(batch) - len(fresh)
        if not fresh:
            return
        originals = await _originals(conn, [c for c in fresh if c.refund])
        pools = {c.coupon.pool for c in campaigns.values() if c.coupon is not None and c.coupon.pool}
        wanted = [c for c in fresh if c.coupon_code and c.key not in originals]
        coupons = await _coupon_matches(conn, wanted, decoder, pools)
        clicks, click_notes = _verified_clicks(fresh, keyring)
        contact_ids = await _contact_ids(conn, {c.contact_ref for c in fresh if c.contact_ref})
        rows_by_id, rows_by_pair, rows_by_contact = await _deliveries(
            conn, clicks.values(), coupons.values(), fresh, contact_ids
        )
        click_times = await _click_times(conn, {d for d in clicks.values() if d in rows_by_id})
        records = []
        credited: dict[str, Attribution] = {}  # order id → its order's credit, for refunds in this batch
        for conv in sorted(fresh, key=lambda c: c.refund):  # orders before refunds
            credit = originals.get(conv.key)
            if credit is None and conv.refund and conv.order_id in credited:
                credit = credited[conv.order_id]
            if credit is None:
                coupon = coupons.get(conv.key)
                delivery_id = clicks.get(conv.key)
                click = None
                if delivery_id is not None:
                    click = ClickFacts(rows_by_id.get(delivery_id), click_times.get(delivery_id, ()))
                contact_id = contact_ids.get(conv.contact_ref) if conv.contact_ref else None
                person = (
                    contact_id
                    if contact_id is not None
                    else click.delivery.contact_id
                    if click and click.delivery
                    else None
                )
                credit = attribute(
                    conv,
                    coupon=coupon,
                    coupon_deliveries=rows_by_pair.get((coupon.campaign_id, coupon.contact_id), ()) if coupon else (),
                    click=click,
                    click_note=click_notes.get(conv.key),
                    contact_id=contact_id,
                    contact_deliveries=rows_by_contact.get(person, ()) if person is not None else (),
                    campaigns=campaigns,
                )
                if credit.note and "click" in credit.note and conv.click_id:
                    log.info("conversion_click_not_credited", reason=credit.note, campaign_id=credit.campaign_id)
            if not conv.refund:
                credited[conv.order_id] = credit
            records.append(_row(conv, credit, now, source))
            _check_currency(conv, credit, campaigns, result)
        stmt = upsert_insert(conn, conversions).on_conflict_do_nothing().returning(conversions.c.attributed_by)
        written = (await conn.execute(stmt, records)).scalars().all() if records else []
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


# ---------------------------------------------------------------- look-ups (one query each per batch)


async def _stored_keys(conn: AsyncConnection, batch: Sequence[ConversionInput]) -> set[tuple[str, bool]]:
    query = select(conversions.c.order_id, conversions.c.refund).where(
        conversions.c.order_id.in_(sorted({c.order_id for c in batch}))
    )
    return {(r.order_id, bool(r.refund)) for r in await conn.execute(query)}


async def _originals(conn: AsyncConnection, refunds: Sequence[ConversionInput]) -> dict[tuple[str, bool], Attribution]:
    """Refund key → the attribution of its order, for refunds whose order is already stored (a
    refund in the same batch as its order takes it from there, see ``_record_batch``)."""
    if not refunds:
        return {}
    ids = sorted({c.order_id for c in refunds})
    query = select(
        conversions.c.order_id,
        conversions.c.attributed_by,
        conversions.c.campaign_id,
        conversions.c.delivery_id,
        conversions.c.channel,
        conversions.c.slot,
        conversions.c.contact_id,
        conversions.c.coupon_code,
    ).where(conversions.c.order_id.in_(ids), conversions.c.refund.is_(False))
    found = {
        (r.order_id, True): Attribution(
            r.attributed_by, r.campaign_id, r.delivery_id, r.channel, r.slot, r.contact_id, r.coupon_code, "order"
        )
        for r in await conn.execute(query)
    }
    return found


async def _coupon_matches(
    conn: AsyncConnection, batch: Sequence[ConversionInput], decoder: GeneratedDecoder, pools: set[str]
) -> dict[tuple[str, bool], CouponMatch]:
    """Conversion key → the campaign and contact its code belongs to.

    Generated codes of loaded campaigns are decoded offline; the others are looked up among the
    codes handed out (reserved or assigned), first under the usual spellings (index), then, for
    what is still unknown, by comparing canonical forms with the handed-out codes of ``pools``
    (the loaded campaigns' pools: a scan of those codes, so it is limited to them).
    """
    found: dict[tuple[str, bool], CouponMatch] = {}
    pending: dict[tuple[str, bool], str] = {}
    for conv in batch:
        match = decoder.decode(conv.coupon_code or "")
        if match is not None:
            found[conv.key] = match
        else:
            pending[conv.key] = conv.coupon_code or ""
    if not pending:
        return found
    spellings = {key: code_spellings(typed) for key, typed in pending.items()}
    wanted = sorted({s for forms in spellings.values() for s in forms})
    by_code = await _handed_out(conn, coupon_codes.c.code.in_(wanted), coupon_codes.c.code)
    missing: dict[tuple[str, bool], str] = {}
    for key, forms in spellings.items():
        match = next((by_code[f] for f in forms if f in by_code), None)
        if match is not None:
            found[key] = match
        elif (canon := canonical_or_none(pending[key])) is not None:
            missing[key] = canon
    if missing and pools:
        # only the handed-out codes of loaded campaigns' pools: the (pool, state, id) index bounds the scan
        expression = _canonical_sql(coupon_codes.c.code)
        where = and_(
            coupon_codes.c.pool.in_(sorted(pools)),
            coupon_codes.c.state.in_(("reserved", "assigned")),
            expression.in_(sorted(set(missing.values()))),
        )
        by_canon = await _handed_out(conn, where, expression)
        for key, canon in missing.items():
            if canon in by_canon:
                found[key] = by_canon[canon]
    return found


async def _handed_out(conn: AsyncConnection, where: Any, key_column: Any) -> dict[str, CouponMatch]:
    """Handed-out codes matching ``where``, by ``key_column``; an assigned code beats a reserved one."""
    query = (
        select(
            key_column.label("key"),
            coupon_codes.c.code,
            coupon_codes.c.pool,
            coupon_codes.c.state,
            coupon_codes.c.campaign_id,
            coupon_codes.c.contact_id,
        )
        .where(where, coupon_codes.c.contact_id.is_not(None), coupon_codes.c.campaign_id.is_not(None))
        .order_by(coupon_codes.c.id)
    )
    result: dict[str, CouponMatch] = {}
    states: dict[str, str] = {}
    for r in await conn.execute(query):
        if r.key in result and not (r.state == "assigned" and states[r.key] != "assigned"):
            continue
        source = "generated" if r.pool.startswith("gen:") else "pool"
        result[r.key] = CouponMatch(r.campaign_id, r.contact_id, r.code, source)
        states[r.key] = r.state
    return result


def _canonical_sql(column: Any) -> Any:
    """``daemon.coupons.codes.canonical`` as an SQL expression (upper-case, separators dropped,
    O→0, I/L→1, U→V): portable ``upper``/``replace`` calls, the same on SQLite and PostgreSQL."""
    expression = func.upper(column)
    for separator in codes.SEPARATORS:
        expression = func.replace(expression, separator, "")
    for typed, meant in (("O", "0"), ("I", "1"), ("L", "1"), ("U", "V")):
        expression = func.replace(expression, typed, meant)
    return expression


def _verified_clicks(
    batch: Sequence[ConversionInput], keyring: Keyring | None
) -> tuple[dict[tuple[str, bool], int], dict[tuple[str, bool], str]]:
    """Conversion key → the delivery its click id names; and why the others do not count."""
    delivery_ids: dict[tuple[str, bool], int] = {}
    notes: dict[tuple[str, bool], str] = {}
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


def _error_name(exc: Exception) -> str:
    return {
        tokens.MalformedToken: "malformed",
        tokens.BadSignature: "bad_signature",
        tokens.UnknownKey: "unknown_key",
        tokens.WrongKind: "wrong_kind",
    }.get(type(exc), "invalid")


async def _contact_ids(conn: AsyncConnection, refs: set[str | None]) -> dict[str, int]:
    wanted = sorted(r for r in refs if r)
    if not wanted:
        return {}
    query = select(contacts.c.external_id, contacts.c.id).where(contacts.c.external_id.in_(wanted))
    return {r.external_id: r.id for r in await conn.execute(query)}


_DELIVERY_COLUMNS = (
    deliveries.c.id,
    deliveries.c.campaign_id,
    deliveries.c.contact_id,
    deliveries.c.channel,
    deliveries.c.slot,
    deliveries.c.state,
    deliveries.c.skip_reason,
    deliveries.c.coupon_code,
    deliveries.c.due_utc,
    deliveries.c.updated_at,
)
_SENT_OR_HELD = or_(
    deliveries.c.state.in_(SENT_STATES),
    and_(deliveries.c.state == "skipped", deliveries.c.skip_reason == HOLDOUT_REASON),
)


def _facts(r: Any) -> DeliveryFacts:
    return DeliveryFacts(
        id=r.id,
        campaign_id=r.campaign_id,
        contact_id=r.contact_id,
        channel=r.channel,
        slot=r.slot,
        state=r.state,
        skip_reason=r.skip_reason,
        coupon_code=r.coupon_code,
        due_utc=r.due_utc,
        handed_over_at=r.updated_at if r.state in SENT_STATES else None,
    )


async def _deliveries(
    conn: AsyncConnection,
    click_ids: Iterable[int],
    coupons: Iterable[CouponMatch],
    batch: Sequence[ConversionInput],
    contact_ids: Mapping[str, int],
) -> tuple[dict[int, DeliveryFacts], dict[tuple[str, int], list[DeliveryFacts]], dict[int, list[DeliveryFacts]]]:
    """Ledger rows by id (clicks), by (campaign, contact) (coupons) and by contact (lift)."""
    by_id: dict[int, DeliveryFacts] = {}
    ids = sorted(set(click_ids))
    if ids:
        for r in await conn.execute(select(*_DELIVERY_COLUMNS).where(deliveries.c.id.in_(ids))):
            by_id[r.id] = _facts(r)
    by_pair: dict[tuple[str, int], list[DeliveryFacts]] = defaultdict(list)
    pairs = {(m.campaign_id, m.contact_id) for m in coupons}
    if pairs:
        query = select(*_DELIVERY_COLUMNS).where(
            deliveries.c.campaign_id.in_(sorted({p[0] for p in pairs})),
            deliveries.c.contact_id.in_(sorted({p[1] for p in pairs})),
            deliveries.c.state.in_(SENT_STATES),
        )
        for r in await conn.execute(query):
            if (r.campaign_id, r.contact_id) in pairs:
                by_pair[(r.campaign_id, r.contact_id)].append(_facts(r))
    # contacts whose orders may fall back to contact attribution (holdout lift)
    people = set(contact_ids.values()) | {d.contact_id for d in by_id.values()}
    by_contact: dict[int, list[DeliveryFacts]] = defaultdict(list)
    if people and any(c.contact_ref or c.click_id for c in batch):
        query = select(*_DELIVERY_COLUMNS).where(deliveries.c.contact_id.in_(sorted(people)), _SENT_OR_HELD)
        for r in await conn.execute(query):
            by_contact[r.contact_id].append(_facts(r))
    return by_id, by_pair, by_contact


async def _click_times(conn: AsyncConnection, delivery_ids: set[int]) -> dict[int, tuple[datetime, ...]]:
    """Delivery → its recorded clicks: the human ones, or all of them when none is human."""
    if not delivery_ids:
        return {}
    query = select(events.c.delivery_id, events.c.occurred_at, events.c.label).where(
        events.c.delivery_id.in_(sorted(delivery_ids)), events.c.kind == "click"
    )
    human: dict[int, list[datetime]] = defaultdict(list)
    every: dict[int, list[datetime]] = defaultdict(list)
    for r in await conn.execute(query):
        every[r.delivery_id].append(r.occurred_at)
        if r.label != _SCANNER:
            human[r.delivery_id].append(r.occurred_at)
    return {d: tuple(sorted(human.get(d) or times)) for d, times in every.items()}


# ---------------------------------------------------------------- facts for reports


@dataclass(frozen=True, slots=True)
class SentCount:
    """Messages handed over in one (channel, slot, zone) of a campaign."""

    channel: str
    slot: str
    timezone: str
    messages: int


@dataclass(frozen=True, slots=True)
class GroupFacts:
    """One group of a campaign: a channel, a slot, a zone, or ``all``."""

    key: str
    sent: dict[str, int]  # channel → messages handed over (sent, delivered, bounced, unknown)
    totals: Totals  # coupon/click conversions credited to deliveries of this group
    lift: LiftCounts  # contacts sent / held out in this group, and their purchases in the window

    def figures(self, costs: Costs) -> RoiFigures:
        return roi_figures(self.key, self.totals, self.sent, costs, self.lift)


@dataclass(frozen=True, slots=True)
class ConversionFacts:
    """What the ROI report of one campaign needs from conversions and the ledger.

    ``groups`` is keyed by the ``by`` column's values (``"all"`` only, when ``by`` is None);
    conversions credited by coupon to the campaign without a sent delivery go to group ``"(none)"``
    and always count in ``total``. ``lines`` has every coupon/click conversion (for other
    groupings, e.g. by segment: group them with ``daemon.attribution.roi.totals``).
    """

    campaign_id: str
    currency: str
    by: str | None
    window: tuple[datetime, datetime]  # the lift window (UTC)
    lines: list[ConversionLine]
    sent: list[SentCount]
    groups: dict[str, GroupFacts]
    total: GroupFacts

    @property
    def currency_mismatches(self) -> int:
        return self.total.totals.currency_mismatches

    def figures(self, costs: Costs) -> dict[str, RoiFigures]:
        """ROI figures per group, and under ``"all"`` the total."""
        result = {key: group.figures(costs) for key, group in sorted(self.groups.items())}
        result[ALL] = self.total.figures(costs)
        return result


async def conversion_facts(engine: AsyncEngine, campaign: Campaign, *, by: GroupBy | None = None) -> ConversionFacts:
    """The conversions, sends and lift counts of ``campaign``, per ``by`` group (channel, slot or
    timezone) and in total. Money in ``campaign.costs.currency``; other currencies are counted in
    ``currency_mismatches`` and left out of the sums."""
    if by is not None and by not in GROUP_KEYS:
        raise ValueError(f"group by one of {', '.join(GROUP_KEYS)}, not {by!r}")
    currency = campaign.costs.currency
    window = campaign_window(campaign)
    async with engine.connect() as conn:
        lines = await _lines(conn, campaign.id)
        sent = await _sent(conn, campaign.id)
        total_lift = (await _lift(conn, campaign.id, None, window, currency)).get(ALL, LiftCounts())
        group_lift = await _lift(conn, campaign.id, by, window, currency) if by else {}
    margin = campaign.costs.margin
    total = GroupFacts(
        ALL, _sent_by_channel(sent, None, None), totals(lines, currency=currency, default_margin=margin), total_lift
    )
    groups: dict[str, GroupFacts] = {}
    if by is None:
        groups[ALL] = total
    else:
        grouped: dict[str, list[ConversionLine]] = defaultdict(list)
        for line in lines:
            grouped[getattr(line, by) or NO_GROUP].append(line)
        keys = set(grouped) | {getattr(s, by) for s in sent} | set(group_lift)
        for key in sorted(keys):
            groups[key] = GroupFacts(
                key,
                _sent_by_channel(sent, by, key),
                totals(grouped.get(key, ()), currency=currency, default_margin=margin),
                group_lift.get(key, LiftCounts()),
            )
    return ConversionFacts(campaign.id, currency, by, window, lines, sent, groups, total)


async def _lines(conn: AsyncConnection, campaign_id: str) -> list[ConversionLine]:
    query = (
        select(
            conversions.c.order_id,
            conversions.c.refund,
            conversions.c.revenue,
            conversions.c.discount,
            conversions.c.units,
            conversions.c.margin,
            conversions.c.currency,
            conversions.c.contact_id,
            conversions.c.attributed_by,
            conversions.c.delivery_id,
            conversions.c.channel,
            conversions.c.slot,
            deliveries.c.timezone,
            conversions.c.occurred_at,
        )
        .select_from(conversions.outerjoin(deliveries, deliveries.c.id == conversions.c.delivery_id))
        .where(conversions.c.campaign_id == campaign_id, conversions.c.attributed_by.in_(REVENUE_ATTRIBUTIONS))
        .order_by(conversions.c.id)
    )
    return [
        ConversionLine(
            order_id=r.order_id,
            refund=bool(r.refund),
            revenue=money(Decimal(str(r.revenue))),
            discount=money(Decimal(str(r.discount))),
            units=r.units,
            margin=Decimal(str(r.margin)) if r.margin is not None else None,
            currency=r.currency,
            contact_id=r.contact_id,
            attributed_by=r.attributed_by,
            delivery_id=r.delivery_id,
            channel=r.channel,
            slot=r.slot,
            timezone=r.timezone,
            occurred_at=r.occurred_at,
        )
        for r in await conn.execute(query)
    ]


async def _sent(conn: AsyncConnection, campaign_id: str) -> list[SentCount]:
    query = (
        select(deliveries.c.channel, deliveries.c.slot, deliveries.c.timezone, func.count())
        .where(deliveries.c.campaign_id == campaign_id, deliveries.c.state.in_(SENT_STATES))
        .group_by(deliveries.c.channel, deliveries.c.slot, deliveries.c.timezone)
        .order_by(deliveries.c.channel, deliveries.c.slot, deliveries.c.timezone)
    )
    return [SentCount(r[0], r[1], r[2], r[3]) for r in await conn.execute(query)]


def _sent_by_channel(sent: Iterable[SentCount], by: str | None, key: str | None) -> dict[str, int]:
    result: Counter[str] = Counter()
    for s in sent:
        if by is None or getattr(s, by) == key:
            result[s.channel] += s.messages
    return dict(result)


async def _lift(
    conn: AsyncConnection, campaign_id: str, by: str | None, window: tuple[datetime, datetime], currency: str
) -> dict[str, LiftCounts]:
    """Per group: distinct contacts sent / held out, how many ordered in the window (any attribution,
    any campaign: the lift compares total purchase rates), and their net revenue."""
    group = deliveries.c[by] if by else literal(ALL)
    arm = case((deliveries.c.state == "skipped", literal("holdout")), else_=literal("treated"))
    members = (
        select(deliveries.c.contact_id.label("contact_id"), group.label("grp"), arm.label("arm"))
        .where(deliveries.c.campaign_id == campaign_id, _SENT_OR_HELD)
        .distinct()
        .subquery("members")
    )
    signed = case((conversions.c.refund.is_(True), -conversions.c.revenue), else_=conversions.c.revenue)
    bought = case((conversions.c.refund.is_(True), 0), else_=1)
    start, end = window
    spent = (
        select(
            conversions.c.contact_id.label("contact_id"),
            func.sum(signed).label("net"),
            func.max(bought).label("bought"),
        )
        .where(
            conversions.c.contact_id.is_not(None),
            conversions.c.occurred_at >= start,
            conversions.c.occurred_at < end,
            or_(conversions.c.currency.is_(None), conversions.c.currency == currency),
        )
        .group_by(conversions.c.contact_id)
        .subquery("spent")
    )
    query = (
        select(
            members.c.grp,
            members.c.arm,
            func.count(distinct(members.c.contact_id)),
            func.coalesce(func.sum(spent.c.bought), 0),
            func.coalesce(func.sum(spent.c.net), 0),
        )
        .select_from(members.outerjoin(spent, spent.c.contact_id == members.c.contact_id))
        .group_by(members.c.grp, members.c.arm)
    )
    found: dict[str, dict[str, Any]] = defaultdict(dict)
    for grp, which, people, buyers, net in await conn.execute(query):
        found[grp][which] = (int(people), int(buyers), money(Decimal(str(net))))
    result = {}
    for grp, arms in found.items():
        t = arms.get("treated", (0, 0, Decimal(0)))
        h = arms.get("holdout", (0, 0, Decimal(0)))
        result[grp] = LiftCounts(t[0], t[1], t[2], h[0], h[1], h[2])
    return result
