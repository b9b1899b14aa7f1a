"""Each message of the bounce corpus is read as what it is, and names its delivery (or, forged,
none)."""

from __future__ import annotations

import pytest

from topslot.bounces.classify import Kind, classify, kind_of
from topslot.bounces.record import find_delivery

from .corpus import KEYRING, RCPT, message

# name: (kind, format, status, recipient, how the delivery is found)
EXPECTED = {
    "postfix-user-unknown": (Kind.HARD_BOUNCE, "dsn", "5.1.1", RCPT, "verp"),
    "postfix-delayed": (Kind.DELAYED, "dsn", "4.4.1", RCPT, "verp"),
    "exim-user-unknown": (Kind.HARD_BOUNCE, "text", "5.1.1", RCPT, "verp"),
    "exchange-recipient-not-found": (Kind.HARD_BOUNCE, "dsn", "5.1.10", RCPT, "verp"),
    "gmail-over-quota": (Kind.SOFT_BOUNCE, "text", "4.2.2", RCPT, "verp"),
    "qq-ip-blocked": (Kind.BLOCKED, "dsn", "5.0.0", RCPT, "verp"),
    "163-user-not-found": (Kind.HARD_BOUNCE, "text", None, RCPT, "verp"),
    "yahoo-arf-complaint": (Kind.COMPLAINT, "arf", None, RCPT, "verp"),
    "microsoft-arf-redacted": (Kind.COMPLAINT, "arf", None, "redacted@hotmail.example", "unsubscribe_token"),
    "out-of-office": (Kind.AUTO_REPLY, "auto_reply", None, None, "verp"),
    "forged-bounce": (Kind.HARD_BOUNCE, "dsn", "5.1.1", RCPT, None),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_corpus_is_read_as_what_it_is(name: str) -> None:
    kind, form, status, recipient, found_by = EXPECTED[name]
    feedback = classify(message(name, 4242))
    assert (feedback.kind, feedback.format, feedback.status, feedback.recipient) == (kind, form, status, recipient)
    match = find_delivery(feedback, KEYRING, "bounce")
    if found_by is None:
        assert match is None  # a broken VERP signature: not even the Message-ID is believed
    else:
        assert match is not None and (match.delivery_id, match.by) == (4242, found_by)


def test_reasons_are_kept_short_and_readable() -> None:
    feedback = classify(message("postfix-user-unknown", 7))
    assert (
        feedback.reason
        == "smtp; 550 5.1.1 <mei.lin@example.net>: Recipient address rejected: User unknown in virtual mailbox table"
    )
    assert classify(message("163-user-not-found", 7)).reason is not None


def test_the_envelope_recipient_is_the_surest_clue() -> None:
    """At the receiver, RCPT TO names the VERP address even when the headers do not."""
    raw = message("yahoo-arf-complaint", 99).replace(b"Original-Mail-From:", b"X-Removed:")
    raw = raw.replace(b"Return-Path: <bounce+", b"X-Removed: <bounce+")
    verp = classify(message("postfix-user-unknown", 99)).addressed_to[0]
    feedback = classify(raw, (verp,))
    match = find_delivery(feedback, KEYRING, "bounce")
    assert match is not None and (match.delivery_id, match.by) == (99, "verp")


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        ("5.1.1", "", Kind.HARD_BOUNCE),
        ("5.2.1", "account disabled", Kind.HARD_BOUNCE),
        ("5.4.4", "Host or domain name not found", Kind.HARD_BOUNCE),
        ("5.2.2", "mailbox full", Kind.SOFT_BOUNCE),
        ("4.2.2", "over quota", Kind.SOFT_BOUNCE),
        ("5.7.1", "message rejected as spam", Kind.BLOCKED),
        ("5.3.4", "message too big", Kind.BLOCKED),
        ("5.0.0", "550 User unknown", Kind.HARD_BOUNCE),
        ("5.0.0", "550 blocked by policy", Kind.BLOCKED),
        ("5.5.0", "something else", Kind.SOFT_BOUNCE),
        (None, "550 no such user here", Kind.HARD_BOUNCE),
        (None, "452 mailbox full", Kind.SOFT_BOUNCE),
        (None, "421 try again later", Kind.SOFT_BOUNCE),
        (None, "收件人地址不存在", Kind.HARD_BOUNCE),
        (None, "对方邮箱已满", Kind.SOFT_BOUNCE),
    ],
)
def test_statuses_and_words_decide_the_kind(status: str | None, text: str, kind: Kind) -> None:
    assert kind_of(status, text) is kind


def test_hostile_input_is_bounded_and_never_raises() -> None:
    huge = b"From: MAILER-DAEMON@x.example\r\nSubject: Undelivered\r\n\r\n" + b"550 5.1.1 " * 3_000_000
    assert classify(huge).kind is Kind.HARD_BOUNCE
    nested = (
        b"Content-Type: multipart/mixed; boundary=a\r\n\r\n"
        + b"--a\r\nContent-Type: multipart/mixed; boundary=a\r\n\r\n" * 2000
    )
    assert classify(nested).kind is Kind.UNKNOWN
    assert classify(b"\x00\xff garbage \r\n\r\n").kind is Kind.UNKNOWN
    assert classify(b"Subject: =?bogus?Q?=ZZ?=\r\nFrom: =?utf-8?B?!!!?=\r\n\r\n").kind is Kind.UNKNOWN
