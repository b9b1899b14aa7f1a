"""Crediting one conversion: coupon, then click within the window, then contact (lift), else none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from topslot.attribution.coupons import CouponMatch
from topslot.attribution.inputs import ConversionInput
from topslot.attribution.rules import Attribution, ClickFacts, DeliveryFacts, attribute, choose_delivery
from topslot.attribution.windows import campaign_window

from .support import make_campaign

SENT_AT = datetime(2027, 5, 6, 23, 25, tzinfo=UTC)  # 07:30 Shanghai on 7 May
CAMPAIGN = make_campaign(attribution={"click_window": "2d"})
CAMPAIGNS = {CAMPAIGN.id: CAMPAIGN}


def order(at: datetime, **kw: object) -> ConversionInput:
    return ConversionInput("A-1", at, D("10.00"), **kw)  # type: ignore[arg-type]


def row(id: int, contact: int = 5, channel: str = "email", slot: str = "07:30", **kw: object) -> DeliveryFacts:
    fields: dict[str, object] = {
        "campaign_id": CAMPAIGN.id,
        "contact_id": contact,
        "channel": channel,
        "slot": slot,
        "state": "sent",
        "skip_reason": None,
        "coupon_code": "MOMCODE",
        "due_utc": SENT_AT + timedelta(minutes=5),
        "handed_over_at": SENT_AT,
    }
    fields.update(kw)
    return DeliveryFacts(id=id, **fields)  # type: ignore[arg-type]


COUPON = CouponMatch(CAMPAIGN.id, 5, "MOMCODE", "generated")


def test_coupon_wins_and_picks_the_delivery_that_carried_it() -> None:
    email, sms = row(1), row(2, channel="sms", slot="17:00", handed_over_at=SENT_AT + timedelta(hours=10))
    at = SENT_AT + timedelta(days=30)  # coupons have no window
    got = attribute(order(at), coupon=COUPON, coupon_deliveries=[email, sms], campaigns=CAMPAIGNS)
    assert got == Attribution("coupon", CAMPAIGN.id, 2, "sms", "17:00", 5, "MOMCODE")  # handed over last
    early = attribute(order(SENT_AT + timedelta(hours=1)), coupon=COUPON, coupon_deliveries=[email, sms])
    assert early.delivery_id == 1  # the sms had not left yet


def test_coupon_with_a_click_of_the_same_contact_takes_the_clicked_channel() -> None:
    sms = row(2, channel="sms")
    got = attribute(
        order(SENT_AT + timedelta(days=20)),
        coupon=COUPON,
        coupon_deliveries=[row(1), sms],
        click=ClickFacts(sms, (SENT_AT + timedelta(minutes=3),)),
    )
    assert (got.attributed_by, got.delivery_id, got.channel) == ("coupon", 2, "sms")
    stranger = row(9, contact=77)
    got = attribute(order(SENT_AT), coupon=COUPON, coupon_deliveries=[row(1)], click=ClickFacts(stranger))
    assert (got.delivery_id, got.contact_id) == (1, 5)  # someone else's click does not move the coupon


def test_coupon_without_a_sent_delivery_still_names_the_campaign() -> None:
    got = attribute(order(SENT_AT), coupon=COUPON, coupon_deliveries=[row(1, state="failed")])
    assert got == Attribution("coupon", CAMPAIGN.id, None, None, None, 5, "MOMCODE")


def test_click_counts_within_the_window_from_the_last_click() -> None:
    d = row(3)
    click_at = SENT_AT + timedelta(days=1)
    clicks = ClickFacts(d, (SENT_AT + timedelta(minutes=2), click_at))
    inside = attribute(order(click_at + timedelta(days=2)), click=clicks, campaigns=CAMPAIGNS)
    assert inside == Attribution("click", CAMPAIGN.id, 3, "email", "07:30", 5)
    late = attribute(
        order(click_at + timedelta(days=2, seconds=1)), click=clicks, contact_deliveries=[d], campaigns=CAMPAIGNS
    )
    assert late.attributed_by == "contact" and late.note == "click_outside_window"  # still a treated contact


def test_click_without_recorded_clicks_counts_from_the_send_and_default_window() -> None:
    d = row(3)
    assert (
        attribute(order(SENT_AT + timedelta(days=2)), click=ClickFacts(d), campaigns=CAMPAIGNS).attributed_by == "click"
    )
    # a campaign no longer loaded: the default 7 days
    got = attribute(order(SENT_AT + timedelta(days=6)), click=ClickFacts(d), campaigns={})
    assert got.attributed_by == "click"
    before = attribute(order(SENT_AT - timedelta(hours=1)), click=ClickFacts(d), campaigns=CAMPAIGNS)
    assert before.attributed_by != "click"  # an order before the message left


def test_contact_match_for_treated_and_holdout_inside_the_campaign_window() -> None:
    held = row(4, contact=8, state="skipped", skip_reason="holdout", handed_over_at=None, coupon_code=None)
    at = SENT_AT + timedelta(days=3)
    got = attribute(order(at), contact_id=8, contact_deliveries=[held], campaigns=CAMPAIGNS)
    assert got == Attribution("contact", CAMPAIGN.id, 4, "email", "07:30", 8)
    start, end = campaign_window(CAMPAIGN)
    assert attribute(order(end), contact_id=8, contact_deliveries=[held], campaigns=CAMPAIGNS).attributed_by == "none"
    assert (
        attribute(order(start), contact_id=8, contact_deliveries=[held], campaigns=CAMPAIGNS).attributed_by == "contact"
    )
    # a row skipped for another reason, or of an unloaded campaign, does not count
    other = row(5, contact=8, state="skipped", skip_reason="no_consent")
    assert attribute(order(at), contact_id=8, contact_deliveries=[other], campaigns=CAMPAIGNS).attributed_by == "none"
    assert attribute(order(at), contact_id=8, contact_deliveries=[held], campaigns={}).attributed_by == "none"


def test_campaign_window_spans_every_zone_plus_the_click_window() -> None:
    start, end = campaign_window(CAMPAIGN)
    assert start == datetime(2027, 5, 5, 10, 0, tzinfo=UTC)  # 6 May 00:00 at UTC+14
    assert end == datetime(2027, 5, 10, 12, 0, tzinfo=UTC) + timedelta(days=2)  # 10 May 00:00 at UTC-12, + 2d


def test_nothing_to_go_on() -> None:
    assert attribute(order(SENT_AT)) == Attribution("none")
    noted = attribute(order(SENT_AT), click_note="click_id_bad_signature")
    assert noted == Attribution("none", note="click_id_bad_signature")
    gone = attribute(order(SENT_AT), click=ClickFacts(None))
    assert gone.note == "click_delivery_not_found"


def test_choose_delivery_prefers_the_code_then_any_sent_row() -> None:
    a = row(1, coupon_code="OTHER")
    b = row(2, state="unknown")
    assert choose_delivery([a, b], SENT_AT + timedelta(days=1), "MOMCODE") == b
    assert choose_delivery([a], SENT_AT + timedelta(days=1), "MOMCODE") == a
    assert choose_delivery([row(3, state="planned")], SENT_AT, "MOMCODE") is None
