"""The pure parts of gathering a batch's evidence: click ids checked, which clicks count, ledger
rows as the rules read them. The look-ups themselves run in ``test_record``."""

from __future__ import annotations

from datetime import timedelta

from topslot.attribution.evidence import click_times, delivery_facts, verified_clicks
from topslot.attribution.rules import DeliveryFacts
from topslot.links import tokens
from topslot.store.conversions import LedgerRow, StoredClick

from .seed import CLICK_D3, KEYRING, SENT, flipped, order

LATER = SENT + timedelta(hours=1)


def test_click_ids_are_verified_and_the_others_noted() -> None:
    open_token = tokens.sign(KEYRING, "open", 3)
    batch = [
        order("A", "1.00", timedelta(0), click_id=CLICK_D3),
        order("B", "1.00", timedelta(0), click_id=flipped(CLICK_D3)),
        order("C", "1.00", timedelta(0), click_id=open_token),
        order("D", "1.00", timedelta(0)),
    ]
    assert verified_clicks(batch, KEYRING) == (
        {("order", "A", False): 3},
        {("order", "B", False): "click_id_bad_signature", ("order", "C", False): "click_id_wrong_kind"},
    )
    unchecked = {
        key: "click_not_checked" for key in (("order", "A", False), ("order", "B", False), ("order", "C", False))
    }
    assert verified_clicks(batch, None) == ({}, unchecked)


def test_human_clicks_count_and_scanner_clicks_only_when_no_human_clicked() -> None:
    found = [
        StoredClick(1, LATER, "scanner"),
        StoredClick(1, SENT, "human"),
        StoredClick(1, LATER + timedelta(minutes=1), None),
        StoredClick(2, LATER, "scanner"),
        StoredClick(2, SENT, "scanner"),
    ]
    assert click_times(found) == {1: (SENT, LATER + timedelta(minutes=1)), 2: (SENT, LATER)}


def test_a_ledger_row_is_handed_over_at_its_last_update_once_sent() -> None:
    sent = LedgerRow(1, "c", 5, "email", "07:30", "delivered", None, "X", SENT, LATER)
    held = LedgerRow(2, "c", 5, "email", "07:30", "skipped", "holdout", None, SENT, LATER)
    assert delivery_facts(sent) == DeliveryFacts(1, "c", 5, "email", "07:30", "delivered", None, "X", SENT, LATER)
    assert delivery_facts(sent).sent and delivery_facts(held).held_out
    assert delivery_facts(held).handed_over_at is None
