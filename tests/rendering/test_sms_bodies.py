"""SMS bodies as sent: the shipped example's segments with real short links, the opt-out line per
country, IM left alone, and the segment limit checked when a campaign compiles."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from topslot.campaign import Campaign
from topslot.errors import InvalidInput
from topslot.links.factory import CampaignLinks
from topslot.links.keys import Keyring
from topslot.rendering import MessageLinks, compile_campaign, sms_segments
from topslot.rendering.campaign_renderer import MAX_SMS_SEGMENTS, CompiledCampaign
from topslot.settings import Compliance
from topslot.templating import ContactView
from topslot.yaml_source import load_yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config/campaigns/mothers-day-2027.yaml"
COMPLIANCE = Compliance(postal_address="Example Shop Ltd, 1 Example Road, Shanghai", sender_identity="Example Shop")
KEYRING = Keyring({"k2026": b"sms-body-test-key-0123456789"})
CODE = "MOM7K2Q9XA4BZ"  # MOM + 10, as the campaign generates them
BASES = ["https://t.shop.example.com", "http://127.0.0.1:8080"]  # a production host; the demo's


def campaign(data: dict | None = None) -> Campaign:
    return Campaign.model_validate(data or load_yaml(EXAMPLE).data)


@pytest.fixture(scope="module")
def compiled() -> CompiledCampaign:
    return compile_campaign(campaign(), REPO / "templates", COMPLIANCE)


def person(**fields: object) -> ContactView:
    base = {"external_id": "C1", "first_name": "Lena", "phone": "+13125550120", "country": "US", "locale": "en-US"}
    return ContactView(**{**base, **fields})  # type: ignore[arg-type]


def sms_for(compiled: CompiledCampaign, who: ContactView, base: str = BASES[0], delivery_id: int = 1_234_567) -> str:
    links = CampaignLinks(compiled.campaign, KEYRING, base).for_delivery(delivery_id, "sms")
    message_links = MessageLinks(track=links.track, unsubscribe_url=links.unsubscribe_url)
    return compiled.render_text("sms", who, CODE, message_links, "07:30")


@pytest.mark.parametrize("base", BASES)
def test_the_example_sms_is_one_gsm7_segment_in_english_and_two_ucs2_in_chinese(
    compiled: CompiledCampaign, base: str
) -> None:
    english = sms_for(compiled, person(first_name="Alexandria"), base)  # a long first name: 10 characters
    assert english.endswith("\nReply STOP to opt out") and f"{base}/s/" in english
    count = sms_segments(english)
    assert (count.encoding, count.segments) == ("GSM-7", 1), (len(english), english)

    chinese = sms_for(compiled, person(first_name="美玲", country="CN", locale="zh-CN", phone="+8613800138000"), base)
    assert chinese.startswith("【示例商城】美玲，母亲节美妆8折") and chinese.endswith("\n回TD退订")
    count = sms_segments(chinese)
    assert (count.encoding, count.segments) == ("UCS-2", 2), (len(chinese), chinese)


def test_every_example_contact_with_sms_consent_gets_a_one_or_two_segment_sms(compiled: CompiledCampaign) -> None:
    with (REPO / "config/example/contacts.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["consent_sms"] == "yes" and r["phone"]]
    assert rows
    for i, row in enumerate(rows):
        fields = {k: row[k] or None for k in ("external_id", "first_name", "phone", "country", "locale")}
        body = sms_for(compiled, ContactView(**fields), delivery_id=10_000_000 + i)  # type: ignore[arg-type]
        count = sms_segments(body)
        chinese = (row["locale"] or "").startswith("zh")
        expected = ("UCS-2", 2) if chinese else ("GSM-7", 1)
        assert (count.encoding, count.segments) == expected, (row["external_id"], body)
        assert body.endswith("回TD退订" if row["country"] == "CN" else "Reply STOP to opt out")


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        ({"country": "US"}, "Reply STOP to opt out"),
        ({"country": "GB"}, "Reply STOP to opt out"),  # the default
        ({"country": "CN", "locale": "zh-CN"}, "回TD退订"),
        ({"country": "cn", "locale": "zh-CN"}, "回TD退订"),
        ({"country": None, "phone": "+8613800138000", "locale": "zh-CN"}, "回TD退订"),  # from the number
        ({"country": None, "phone": "+1 312 555 0120"}, "Reply STOP to opt out"),
        ({"country": None, "phone": None}, "Reply STOP to opt out"),
    ],
)
def test_the_opt_out_line_follows_the_recipients_country(compiled: CompiledCampaign, fields: dict, line: str) -> None:
    body = sms_for(compiled, person(**fields))
    assert body.endswith("\n" + line) and body.count(line) == 1


def test_configured_lines_are_merged_over_the_defaults(tmp_path: Path) -> None:
    compliance = COMPLIANCE.model_copy(
        update={"sms_opt_out": Compliance(sms_opt_out={"fr": "STOP au 36111", "GB": ""}).sms_opt_out}
    )
    compiled = compile_campaign(campaign(), REPO / "templates", compliance)
    assert sms_for(compiled, person(country="FR")).endswith("\nSTOP au 36111")
    assert sms_for(compiled, person(country="CN", locale="zh-CN")).endswith("\n回TD退订")  # still there
    no_line = sms_for(compiled, person(country="GB"))
    assert "STOP" not in no_line and not no_line.endswith("\n")


@pytest.mark.parametrize(
    "ending", ["Reply STOP to opt out", "reply  stop to\nopt out.", "Txt STOP? Reply STOP to opt out!"]
)
def test_no_second_line_when_the_template_already_shows_it(tmp_path: Path, ending: str) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / "mothers-day/sms.txt.j2").write_text("Hi {{ contact.first_name }} {{ track(landing_url) }} " + ending)
    compiled = compile_campaign(campaign(), templates, COMPLIANCE)
    body = sms_for(compiled, person())
    assert body.endswith(ending.strip()) and body.casefold().count("stop to") == 1
    assert sms_for(compiled, person(country="CN")).endswith("\n回TD退订")  # a Chinese recipient needs its own


def test_im_bodies_get_no_opt_out_line_and_short_links(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / "mothers-day/im.txt.j2").write_text("Hi {{ contact.first_name }}: {{ track(landing_url) }}")
    data = load_yaml(EXAMPLE).data
    data["channels"] = ["im"]
    data["content"] = {"im": {"body": "mothers-day/im.txt.j2"}}
    compiled = compile_campaign(campaign(data), templates, COMPLIANCE)
    links = CampaignLinks(compiled.campaign, KEYRING, BASES[0]).for_delivery(9, "im")
    body = compiled.render_text("im", person(), CODE, MessageLinks(links.track, links.unsubscribe_url), "07:30")
    assert body.startswith("Hi Lena: https://t.shop.example.com/s/") and "STOP" not in body


def test_an_sms_over_the_segment_limit_fails_the_load(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    sms = templates / "mothers-day/sms.txt.j2"
    sms.write_text("{% if contact.country == 'CN' %}" + "优惠" * 340 + "{% else %}Hi{% endif %}")  # 680 UCS-2 units
    with pytest.raises(InvalidInput) as raised:
        compile_campaign(campaign(), templates, COMPLIANCE)
    [problem] = raised.value.problems
    assert problem.path == str(sms)
    assert problem.message == (
        f"the SMS for a sample recipient in CN (zh-CN) is 11 UCS-2 segments with its opt-out line; "
        f"at most {MAX_SMS_SEGMENTS} can be sent: shorten it"
    )
    sms.write_text("{% if contact.country == 'CN' %}" + "优惠" * 330 + "{% else %}Hi{% endif %}")  # 10 segments
    compile_campaign(campaign(), templates, COMPLIANCE)


def test_a_text_template_that_never_names_unsubscribe_url_signs_no_unsubscribe_token(
    compiled: CompiledCampaign, tmp_path: Path
) -> None:
    links = CampaignLinks(compiled.campaign, KEYRING, BASES[0]).for_delivery(7, "sms")
    assert not compiled.texts["sms"].needs_unsubscribe
    compiled.render_text("sms", person(), CODE, links, "07:30")
    assert links._token is None and links._unsubscribe is None  # never signed

    shutil.copytree(REPO / "templates", tmp_path / "templates")
    (tmp_path / "templates/mothers-day/sms.txt.j2").write_text("Leave: {{ unsubscribe_url }}", encoding="utf-8")
    uses = compile_campaign(campaign(), tmp_path / "templates", COMPLIANCE)
    assert uses.texts["sms"].needs_unsubscribe
    links = CampaignLinks(uses.campaign, KEYRING, BASES[0]).for_delivery(7, "sms")
    assert links.unsubscribe_url in uses.render_text("sms", person(), CODE, links, "07:30")
    include = "{% include 'mothers-day/im.txt.j2' %}"
    (tmp_path / "templates/mothers-day/sms.txt.j2").write_text(include, encoding="utf-8")
    assert compile_campaign(campaign(), tmp_path / "templates", COMPLIANCE).texts["sms"].needs_unsubscribe
