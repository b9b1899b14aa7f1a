"""The group key of a report row (``--by``) as a SQL expression over ``deliveries`` and ``contacts``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, case, func, literal

from topslot.reporting.model import DIMENSIONS, NO_GROUP
from topslot.reporting.segments import OTHER
from topslot.reporting.sql_time import email_domain
from topslot.store.schema import contacts, deliveries
from topslot.store.segments import condition_filter

TOTAL = "total"


def group_key(
    by: str | None,
    now: datetime,
    segments: Sequence[tuple[str, Any]] | None = None,
    channel: ColumnElement[Any] | None = None,
) -> tuple[ColumnElement[str], bool]:
    """(key expression, whether it needs ``contacts`` joined). ``by=None``: one group, ``total``.

    ``channel`` overrides the channel column (conversions know their channel even without a delivery).
    """
    if by is None:
        return literal(TOTAL, String), False
    if by not in DIMENSIONS:
        raise ValueError(f"--by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
    if by == "channel":
        return func.coalesce(channel if channel is not None else deliveries.c.channel, NO_GROUP), False
    if by == "slot":
        return func.coalesce(deliveries.c.slot, NO_GROUP), False
    if by == "timezone":
        return func.coalesce(deliveries.c.timezone, NO_GROUP), False
    if by == "domain":  # the recipient's email domain (mailbox providers filter by their own rates)
        return func.coalesce(email_domain(contacts.c.email), NO_GROUP), True
    if segments:
        whens = [(condition_filter(condition, now), literal(name, String)) for name, condition in segments]
        return case(*whens, else_=literal(OTHER, String)), True
    return func.coalesce(contacts.c.country, NO_GROUP), True
