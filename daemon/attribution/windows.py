"""Time windows of attribution (pure).

- the **click window**: an order counts for a click if placed at most ``attribution.click_window``
  (default 7 days) after it;
- the **campaign window**, for the holdout lift: from the campaign's first local day in the
  earliest zone on Earth (UTC+14) to the end of its last local day in the latest (UTC-12), plus
  the click window. Treated and holdout purchases are counted over this same span.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

from topslot.campaign import Campaign

DEFAULT_CLICK_WINDOW = timedelta(days=7)
EARLIEST = timezone(timedelta(hours=14))
LATEST = timezone(timedelta(hours=-12))


def click_window(campaign: Campaign | None) -> timedelta:
    """The campaign's click window (the default for a campaign no longer loaded)."""
    return campaign.attribution.click_window if campaign is not None else DEFAULT_CLICK_WINDOW


def campaign_window(campaign: Campaign) -> tuple[datetime, datetime]:
    """[start, end) in UTC in which a contact's purchases count for the lift."""
    start = datetime.combine(campaign.schedule.start, time(0), EARLIEST).astimezone(UTC)
    last = campaign.schedule.end + timedelta(days=1)
    end = datetime.combine(last, time(0), LATEST).astimezone(UTC) + click_window(campaign)
    return start, end


def within_click_window(reference: datetime, occurred_at: datetime, window: timedelta) -> bool:
    """Placed at or after ``reference`` (a click, or the send) and at most ``window`` later."""
    return timedelta(0) <= occurred_at - reference <= window
