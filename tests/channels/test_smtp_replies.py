"""Reply classification: transient/permanent from the basic code, hard bounces from the enhanced
code first, then the basic code and its text."""

from __future__ import annotations

import pytest

from topslot.channels.smtp_replies import (
    classify_reply,
    enhanced_status,
    is_hard_bounce,
    is_server_problem,
    provider_id_from_reply,
)
from topslot.errors import PermanentSendError, TransientSendError


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("5.1.1 <a@b.example>: User unknown", (5, 1, 1)),
        ("  4.7.1 greylisted", (4, 7, 1)),
        ("5.1.10 Null MX", (5, 1, 10)),
        ("2.0.0 Ok: queued as 4XyZ", (2, 0, 0)),
        ("User unknown", None),
        ("5.1.1234 not a code", None),
        ("550 5.1.1 code repeated", None),  # the basic code is never part of the text
    ],
)
def test_enhanced_status(text: str, status: tuple[int, int, int] | None) -> None:
    assert enhanced_status(text) == status


@pytest.mark.parametrize(
    ("stage", "code", "text", "hard"),
    [
        ("rcpt", 550, "5.1.1 <x@y.example>: Recipient address rejected: User unknown", True),
        ("rcpt", 550, "5.1.10 Recipient address has null MX", True),
        ("rcpt", 550, "5.2.1 The email account that you tried to reach is disabled", True),
        ("rcpt", 553, "5.1.3 Bad recipient address syntax", True),
        ("rcpt", 550, "5.1.2 Host unknown", True),
        ("after_dot", 550, "5.1.1 User unknown", True),
        ("rcpt", 552, "5.2.2 Mailbox full", False),
        ("rcpt", 550, "5.7.1 Rejected by policy: user unknown", False),  # the enhanced code decides
        ("rcpt", 550, "5.4.1 Recipient address rejected: Access denied", False),
        ("rcpt", 550, "No such user here", True),  # no enhanced code: basic code + text
        ("rcpt", 550, "Requested action not taken: mailbox unavailable", False),
        ("rcpt", 551, "User not local; please try <x@elsewhere.example>", False),
        ("rcpt", 554, "user unknown", False),  # 554 is not an address reply code
        ("mail", 553, "5.1.8 Sender address rejected: Domain not found", False),  # our sender, not them
        ("mail", 550, "5.1.1 User unknown", False),
        ("rcpt", 450, "4.1.1 User unknown (temporarily)", False),
    ],
)
def test_hard_bounce(stage: str, code: int, text: str, hard: bool) -> None:
    assert is_hard_bounce(stage, code, text) is hard  # type: ignore[arg-type]


def test_4xx_is_transient_with_hints_only_for_policy_and_greylisting() -> None:
    greylisted = classify_reply("rcpt", 451, "4.7.1 Greylisted, try again in 5 minutes")
    plain = classify_reply("after_dot", 451, "4.3.0 Temporary lookup failure")
    worded = classify_reply("rcpt", 450, "Greylisting in action, please come back later")
    assert isinstance(greylisted, TransientSendError) and greylisted.retry_after == 300
    assert isinstance(plain, TransientSendError) and plain.retry_after is None and plain.code == 451
    assert isinstance(worded, TransientSendError) and worded.retry_after == 300


def test_5xx_is_permanent_and_carries_stage_and_text() -> None:
    error = classify_reply("rcpt", 550, "5.1.1 User unknown")
    assert isinstance(error, PermanentSendError) and error.suppress and error.code == 550
    assert str(error) == "rcpt: 550 5.1.1 User unknown"


def test_an_unexpected_success_code_is_not_taken_as_acceptance() -> None:
    assert isinstance(classify_reply("data", 250, "Ok"), TransientSendError)


def test_server_problems() -> None:
    assert is_server_problem(421) and is_server_problem(530)
    assert not is_server_problem(451) and not is_server_problem(550)


@pytest.mark.parametrize(
    ("reply", "provider_id"),
    [
        ("2.0.0 Ok: queued as 4Zq1Xy0Bz3z9", "4Zq1Xy0Bz3z9"),  # Postfix
        ("OK id=1tQ4Zk-0001Ab-2x", "1tQ4Zk-0001Ab-2x"),  # Exim
        ("2.0.0 OK  1700000000 a1si123abc.45 - gsmtp", "OK  1700000000 a1si123abc.45 - gsmtp"),  # Gmail
        ("Ok\nsecond line", "Ok second line"),
    ],
)
def test_provider_id_from_reply(reply: str, provider_id: str) -> None:
    assert provider_id_from_reply(reply) == provider_id
