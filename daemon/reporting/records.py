"""A report group as one flat, ordered record with stable keys (shared by JSON, CSV and the tables).

Decimals stay Decimal here; each renderer decides how to print them. ``None`` means unknown."""

from __future__ import annotations

from typing import Any

from topslot.delivery import SkipReason
from topslot.reporting.model import GroupFigures, Report
from topslot.reporting.numbers import money, percent

# the ledger's skip reasons, always present in CSV so its columns are stable
KNOWN_SKIP_REASONS: tuple[str, ...] = tuple(SkipReason)

# (key, label) in display order; sections are for the table and HTML
SECTIONS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Deliveries",
        (
            ("planned", "planned"),
            ("pending", "pending"),
            ("sent", "sent"),
            ("outbox_writes", "  of which outbox writes (not sent, not paid)"),
            ("accepted", "accepted"),
            ("delivered", "delivered"),
            ("bounced", "bounced"),
            ("failed", "failed"),
            ("unknown", "unknown"),
            ("skipped", "skipped"),
        ),
    ),
    (
        "Engagement (human; machine beside)",
        (
            ("opens_human_unique", "opens, unique"),
            ("opens_human_total", "opens, total"),
            ("opens_machine_unique", "machine opens, unique"),
            ("opens_machine_total", "machine opens, total"),
            ("clicks_human_unique", "clicks, unique"),
            ("clicks_human_total", "clicks, total"),
            ("clicks_machine_unique", "machine clicks, unique"),
            ("clicks_machine_total", "machine clicks, total"),
            ("ctr", "CTR"),
            ("click_to_open", "click-to-open"),
            ("unsubscribes", "unsubscribes"),
        ),
    ),
    (
        "Returned mail (email)",
        (
            ("hard_bounces", "hard bounces"),
            ("soft_bounces", "soft bounces"),
            ("blocked", "blocked"),
            ("complaints", "spam complaints"),
            ("hard_bounce_rate", "hard bounce rate"),
            ("soft_bounce_rate", "soft bounce rate"),
            ("complaint_rate", "complaint rate"),
        ),
    ),
    (
        "Sales and ROI",
        (
            ("signups", "registered users"),
            ("purchasers", "purchasers"),
            ("orders", "orders"),
            ("units", "units"),
            ("revenue", "revenue"),
            ("refunds", "refunds"),
            ("net_revenue", "net revenue"),
            ("gross_profit", "gross profit"),
            ("margin_pct", "margin %"),
            ("margin_basis", "margin from"),
            ("discount_cost", "discount cost"),
            ("send_cost", "send cost"),
            ("fixed_cost", "fixed cost"),
            ("promotion_cost", "promotion cost"),
            ("net_profit", "net profit"),
            ("roi", "ROI"),
            ("incremental_roi", "incremental ROI"),
        ),
    ),
    (
        "Holdout",
        (
            ("treated_contacts", "contacts sent to"),
            ("treated_buyers", "of whom bought"),
            ("holdout_contacts", "contacts held out"),
            ("holdout_buyers", "of whom bought"),
            ("treated_rate", "buy rate, sent"),
            ("holdout_rate", "buy rate, held out"),
            ("lift", "lift vs holdout"),
            ("incremental_buyers", "incremental buyers"),
            ("incremental_revenue", "incremental net revenue"),
        ),
    ),
)
RATIO_KEYS = frozenset(
    {
        "ctr",
        "click_to_open",
        "roi",
        "incremental_roi",
        "margin_pct",
        "treated_rate",
        "holdout_rate",
        "lift",
        "hard_bounce_rate",
        "soft_bounce_rate",
        "complaint_rate",
    }
)
MONEY_KEYS = frozenset(
    {
        "revenue",
        "refunds",
        "net_revenue",
        "discount_cost",
        "send_cost",
        "fixed_cost",
        "promotion_cost",
        "gross_profit",
        "net_profit",
    }
)
# How each money figure is computed: one line each, printed under the table and in the HTML page,
# and under "how_computed" in JSON (docs/reporting.md says the same at length).
HOW_COMPUTED: dict[str, str] = {
    "signups": "signups (kind=signup) credited by coupon or click like orders; each user id counts once",
    "hard_bounce_rate": "email deliveries that hard-bounced ÷ email handed over (outbox writes left out)",
    "complaint_rate": "email deliveries reported as spam (ARF, an ESP's complaint) ÷ email handed over",
    "revenue": "what shoppers paid for orders credited by coupon or click, after their discount",
    "refunds": "refund rows of those orders",
    "net_revenue": "revenue − refunds",
    "gross_profit": (
        "net revenue × margin (the order's own, else its category's in costs.category_margins, else costs.margin);"
        " n/a when an order has no margin"
    ),
    "margin_pct": "gross profit ÷ net revenue",
    "discount_cost": "coupon discounts of the orders − those of refunded orders",
    "send_cost": "messages handed to a paid provider × costs.<channel> (outbox writes cost nothing)",
    "fixed_cost": "costs.fixed of the campaign, counted once, in the total only",
    "promotion_cost": "discount cost + send cost + fixed cost",
    "net_profit": "gross profit − promotion cost",
    "roi": "(gross profit − promotion cost) ÷ promotion cost",
    "incremental_roi": "(incremental net revenue × margin % − promotion cost) ÷ promotion cost; needs a holdout",
}


def skip_reasons(report: Report) -> list[str]:
    """The known reasons, then any others the ledger holds, sorted."""
    found = {r for g in [*report.groups, report.total] for r in g.deliveries.skipped}
    return [*KNOWN_SKIP_REASONS, *sorted(found - set(KNOWN_SKIP_REASONS))]


def group_record(g: GroupFigures, reasons: list[str] | None = None) -> dict[str, Any]:
    """Flat record; with ``reasons``, one ``skipped_<reason>`` key per reason after ``skipped``."""
    d, o, c, m, r = g.deliveries, g.opens, g.clicks, g.money, g.returned
    lift = m.lift
    counts = lift.counts if lift is not None else None
    record: dict[str, Any] = {
        "group": g.key,
        "planned": d.planned,
        "pending": d.pending,
        "sent": d.sent,
        "outbox_writes": d.outbox,
        "accepted": d.accepted,
        "delivered": d.delivered,
        "bounced": d.bounced,
        "failed": d.failed,
        "unknown": d.unknown,
        "skipped": d.skipped_total,
    }
    for reason in reasons or []:
        record[f"skipped_{reason}"] = d.skipped.get(reason, 0)
    record.update(
        {
            "opens_human_unique": o.human_unique,
            "opens_human_total": o.human_total,
            "opens_machine_unique": o.machine_unique,
            "opens_machine_total": o.machine_total,
            "clicks_human_unique": c.human_unique,
            "clicks_human_total": c.human_total,
            "clicks_machine_unique": c.machine_unique,
            "clicks_machine_total": c.machine_total,
            "ctr": g.ctr,
            "click_to_open": g.click_to_open,
            "unsubscribes": g.unsubscribes,
            "hard_bounces": r.hard_bounces,
            "soft_bounces": r.soft_bounces,
            "blocked": r.blocked,
            "complaints": r.complaints,
            "hard_bounce_rate": r.rate(r.hard_bounces),
            "soft_bounce_rate": r.rate(r.soft_bounces),
            "complaint_rate": r.rate(r.complaints),
            "signups": m.signups,
            "purchasers": m.purchasers,
            "orders": m.orders,
            "units": m.units,
            "revenue": m.revenue,
            "refunds": m.refunds,
            "net_revenue": m.net_revenue,
            "gross_profit": m.gross_profit,
            "margin_pct": m.margin_pct,
            "margin_basis": m.margin_basis,
            "discount_cost": m.discount_cost,
            "send_cost": m.send_cost,
            "fixed_cost": m.fixed_cost,
            "promotion_cost": m.promotion_cost,
            "net_profit": m.net_profit,
            "roi": m.roi,
            "incremental_roi": m.incremental_roi,
            "currency_mismatches": m.currency_mismatches,
            "treated_contacts": counts.treated_contacts if counts else 0,
            "treated_buyers": counts.treated_purchasers if counts else 0,
            "holdout_contacts": counts.holdout_contacts if counts else 0,
            "holdout_buyers": counts.holdout_purchasers if counts else 0,
            "treated_rate": lift.treated_rate if lift else None,
            "holdout_rate": lift.holdout_rate if lift else None,
            "lift": lift.relative if lift else None,
            "incremental_buyers": lift.incremental_purchasers if lift else None,
            "incremental_revenue": lift.incremental_revenue if lift else None,
        }
    )
    return record


def display(key: str, value: Any) -> str:
    """Human text for a value: ratios as percentages, money with two places, counts with commas."""
    if value is None:
        return "n/a"
    if key in RATIO_KEYS:
        return percent(value)
    if key in MONEY_KEYS or key in ("incremental_buyers", "incremental_revenue"):
        return money(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
