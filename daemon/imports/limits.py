"""Limits on imported files: the same for ``contacts import``, ``events import``, ``conversions import``
and ``coupons import`` (listed in docs/security.md). A line, field or value beyond a limit makes
its row ONE reported problem; every other row of the file is still imported."""

from __future__ import annotations

from decimal import Decimal

from topslot.json_depth import MAX_JSON_DEPTH as MAX_JSON_DEPTH  # nested in one JSON Lines record (= webhook)

MAX_LINE_CHARS = 1024 * 1024  # one physical line; longer ones are skipped without being held whole
MAX_FIELD_CHARS = 128 * 1024  # one CSV field or JSON text value (the csv module's default limit)
MAX_JSON_DIGITS = 40  # digits of a JSON integer (Python's int() is quadratic on long ones)
MAX_AMOUNT = Decimal("999999999999.99")  # an amount of money: what Numeric(14, 2) columns hold

SNIFF_BYTES = 64 * 1024  # read from the start of a file to tell whether it is UTF-8
SNIFF_LINES = 100  # ... at most this many lines of it
