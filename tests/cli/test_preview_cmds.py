"""``topslot preview`` end to end: a real SQLite database filled by the contacts import."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from topslot.cli import app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "example"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    config = tmp_path / "config"
    shutil.copytree(REPO / "config" / "campaigns", config / "campaigns")
    db = tmp_path / "var" / "topslot.db"
    (config / "topslot.yaml").write_text(
        f"database_url: sqlite+aiosqlite:///{db}\ntemplates_dir: {REPO / 'templates'}\n"
        "tracking_base_url: https://t.shop.example.com\n"
        "compliance: {postal_address: 'Example Shop, 1 Example Road, Shanghai', sender_identity: Example Shop}\n",
        encoding="utf-8",
    )
    code, _, err = run("contacts", "import", str(EXAMPLE / "contacts.csv"), "--config", str(config))
    assert code == 0, err
    return config


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_preview_email_prints_headers_and_decoded_parts(config_dir: Path) -> None:
    db = config_dir.parent / "var" / "topslot.db"
    before = db.read_bytes()

    code, out, err = run("preview", "mothers-day-2027", "C000001", "--config", str(config_dir))

    assert code == 0, err
    head = out.split("\n\n", 1)[0].splitlines()
    assert head[0] == "From: Example Shop <news@shop.example.com>"
    assert "To: Lena Demo <lena.demo1@example.net>" in head
    assert "Subject: A gift for Mom, Lena" in head
    assert "Message-ID: <d0.mothers-day-2027@shop.example.com>" in head
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in head
    assert "List-Unsubscribe: <https://t.shop.example.com/u/preview>," in head
    assert "----- text/plain (7bit, shown decoded) -----" in out
    assert "----- text/html (8bit, shown decoded) -----" in out
    assert "MOMPREVIEW000" in out  # a preview code, not a reserved one
    assert "https://t.shop.example.com/c/preview?u=https%3A%2F%2Fshop.example.com%2Fmothers-day" in out
    assert '<img src="https://t.shop.example.com/o/preview.gif"' in out
    assert "Example Shop, 1 Example Road, Shanghai" in out
    assert db.read_bytes() == before  # nothing written


def test_preview_by_numeric_id_and_sms_channel(config_dir: Path) -> None:
    code, out, err = run("preview", "mothers-day-2027", "2", "--channel", "sms", "--config", str(config_dir))

    assert code == 0, err
    lines = out.splitlines()
    short = "https://t.shop.example.com/s/preview0000000000000000000"  # as long as a real short link
    landing = "https://shop.example.com/mothers-day?category=cosmetics&utm_source=topslot&utm_medium=sms"
    assert lines[0] == "To: +447400123449"
    assert lines[1] == "# 153 characters, GSM-7, 1 segment of up to 160; cost 1 × 0.0079 USD = 0.0079 USD"
    assert lines[2] == f"# link {short} -> {landing}&utm_campaign=mothers-day-2027"
    assert lines[3] == ""
    assert lines[4] == f"Example Shop: Noah, 20% off cosmetics for Mom! Code MOMPREVIEW000 by 20 May {short}"
    assert lines[5:] == ["Reply STOP to opt out"]  # added by topslot: the template does not write it


def test_preview_sms_to_china_shows_ucs2_segments_cost_and_the_chinese_opt_out(config_dir: Path) -> None:
    code, out, err = run("preview", "mothers-day-2027", "C000003", "--channel", "SMS", "--config", str(config_dir))

    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "To: +8613123456703"
    assert lines[1] == "# 105 characters, UCS-2, 2 segments of up to 67; cost 2 × 0.0079 USD = 0.0158 USD"
    assert lines[4].startswith("【示例商城】Hao，母亲节美妆8折，优惠码MOMPREVIEW000") and lines[5:] == ["回TD退订"]


def test_unknown_contact_campaign_or_channel(config_dir: Path) -> None:
    code, _, err = run("preview", "mothers-day-2027", "nobody", "--config", str(config_dir))
    assert code == 2 and "no contact with external id or id 'nobody'" in err
    code, _, err = run("preview", "nope", "C000001", "--config", str(config_dir))
    assert code == 2 and "campaign 'nope' not found" in err
    code, _, err = run("preview", "mothers-day-2027", "C000001", "--channel", "im", "--config", str(config_dir))
    assert code == 2 and "does not send on im" in err


def test_missing_compliance_settings_are_reported(config_dir: Path) -> None:
    settings = config_dir / "topslot.yaml"
    settings.write_text(settings.read_text().split("compliance:")[0], encoding="utf-8")

    code, _, err = run("preview", "mothers-day-2027", "C000001", "--config", str(config_dir))

    assert code == 2 and "compliance.postal_address is required to send email" in err
