from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from topslot.logs import REDACTED, bound, configure_logging, get_logger, pii_hash

REPO = Path(__file__).resolve().parents[1]
LOG_CALL = re.compile(r"\.(?:debug|info|warning|warn|error|critical|exception|msg)\(\s*[\"']([a-z0-9_]+)[\"']")


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("info", "json", secrets=["hunter2-smtp", "tw-token-0123456789"], stream=stream)
    yield stream
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_with_utc_iso_timestamp_level_and_event(out: io.StringIO) -> None:
    get_logger("t").info("campaign_loaded", campaign_id="c1")
    (entry,) = lines(out)
    assert entry["component"] == "t"
    assert entry["event"] == "campaign_loaded"
    assert entry["level"] == "info"
    assert entry["campaign_id"] == "c1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", entry["timestamp"])


def test_known_secrets_are_redacted_anywhere(out: io.StringIO) -> None:
    log = get_logger()
    log.warning(
        "smtp_login_failed",
        reply="535 auth failed for password hunter2-smtp",
        nested={"deep": ["x", "Basic tw-token-0123456789"]},
        password="anything",
    )
    try:
        raise RuntimeError("token tw-token-0123456789 rejected")
    except RuntimeError:
        log.exception("twilio_error")
    logging.getLogger("aiosmtplib").warning("login hunter2-smtp refused")
    text = out.getvalue()
    assert "hunter2-smtp" not in text and "tw-token-0123456789" not in text
    first, second, third = lines(out)
    assert first["reply"] == f"535 auth failed for password {REDACTED}"
    assert first["nested"] == {"deep": ["x", f"Basic {REDACTED}"]}
    assert first["password"] == REDACTED
    assert REDACTED in second["exception"]
    assert third["event"] == f"login {REDACTED} refused" and third["logger"] == "aiosmtplib"


def test_addresses_are_hashed_never_logged_raw(out: io.StringIO) -> None:
    get_logger().info(
        "delivery_sent",
        email="Alice@Example.com",
        phone="+8613800138000",
        to=["bob@example.org", "+14155550100"],
        note="bounce from carol@example.net via +442071838750",
        postal_address="1 Example Road",
    )
    (entry,) = lines(out)
    assert entry["email"] == pii_hash("alice@example.com") and re.fullmatch(r"h:[0-9a-f]{8}", entry["email"])
    assert entry["phone"] == pii_hash("+8613800138000")
    assert entry["to"] == [pii_hash("bob@example.org"), pii_hash("+14155550100")]
    assert entry["note"] == f"bounce from {pii_hash('carol@example.net')} via {pii_hash('+442071838750')}"
    assert entry["postal_address"] == "1 Example Road"  # the sender's own address is not personal data
    for raw in ("Alice@Example.com", "8613800138000", "bob@example.org", "carol@", "2071838750"):
        assert raw not in out.getvalue()


async def test_context_is_bound_per_task(out: io.StringIO) -> None:
    import asyncio

    log = get_logger()

    async def one(delivery_id: int, channel: str) -> None:
        with bound(campaign_id="mothers-day", slot="07:30", channel=channel, delivery_id=delivery_id):
            await asyncio.sleep(0)
            log.info("delivery_claimed")

    await asyncio.gather(one(1, "email"), one(2, "sms"))
    log.info("after")
    first, second, after = lines(out)
    assert {(first["delivery_id"], first["channel"]), (second["delivery_id"], second["channel"])} == {
        (1, "email"),
        (2, "sms"),
    }
    assert first["slot"] == "07:30" and first["campaign_id"] == "mothers-day"
    assert "delivery_id" not in after


def test_level_filter_and_console_format() -> None:
    stream = io.StringIO()
    configure_logging("warning", "console", stream=stream)
    log = get_logger()
    log.info("hidden_event")
    log.warning("shown_event", email="x@example.com")
    text = stream.getvalue()
    structlog.reset_defaults()
    assert "hidden_event" not in text
    assert "shown_event" in text and pii_hash("x@example.com") in text and "x@example.com" not in text
    assert not text.lstrip().startswith("{")


def test_auto_format_is_json_when_not_a_terminal() -> None:
    stream = io.StringIO()  # not a TTY
    configure_logging("info", "auto", stream=stream)
    get_logger().info("auto_event")
    structlog.reset_defaults()
    assert json.loads(stream.getvalue())["event"] == "auto_event"


def event_names_in_source() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "daemon").rglob("*.py")):
        for name in LOG_CALL.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def test_every_event_name_is_in_the_catalogue() -> None:
    catalogue = (REPO / "docs" / "logging.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([a-z0-9_]+)`", catalogue))
    names = event_names_in_source()
    assert "daemon_ready" in names  # the scan itself works
    missing = {name: files for name, files in names.items() if name not in documented}
    assert not missing, f"add these events to docs/logging.md: {missing}"
    not_snake = [n for n in names if not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", n)]
    assert not not_snake
