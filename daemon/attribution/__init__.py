"""Conversions and ROI. The pure part: validating conversion input (``inputs``), the signed webhook
(``webhook``), crediting an order to a campaign (``rules``, ``coupons``, ``windows``), the holdout
group (``holdout``) and the ROI maths (``roi``). The part that reads and writes through
``topslot.store.conversions`` (which only persists): recording orders with their credit (``record``,
from what ``evidence`` looks up per batch); a campaign's ROI is summed by ``topslot.reporting``.
``topslot.cli.conversion_cmds`` imports CSV files."""
