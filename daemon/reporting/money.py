"""The report's ratios and its bridge to the ROI maths of ``topslot.attribution.roi`` (pure).

The SQL in ``topslot.reporting.data`` sums each group's conversions into ``roi.Totals`` and its
contacts into ``roi.LiftCounts`` (grouped queries, no per-row Python); ``roi.roi_figures`` then
does the money: net revenue, discount cost, send cost, gross profit, ROI and the lift.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from topslot.attribution import roi
from topslot.campaign import Costs


def ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    """numerator / denominator to 4 places (as ``roi.ratio`` rounds); None when the denominator is zero."""
    if not denominator:
        return None
    return roi.ratio(Decimal(numerator) / Decimal(denominator))


def figures(
    group: str,
    totals: roi.Totals,
    sent_by_channel: Mapping[str, int],
    lift: roi.LiftCounts,
    costs: Costs,
    *,
    fixed: Decimal = Decimal(0),
) -> roi.RoiFigures:
    return roi.roi_figures(group, totals, sent_by_channel, costs, lift, fixed=fixed)
