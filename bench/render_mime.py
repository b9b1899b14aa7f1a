"""Render + MIME assembly per recipient: topslot's splicing assembler against the stdlib builders.

Renders the example campaign (mothers-day-2027, CSS-inlined HTML + text + subject) for varied
contacts with real signed links (``CampaignLinks``), then builds the message bytes three ways on the
same content, in one run:

- topslot: ``CompiledCampaign.render_email`` + ``MimeAssembler.assemble``
- ``email.message.EmailMessage`` (policy default) built and serialised per message
- ``email.mime.multipart.MIMEMultipart`` (compat32) built and serialised per message

and topslot's own variants side by side (rounds alternate, median of the rounds): templates
rendered by Jinja or spliced (``campaign_renderer.SPLICE``), non-ASCII parts quoted-printable or
8bit (``MimeAssembler(eight_bit=...)``). CPU µs per message (process time).

    .venv/bin/python bench/render_mime.py [--messages 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.header import Header
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime
from pathlib import Path
from urllib.parse import quote

import topslot.rendering.campaign_renderer as renderer
from topslot.campaign import Campaign
from topslot.links.factory import CampaignLinks
from topslot.links.keys import Keyring
from topslot.rendering import MessageLinks, RenderedEmail, compile_campaign
from topslot.rendering.mime import MimeAssembler
from topslot.settings import Compliance
from topslot.templating import ContactView
from topslot.yaml_source import load_yaml

REPO = Path(__file__).resolve().parents[1]
NAMES = ["Lena", "Noah", "Mei", "Zoë", "Ana", "梅", "Øyvind", "Chloé"]
COUNTRIES = ["US", "GB", "CN", "FR", "DE"]
WHEN = datetime(2027, 5, 6, 7, 20, tzinfo=UTC)
COMPAT32_CRLF = policy.compat32.clone(linesep="\r\n")


def setup(
    *, eight_bit: bool | None = None, signed: bool = False
) -> tuple[Callable[[int], RenderedEmail], Callable[[RenderedEmail, int], bytes], str]:
    """(render message i, assemble it, sender); ``signed``: real signed links (``CampaignLinks``)
    instead of plain URL-quoting ones; ``eight_bit``: the assembler's (None: its default)."""
    campaign = Campaign.model_validate(load_yaml(REPO / "config/campaigns/mothers-day-2027.yaml").data)
    compliance = Compliance(
        postal_address="Example Shop, 1 Example Road, Shanghai 200000", sender_identity="Example Shop"
    )
    compiled = compile_campaign(campaign, REPO / "templates", compliance)
    contacts = [
        ContactView(external_id=f"C{i}", first_name=n, email=f"c{i}@example.net", country=COUNTRIES[i % 5])
        for i, n in enumerate(NAMES)
    ]

    campaign_links = CampaignLinks(
        campaign, Keyring({"bench": b"render-mime-bench-key-0123456789"}), "https://t.example.com"
    )

    def render(i: int) -> RenderedEmail:
        if signed:
            return compiled.render_email(
                contacts[i % len(contacts)], f"MOM{i:010d}", campaign_links.for_delivery(i + 1, "email"), "07:30"
            )
        links = MessageLinks(
            track=lambda url: f"https://t.example.com/c/{i:x}?u={quote(url, safe='')}",
            unsubscribe_url=f"https://t.example.com/u/{i:x}",
            unsubscribe_mailto=f"mailto:unsubscribe@shop.example.com?subject={i:x}",
            open_pixel_url=f"https://t.example.com/o/{i:x}.gif",
        )
        return compiled.render_email(contacts[i % len(contacts)], f"MOM{i:010d}", links, "07:30")

    assert compiled.assembler is not None
    assembler = MimeAssembler(from_=campaign.content.email.from_, campaign_id=campaign.id, eight_bit=eight_bit)  # type: ignore[union-attr]

    def assemble(rendered: RenderedEmail, i: int) -> bytes:
        return assembler.assemble(rendered, to=f"c{i}@example.net", delivery_id=i, date=WHEN)

    return render, assemble, campaign.content.email.from_  # type: ignore[union-attr]


def email_message(rendered: RenderedEmail, i: int, sender: str) -> bytes:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    message["To"] = f"c{i}@example.net"
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(WHEN)
    message["Message-ID"] = f"<d{i}.mothers-day-2027@shop.example.com>"
    for name, value in rendered.headers:
        message[name] = value
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message.as_bytes()


def mime_multipart(rendered: RenderedEmail, i: int, sender: str) -> bytes:
    message = MIMEMultipart("alternative")
    message["From"] = sender
    message["To"] = f"c{i}@example.net"
    message["Subject"] = Header(rendered.subject, "utf-8")
    message["Date"] = format_datetime(WHEN)
    message["Message-ID"] = f"<d{i}.mothers-day-2027@shop.example.com>"
    for name, value in rendered.headers:
        message[name] = value
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.attach(MIMEText(rendered.text, "plain", "utf-8"))
    message.attach(MIMEText(rendered.html, "html", "utf-8"))
    return message.as_bytes(policy=COMPAT32_CRLF)


def rate(count: int, work: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for i in range(count):
        work(i)
    return count / (time.perf_counter() - started)


def cpu_us(count: int, work: Callable[[int], object]) -> float:
    started = time.process_time()
    for i in range(count):
        work(i)
    return (time.process_time() - started) / count * 1e6


def variants(n: int, rounds: int) -> None:
    """topslot's variants side by side: rounds alternate, median CPU µs per message."""
    render, qp, _ = setup(eight_bit=False, signed=True)
    _, eight, _ = setup(eight_bit=True, signed=True)

    def jinja(i: int) -> RenderedEmail:
        renderer.SPLICE = False
        try:
            return render(i)
        finally:
            renderer.SPLICE = True

    rendered = [render(i) for i in range(len(NAMES))]
    cases: dict[str, Callable[[int], object]] = {
        "render, Jinja": jinja,
        "render, spliced": render,
        "assemble, quoted-printable": lambda i: qp(rendered[i % len(NAMES)], i),
        "assemble, 8bit": lambda i: eight(rendered[i % len(NAMES)], i),
        "render + assemble, before (Jinja, QP)": lambda i: qp(jinja(i), i),
        "render + assemble, now (spliced, 8bit)": lambda i: eight(render(i), i),
    }
    times: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(rounds):
        for label, work in cases.items():
            times[label].append(cpu_us(n, work))
    print(f"topslot variants, signed links, CPU µs per message (median of {rounds} alternating rounds of {n:,}):")
    medians = {label: statistics.median(values) for label, values in times.items()}
    for label, value in medians.items():
        print(f"  {label:40s} {value:8.1f} µs   rounds: {', '.join(f'{v:.1f}' for v in times[label])}")
    before, now = medians["render + assemble, before (Jinja, QP)"], medians["render + assemble, now (spliced, 8bit)"]
    print(f"  {'render + assemble: before / now':40s} {before / now:8.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    n = args.messages
    variants(n, args.rounds)
    render, assemble, sender = setup()
    rendered = [render(i) for i in range(len(NAMES))]
    slow = max(n // 10, 200)  # the stdlib builders are slow: fewer rounds

    rows = [
        ("render only (subject + html + text)", rate(n, render)),
        ("assemble only: topslot", rate(n, lambda i: assemble(rendered[i % len(NAMES)], i))),
        ("assemble only: EmailMessage", rate(slow, lambda i: email_message(rendered[i % len(NAMES)], i, sender))),
        ("assemble only: MIMEMultipart", rate(slow, lambda i: mime_multipart(rendered[i % len(NAMES)], i, sender))),
        ("render + assemble: topslot", rate(n, lambda i: assemble(render(i), i))),
        ("render + EmailMessage", rate(slow, lambda i: email_message(render(i), i, sender))),
    ]
    size = len(assemble(rendered[0], 0))
    print(f"messages: {n:,} (stdlib builders: {slow:,}); message size ~{size:,} bytes")
    for label, value in rows:
        print(f"{label:40s} {value:10,.0f} msg/s")
    ours, theirs = rows[1][1], rows[2][1]
    print(f"{'topslot assembler vs EmailMessage':40s} {ours / theirs:10.1f} x")
    print(f"{'topslot assembler vs MIMEMultipart':40s} {ours / rows[3][1]:10.1f} x")
    print(f"{'render+assemble vs render+EmailMessage':40s} {rows[4][1] / rows[5][1]:10.1f} x")


if __name__ == "__main__":
    main()
