"""Conversions and ROI, the pure part: validating conversion input (``inputs``), the signed webhook
(``webhook``), crediting an order to a campaign (``rules``, ``coupons``, ``windows``), the holdout
group (``holdout``) and the ROI maths (``roi``). No I/O here: ``daemon.store.conversions`` does the
look-ups and writes, ``daemon.cli.conversion_cmds`` imports CSV files."""
