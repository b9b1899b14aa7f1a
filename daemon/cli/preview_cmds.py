"""``topslot preview CAMPAIGN_ID CONTACT_ID``: the exact message a contact would get.

Nothing is sent, no coupon is reserved and nothing is written: the coupon is a made-up code marked
PREVIEW and every link points at the tracking server's ``preview`` token. On a short-link channel
(SMS) a link is ``{tracking_base_url}/s/preview000...``, exactly as long as a real short link, so
the characters, encoding, segments and cost shown (``costs.sms`` is the cost of one segment) are
those of the real message; the destinations are listed above the body.
"""

from __future__ import annotations

import email
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import typer
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.channel import CHANNELS, spec_of
from topslot.cli.common import ChannelChoice, load_campaign_or_exit, print_problems, say, settings_or_exit, with_engine
from topslot.clock import SystemClock
from topslot.errors import InvalidInput
from topslot.links.factory import placeholder_short_track
from topslot.rendering import MessageLinks, compile_campaign, sms_segments
from topslot.rendering.campaign_renderer import CompiledCampaign
from topslot.settings import Settings
from topslot.store.schema import contacts
from topslot.templating import ContactView, contact_view

PREVIEW_DELIVERY_ID = 0
PREVIEW_TOKEN = "preview"


def register(app: typer.Typer) -> None:
    app.command("preview")(preview)


def preview(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    contact_id: Annotated[str, typer.Argument(help="The contact's external id (or numeric database id).")],
    chosen: Annotated[
        ChannelChoice, typer.Option("--channel", help="The channel of the message.", case_sensitive=False)
    ] = ChannelChoice.email,
    config: Annotated[Path, typer.Option("--config", help="Configuration directory.")] = Path("config"),
) -> None:
    """Print the exact message CONTACT_ID would get from CAMPAIGN_ID: every header and each body
    part, decoded. Nothing is sent and no coupon is used."""
    channel = chosen.value
    if channel not in CHANNELS:
        _fail(f"--channel must be {', '.join(CHANNELS)}, not {channel!r}")
    settings = settings_or_exit(config)
    campaign = load_campaign_or_exit(settings, campaign_id)
    if channel not in campaign.channels:
        _fail(f"campaign {campaign_id!r} does not send on {channel} (its channels: {', '.join(campaign.channels)})")
    try:
        compiled = compile_campaign(campaign, settings.templates_dir, settings.compliance)
    except InvalidInput as exc:
        print_problems(exc.problems)
        raise typer.Exit(2) from None
    now = SystemClock().now()
    row = with_engine(settings, lambda engine: _fetch_contact(engine, contact_id), read_only=True)
    if row is None:
        _fail(f"no contact with external id or id {contact_id!r}")
    contact = contact_view(row, now.date())
    destinations: dict[str, str] = {}
    links = preview_links(settings, campaign, compiled, channel, destinations)
    coupon = preview_coupon(campaign)
    slot = campaign.schedule.slots[0]
    if spec_of(channel).mime:
        typer.echo(_email_preview(compiled, contact, coupon, links, slot, now), nl=False)
    else:
        text = _text_preview(compiled, campaign, channel, contact, row, coupon, links, slot, destinations)  # type: ignore[arg-type]
        typer.echo(text)


# ---------------------------------------------------------------- preview values


def preview_coupon(campaign: Campaign) -> str:
    """A code shaped like the campaign's, marked PREVIEW so it can never be mistaken for a real one."""
    if campaign.coupon is None:
        return ""
    generate = campaign.coupon.generate
    if generate is None:
        return "PREVIEW-CODE"
    body = ("PREVIEW" + "0" * generate.length)[: max(generate.length, len("PREVIEW"))]
    return generate.prefix + body


def preview_links(
    settings: Settings,
    campaign: Campaign,
    compiled: CompiledCampaign,
    channel: str = "email",
    destinations: dict[str, str] | None = None,
) -> MessageLinks:
    """Preview links: ``/c/preview?u=DESTINATION``, or on a short-link channel a placeholder short
    link of the real length; ``destinations`` (if given) collects destination → link shown."""
    base = settings.tracking_base_url.rstrip("/")
    short: Callable[[str], str] | None = (
        placeholder_short_track(base, PREVIEW_TOKEN) if spec_of(channel).short_links else None
    )

    def track(url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"track() needs an http(s) URL, got {url!r}")
        link = short(url) if short is not None else f"{base}/c/{PREVIEW_TOKEN}?u={quote(url, safe='')}"
        if destinations is not None:
            destinations[url] = link
        return link

    domain = compiled.assembler.sender.domain if compiled.assembler else "localhost"
    return MessageLinks(
        track=track,
        unsubscribe_url=f"{base}/u/{PREVIEW_TOKEN}",
        unsubscribe_mailto=f"mailto:unsubscribe@{domain}?subject={PREVIEW_TOKEN}",
        open_pixel_url=f"{base}/o/{PREVIEW_TOKEN}.gif" if campaign.tracking.opens else None,
    )


async def _fetch_contact(engine: AsyncEngine, contact_id: str) -> Row[Any] | None:
    """The contact by external id, else by numeric database id."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(contacts).where(contacts.c.external_id == contact_id))).first()
        if row is None and contact_id.isdigit():
            row = (await conn.execute(select(contacts).where(contacts.c.id == int(contact_id)))).first()
        return row


# ---------------------------------------------------------------- output


def _email_preview(
    compiled: CompiledCampaign, contact: ContactView, coupon: str, links: MessageLinks, slot: str, now: datetime
) -> str:
    assert compiled.assembler is not None
    to = contact.email  # type: ignore[attr-defined]
    if not to:
        _fail(f"contact {contact.external_id!r} has no email address")  # type: ignore[attr-defined]
    rendered = compiled.render_email(contact, coupon, links, slot)
    name = " ".join(p for p in (contact.first_name, contact.last_name) if p)  # type: ignore[attr-defined]
    data = compiled.assembler.assemble(
        rendered, to=to, to_name=name or None, delivery_id=PREVIEW_DELIVERY_ID, date=now.astimezone(UTC)
    )
    return describe_message(data)


def describe_message(data: bytes) -> str:
    """The header block exactly as sent, then each part's headers and decoded content."""
    head, _, _ = data.partition(b"\r\n\r\n")
    lines = [head.decode("ascii").replace("\r\n", "\n"), ""]
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    lines.append(f"# Subject (decoded): {message['Subject']}")
    lines.append(f"# To (decoded): {message['To']}")
    lines.append(f"# message size: {len(data):,} bytes")
    for part in message.iter_parts() if message.is_multipart() else [message]:
        lines.append("")
        lines.append(
            f"----- {part.get_content_type()} ({part.get('Content-Transfer-Encoding', '7bit')}, shown decoded) -----"
        )
        lines.append(part.get_content().replace("\r\n", "\n").rstrip("\n"))
    return "\n".join(lines) + "\n"


def _text_preview(
    compiled: CompiledCampaign,
    campaign: Campaign,
    channel: Literal["sms", "im"],
    contact: ContactView,
    row: Row[Any],
    coupon: str,
    links: MessageLinks,
    slot: str,
    destinations: dict[str, str],
) -> str:
    body = compiled.render_text(channel, contact, coupon, links, slot)
    spec = spec_of(channel)
    if spec.keyed:
        ids = row._mapping[spec.contact_field] or {}
        to = ", ".join(f"{k}:{v}" for k, v in sorted(ids.items())) or f"(no {spec.label} id)"
    else:
        to = spec.address(row._mapping) or f"(no {spec.label} address)"
    facts = [f"# {len(body)} characters"]
    if spec.segmented:
        facts = [segment_facts(body, getattr(campaign.costs, channel), campaign.costs.currency)]
    facts += [f"# link {link} -> {url}" for url, link in destinations.items()]
    return "\n".join([f"To: {to}", *facts, "", body])


def segment_facts(body: str, per_segment: Decimal, currency: str) -> str:
    """``# 153 characters, GSM-7, 1 segment of up to 160; cost 1 × 0.0079 USD = 0.0079 USD``."""
    count = sms_segments(body)
    plural = "segment" if count.segments == 1 else "segments"
    cost = per_segment * count.segments
    return (
        f"# {len(body)} characters, {count.encoding}, {count.segments} {plural} of up to {count.per_segment}; "
        f"cost {count.segments} × {per_segment:f} {currency} = {cost:f} {currency}"
    )


def _fail(message: str) -> None:
    say(message)
    raise typer.Exit(2)
