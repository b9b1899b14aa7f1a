"""``topslot report``: per-campaign figures from the ledger, events and conversions, rendered as a
table, JSON, CSV or one self-contained HTML page with inline SVG charts.

- ``data``: grouped SQLAlchemy Core queries → a ``model.Report`` (the only I/O);
- ``money``: pure ROI and lift maths over the aggregates;
- ``render_*``: pure renderers from a ``Report`` to text.
"""
