"""A campaign compiled once and rendered per recipient: compliance, tracking, pixel, limits."""

from __future__ import annotations

import asyncio
import email
import shutil
import socket
from datetime import UTC, datetime
from email import policy
from pathlib import Path
from urllib.parse import quote

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller

from topslot.campaign import Campaign
from topslot.errors import InvalidInput
from topslot.rendering import MessageLinks, RenderLimits, compile_campaign
from topslot.settings import Compliance
from topslot.templating import ContactView
from topslot.yaml_source import load_yaml

REPO = Path(__file__).resolve().parents[2]
COMPLIANCE = Compliance(
    postal_address="Example Shop Ltd, 1 Example Road, Shanghai 200000", sender_identity="Example Shop"
)
WHEN = datetime(2027, 5, 6, 7, 20, tzinfo=UTC)


def example_campaign(**changes: object) -> Campaign:
    data = load_yaml(REPO / "config/campaigns/mothers-day-2027.yaml").data
    data.update(changes)
    return Campaign.model_validate(data)


def track(url: str) -> str:
    return f"https://t.example.com/c/tok?u={quote(url, safe='')}"


LINKS = MessageLinks(
    track=track,
    unsubscribe_url="https://t.example.com/u/utok",
    unsubscribe_mailto="mailto:unsubscribe@shop.example.com?subject=utok",
    open_pixel_url="https://t.example.com/o/otok.gif",
)


def contact(**fields: object) -> ContactView:
    base = {"external_id": "C1", "first_name": "Lena", "email": "lena@example.net", "country": "US"}
    return ContactView(**{**base, **fields})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def compiled():
    return compile_campaign(example_campaign(), REPO / "templates", COMPLIANCE)


def test_render_email_for_a_recipient(compiled) -> None:
    rendered = compiled.render_email(contact(), "MOM7K2Q9XA", LINKS, "07:30")

    assert rendered.subject == "A gift for Mom, Lena"
    assert "MOM7K2Q9XA" in rendered.html and "MOM7K2Q9XA" in rendered.text
    landing = example_campaign().landing_url("email")
    assert f'href="{track(landing)}"' in rendered.html.replace("&amp;", "&")
    assert 'href="https://t.example.com/u/utok"' in rendered.html
    assert track(landing) in rendered.text and "https://t.example.com/u/utok" in rendered.text
    assert 'style="display: inline-block;' in rendered.html  # CSS inlined
    pixel = rendered.html.index('<img src="https://t.example.com/o/otok.gif" width="1" height="1"')
    assert pixel < rendered.html.index("</body>")
    # the template's own address differs from the settings: topslot adds the settings' footer
    assert "Example Shop &middot; Example Shop Ltd, 1 Example Road" in rendered.html
    assert rendered.text.endswith("-- \nExample Shop\nExample Shop Ltd, 1 Example Road, Shanghai 200000\n")
    assert rendered.headers == (
        ("List-Unsubscribe", "<https://t.example.com/u/utok>, <mailto:unsubscribe@shop.example.com?subject=utok>"),
    )


def test_chinese_recipients_get_the_ad_prefix_unless_the_campaign_turns_it_off(compiled) -> None:
    assert compiled.render_email(contact(country="CN"), "X", LINKS, "07:30").subject == "【广告】A gift for Mom, Lena"
    off = compile_campaign(example_campaign(compliance={"cn_ad_prefix": False}), REPO / "templates", COMPLIANCE)
    assert off.render_email(contact(country="CN"), "X", LINKS, "07:30").subject == "A gift for Mom, Lena"


def test_no_footer_when_the_template_shows_identity_and_address(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    address = "Example Shop Ltd · 100 Market Street, Suite 5 · San Francisco, CA 94105 · USA"
    compliance = Compliance(postal_address=address, sender_identity="Example Shop Ltd")
    html = (templates / "mothers-day/email.html.j2").read_text().replace("&middot;", "·")
    (templates / "mothers-day/email.html.j2").write_text(html)
    (templates / "mothers-day/email.txt.j2").write_text("Hi\n" + address + "\nExample Shop Ltd {{ unsubscribe_url }}\n")

    rendered = compile_campaign(example_campaign(), templates, compliance).render_email(contact(), "X", LINKS, "07:30")

    assert rendered.html.count("100 Market Street") == 1 and rendered.text.count("100 Market Street") == 1


def test_text_part_is_derived_when_the_campaign_has_none() -> None:
    data = load_yaml(REPO / "config/campaigns/mothers-day-2027.yaml").data
    del data["content"]["email"]["text"]
    compiled = compile_campaign(Campaign.model_validate(data), REPO / "templates", COMPLIANCE)

    text = compiled.render_email(contact(), "MOM7K2Q9XA", LINKS, "07:30").text

    assert text.startswith("EXAMPLE SHOP\n\nMother's Day · Sunday 9 May\n\nA little luxury for Mom, Lena\n\nHi Lena,")
    assert "Your personal Mother's Day code" not in text  # hidden preheader left out
    landing = example_campaign().landing_url("email")
    assert f"Shop Mother's Day gifts <{track(landing)}>" in text
    assert "Unsubscribe <https://t.example.com/u/utok>" in text


def test_sms_body(compiled) -> None:
    body = compiled.render_text("sms", contact(), "MOM7K2Q9XA", LINKS, "07:30")
    assert body.startswith("Example Shop: Lena, 20% off") and track(example_campaign().landing_url("sms")) in body


def test_missing_compliance_settings_fail_the_load_clearly() -> None:
    with pytest.raises(InvalidInput) as raised:
        compile_campaign(example_campaign(), REPO / "templates", Compliance())
    messages = [p.message for p in raised.value.problems]
    assert messages == [
        "compliance.postal_address is required to send email: set compliance.postal_address in topslot.yaml "
        "(or TOPSLOT_COMPLIANCE__POSTAL_ADDRESS)",
        "compliance.sender_identity is required to send email: set compliance.sender_identity in topslot.yaml "
        "(or TOPSLOT_COMPLIANCE__SENDER_IDENTITY)",
    ]


def test_a_template_over_the_limits_fails_compilation(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / "mothers-day/email.txt.j2").write_text(
        "{{ unsubscribe_url }}{% for i in range(9000) %}0123456789{% endfor %}"
    )

    with pytest.raises(InvalidInput, match="longer than 50,000 characters"):
        compile_campaign(example_campaign(), templates, COMPLIANCE, limits=RenderLimits(max_chars=50_000))


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.original_content))
        return "250 OK"


async def test_assembled_bytes_survive_a_real_smtp_hop(compiled) -> None:
    inbox = _Inbox()
    port = unused_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        rendered = compiled.render_email(contact(country="CN", first_name="梅"), "MOM7K2Q9XA", LINKS, "07:30")
        data = compiled.assembler.assemble(rendered, to="mei@example.net", to_name="陈梅", delivery_id=99, date=WHEN)
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as smtp:
            await smtp.sendmail(compiled.assembler.mail_from, ["mei@example.net"], data)
        await asyncio.sleep(0)
    finally:
        controller.stop()

    ((mail_from, rcpts, received),) = inbox.messages
    assert (mail_from, rcpts) == ("news@shop.example.com", ["mei@example.net"])
    assert received.replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n")
    message = email.message_from_bytes(received, policy=policy.default)
    assert message["Subject"] == "【广告】A gift for Mom, 梅"
    assert message["To"] == "陈梅 <mei@example.net>"
    assert message.get_body(("plain",)).get_content().replace("\r\n", "\n") == rendered.text
