"""Hand-assembled MIME parses back, with the stdlib parser, to exactly what went in."""

from __future__ import annotations

import binascii
import email
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topslot.channels.smtp_connection import data_payload
from topslot.rendering.mime import (
    HeaderValueError,
    MimeAssembler,
    encode_body,
    encode_words,
    header_text,
    list_unsubscribe,
    quoted_printable,
    seven_bit,
)

WHEN = datetime(2027, 5, 6, 7, 20, 5, tzinfo=UTC)
UNSUBSCRIBE = list_unsubscribe("https://t.example.com/u/tok123", "mailto:unsubscribe@shop.example.com?subject=tok123")


@dataclass
class Parts:
    subject: str
    html: str
    text: str
    headers: tuple[tuple[str, str], ...] = (("List-Unsubscribe", UNSUBSCRIBE),)


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def content(message: EmailMessage, kind: str) -> str:
    part = message.get_body((kind,))
    assert part is not None
    return part.get_content().replace("\r\n", "\n")


@pytest.fixture(params=[True, False], ids=["8bit", "7bit"])
def assembler(request: pytest.FixtureRequest) -> MimeAssembler:
    return MimeAssembler(
        from_="Example Shop <news@shop.example.com>",
        reply_to="care@shop.example.com",
        campaign_id="mothers-day-2027",
        eight_bit=request.param,
    )


def assert_wire_format(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


@pytest.mark.parametrize(
    ("subject", "text", "html"),
    [
        ("A gift for Mom, Lena", "Hi Lena,\n\nYour code: MOM123\n", "<p>Hi Lena</p>\n<p>MOM123</p>\n"),
        (
            "【广告】母亲节礼物，梅 — 20% 折扣" * 3,
            "你好，梅！\n母亲节快乐。代码：MOM123\n" * 20,
            "<p>你好，梅！</p>" * 50,
        ),
        ("Prix spéciaux: crème & café", "Bonjour Zoë,\nvoilà = 20 %\ttab \nend", "<p>" + "é" * 3000 + "</p>"),
        ("x" * 120 + " " + "y" * 950, "line " * 400, "<td>" + "a" * 5000 + "</td>"),
        ("emoji 🎁 gift", "🎁" * 10, "<b>🎁</b>"),
    ],
)
def test_round_trip_through_the_stdlib_parser(assembler: MimeAssembler, subject: str, text: str, html: str) -> None:
    data = assembler.assemble(
        Parts(subject, html, text), to="lena@example.net", to_name="Lena Demo", delivery_id=7, date=WHEN
    )

    assert_wire_format(data)
    message = parse(data)
    assert message["Subject"] == subject
    assert message["From"] == "Example Shop <news@shop.example.com>"
    assert message["Reply-To"] == "care@shop.example.com"
    assert message["To"] == "Lena Demo <lena@example.net>"
    assert message["Date"].datetime == WHEN
    assert message["Message-ID"] == "<d7.mothers-day-2027@shop.example.com>"
    assert message["MIME-Version"] == "1.0"
    assert message["List-Unsubscribe"] == (
        "<https://t.example.com/u/tok123>, <mailto:unsubscribe@shop.example.com?subject=tok123>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert content(message, "plain") == text
    assert content(message, "html") == html
    assert not message.defects and all(not p.defects for p in message.iter_parts())


def test_contact_data_cannot_inject_a_header(assembler: MimeAssembler) -> None:
    evil = "Eve\r\nBcc: x@evil.example\r\n\r\nbody"
    data = assembler.assemble(
        Parts(f"Hi {evil}", "<p>x</p>", "x", (("List-Unsubscribe", UNSUBSCRIBE), ("X-Note", evil))),
        to="eve@example.com",
        to_name=evil,
        delivery_id=1,
        date=WHEN,
    )

    message = parse(data)
    assert message["Bcc"] is None
    assert message["Subject"] == "Hi Eve Bcc: x@evil.example body"
    assert message["To"].addresses[0].display_name == "Eve Bcc: x@evil.example body"
    assert message["To"].addresses[0].addr_spec == "eve@example.com"
    assert message["X-Note"] == "Eve Bcc: x@evil.example body"
    head = data.partition(b"\r\n\r\n")[0]
    assert not any(line.startswith(b"Bcc") for line in head.split(b"\r\n"))


@pytest.mark.parametrize(
    "bad", ["eve@example.com\r\nBcc: x@evil", "eve example@x.com", "<eve@x.com>", "nobody", "é@x.com"]
)
def test_an_unsafe_recipient_address_is_refused(assembler: MimeAssembler, bad: str) -> None:
    with pytest.raises(HeaderValueError):
        assembler.assemble(Parts("s", "h", "t"), to=bad, delivery_id=1, date=WHEN)


def test_unsafe_unsubscribe_uris_are_refused() -> None:
    with pytest.raises(HeaderValueError):
        list_unsubscribe("https://t.example.com/u/x>\r\nBcc: y@evil")


def test_body_encodings() -> None:
    assert encode_body("plain ascii\nok")[0] == b"7bit"
    assert encode_body("a" * 1200)[0] == b"quoted-printable"  # too long a line for 7bit
    assert encode_body("mostly ascii, one é")[0] == b"quoted-printable"
    assert encode_body("中文内容" * 10)[0] == b"base64"
    assert encode_body("plain ascii\nok", eight_bit=True)[0] == b"7bit"
    assert encode_body("mostly ascii, one é", eight_bit=True) == (b"8bit", "mostly ascii, one é\r\n".encode())
    assert encode_body("中文内容\n" * 10, eight_bit=True) == (b"8bit", "中文内容\r\n".encode() * 10 + b"\r\n")
    assert encode_body("é" * 499, eight_bit=True)[0] == b"8bit"  # 998 octets
    assert encode_body("é" * 500, eight_bit=True)[0] == b"base64"  # 1,000 octets: too long a line for 8bit
    assert encode_body("中" * 332 + "\nok", eight_bit=True)[0] == b"8bit"  # 996 octets
    assert encode_body("中" * 333 + "\nok", eight_bit=True)[0] == b"base64"  # 999 octets
    assert encode_body("nul \x00 é", eight_bit=True)[0] == b"quoted-printable"  # 8bit may not hold NUL


@pytest.mark.parametrize(
    ("text", "html"),
    [
        ("Grüße, Zoë\n", "<p>Grüße — 20 %</p>"),
        ("中文内容\n" * 30, "<p>" + "中" * 400 + "</p>"),  # a 1,200-octet line: base64 either way
        ("ascii only\n", "<p>" + "é" * 600 + "</p>"),  # too long a line for 8bit
        ("nul \x00 é", "<b>🎁</b>\r\nline\rline"),
        ("ascii\nContent-Transfer-Encoding: 8bit\n\nstill ascii\n", "<p>é</p>"),  # a header in a body
        ("é\r\nContent-Transfer-Encoding: 8bit\r\n\r\nmore é", "x\nContent-Transfer-Encoding: 8bit\n\n"),
    ],
)
def test_seven_bit_re_encodes_exactly_as_the_seven_bit_assembler(text: str, html: str) -> None:
    options = dict(from_="Shop <news@shop.example.com>", campaign_id="c1")
    parts = Parts("Grüße", html, text)
    eight = MimeAssembler(**options, eight_bit=True).assemble(parts, to="a@example.net", delivery_id=3, date=WHEN)
    seven = MimeAssembler(**options, eight_bit=False).assemble(parts, to="a@example.net", delivery_id=3, date=WHEN)
    assert seven.isascii()
    assert seven_bit(eight) == seven
    assert seven_bit(seven) == seven


_LINE_ENDS = st.sampled_from(["\n", "\r", "\r\n", "\n\r", "\r\r\n", ".", "\n.", "\x00", "é", "中", "a", " "])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_LINE_ENDS, max_size=60).map("".join),
    st.lists(_LINE_ENDS, max_size=60).map("".join),
    st.lists(_LINE_ENDS, max_size=20).map("".join),
    st.booleans(),
)
def test_the_assembled_message_has_crlf_line_ends_only_as_its_envelope_promises(
    text: str, html: str, name: str, eight_bit: bool
) -> None:
    """The dispatcher's envelope says ``crlf=True`` for the assembler's output: the SMTP transport
    then skips its scan for bare CR and LF (``data_payload``), so the promise must hold whatever the
    contact data and templates hold."""
    assembler = MimeAssembler(from_="Shop <news@shop.example.com>", campaign_id="c1", eight_bit=eight_bit)
    parts = Parts("s" + name, html, text, (("X-Note", name), ("List-Unsubscribe", UNSUBSCRIBE)))
    data = assembler.assemble(parts, to="a@example.net", to_name=name or None, delivery_id=5, date=WHEN)
    assert_wire_format(data)
    assert data_payload(data, crlf=True) == data_payload(data)
    assert_wire_format(seven_bit(data))  # a server without 8BITMIME: still CRLF only


def test_text_holding_the_boundary_is_sent_quoted_printable(assembler: MimeAssembler) -> None:
    delimiter = "--=_ts9" + assembler._boundary_tail  # a contact who guessed their message's boundary
    text = f"Hi\n{delimiter}\nContent-Type: text/html\n\n<script>x</script>\n"
    data = assembler.assemble(Parts("s", "<p>é</p>", text), to="a@example.net", delivery_id=9, date=WHEN)
    message = parse(data)
    assert content(message, "plain") == text
    assert not message.defects and len(list(message.iter_parts())) == 2


def test_long_ascii_subjects_are_folded_and_non_ascii_encoded() -> None:
    folded = header_text("Subject", " ".join(["word"] * 40))
    assert "\r\n " in folded and max(len(line) for line in folded.split("\r\n")) <= 78
    encoded = header_text("Subject", "母亲节" * 30)
    assert all(line.strip().startswith("=?utf-8?b?") and len(line.strip()) <= 75 for line in encoded.split("\r\n"))


def test_display_names_with_specials_are_quoted(assembler: MimeAssembler) -> None:
    data = assembler.assemble(Parts("s", "h", "t"), to="a@b.example", to_name='O"Brien, Ann', delivery_id=2, date=WHEN)
    assert parse(data)["To"].addresses[0].display_name == 'O"Brien, Ann'


def test_quoted_printable_line_by_line_decodes_to_the_input_with_short_lines() -> None:
    rng = random.Random(4)
    pieces = ["ab", " ", "\t", ".", "=", "\n", " \n", "\t\n", "—", "ë", "广告", "x" * 80, "y" * 200]
    for _ in range(3000):
        data = "".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40))).encode("utf-8")
        for _ in range(2):  # the second time from the line cache
            encoded = quoted_printable(data)
            assert binascii.a2b_qp(encoded.replace(b"\r\n", b"\n")) == data
            assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
            assert b"\n" not in encoded.replace(b"\r\n", b"")


def _encode_words_by_character(value: str) -> str:
    """What encode_words must give: characters packed greedily into words of at most 45 octets."""
    words, chunk = [], b""
    for char in value:
        raw = char.encode("utf-8")
        if len(chunk) + len(raw) > 45:
            words.append("=?utf-8?b?" + binascii.b2a_base64(chunk, newline=False).decode() + "?=")
            chunk = b""
        chunk += raw
    if chunk:
        words.append("=?utf-8?b?" + binascii.b2a_base64(chunk, newline=False).decode() + "?=")
    return "\r\n ".join(words)


@settings(max_examples=300)
@given(st.text(max_size=200) | st.text(alphabet="a梅é🎁【】", max_size=120))
def test_encoded_words_hold_whole_characters(value: str) -> None:
    assert encode_words(value) == _encode_words_by_character(value)
