"""``topslot send-test CAMPAIGN_ID --to ADDR[,ADDR]``: a real proof through the configured provider.

The message is rendered exactly as the campaign renders it, for ``--contact`` (external or numeric
id) or, without it, for the first contact of the campaign's audience (else a made-up sample
contact), and handed to the messenger the registry picks for the channel: the SMTP pool, Twilio, an
IM provider (or the channel's file outbox when none is configured). It is marked as a test: an
email's subject starts with ``[TEST] `` and it carries ``X-Topslot-Test: proof``; an SMS or IM
text starts with ``[TEST] ``.

Nothing of it counts: no ledger row, no coupon reserved, no event. The coupon is a test code
(``TEST-`` + the campaign's prefix + ``PROOF000...``): never drawn from a pool, never a valid
generated code (``topslot coupons verify`` names it a test code). Links are signed for delivery id
``TEST_DELIVERY_ID`` (0), which no ledger row ever has (ids start at 1): the tracking server
redirects a proof's click to its destination and records nothing, and answers its open pixel and
unsubscribe link without recording anything either. The campaign's link destinations are saved in
the ``links`` table (the same rows its first real send writes) so that those redirects work.

Exit codes: 0 every proof was accepted, 1 a provider refused one (the others are still sent), 2 a
settings problem (bad campaign, channel, address, contact, provider settings).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn, cast

import structlog
import typer
from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.channel import CHANNELS, OUTBOX_PROVIDER, spec_of
from topslot.channels.base import Card, ContentTemplate, EmailEnvelope, Message, Messenger, TextMessage
from topslot.channels.registry import Registry
from topslot.cli.common import load_campaign_or_exit, print_problems, say, settings_or_exit
from topslot.cli.preview_cmds import _fetch_contact
from topslot.clock import SystemClock
from topslot.errors import InvalidInput, SendError
from topslot.links.factory import CampaignLinks, DeliveryLinks
from topslot.links.keys import KeyringError, load_keyring
from topslot.links.tokens import TEST_COUPON_PREFIX, TEST_DELIVERY_ID
from topslot.links.tracking import TrackingBase
from topslot.logs import CurrentStderr, configure_logging, get_logger
from topslot.rendering import compile_campaign
from topslot.rendering.campaign_renderer import CompiledCampaign
from topslot.settings import Settings
from topslot.store.db import DatabaseUnavailable, prepare_database
from topslot.store.links import save_links
from topslot.store.schema import contacts
from topslot.store.segments import audience_filter
from topslot.templating import ContactView, contact_view, sample_contact

log = get_logger("topslot.cli.proof")

TEST_SUBJECT_PREFIX = "[TEST] "
TEST_HEADER = ("X-Topslot-Test", "proof")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL_RE = re.compile(rf"^[^@\s<>(),;:\"\[\]\\]+@{_LABEL}(?:\.{_LABEL})+$")
_E164_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_IM_ID_RE = re.compile(r"^[^\s:]{1,128}$")


class ProofProblem(Exception):
    """A settings or argument problem: one line, exit 2."""


def register(app: typer.Typer) -> None:
    app.command("send-test")(send_test)


def send_test(
    campaign_id: Annotated[str, typer.Argument(help="The campaign's id.")],
    to: Annotated[
        str, typer.Option("--to", help="Where to send the proofs, comma-separated (email, E.164 phone or IM id).")
    ],
    contact_id: Annotated[
        str | None,
        typer.Option(
            "--contact", help="Render for this contact (external or numeric id); default: the audience's first."
        ),
    ] = None,
    channel: Annotated[str, typer.Option("--channel", help="email, sms or im.", case_sensitive=False)] = "email",
    config: Annotated[Path, typer.Option("--config", help="Configuration directory.")] = Path("config"),
) -> None:
    """Send CAMPAIGN_ID's message as a proof to --to through the configured provider, marked
    [TEST], with a test coupon and test links; nothing is counted in the campaign's figures."""
    channel = channel.lower()
    if channel not in CHANNELS:
        _fail(f"--channel must be {', '.join(CHANNELS)}, not {channel!r}")
    settings = settings_or_exit(config)
    saved = structlog.get_config()
    stderr = cast(IO[str], CurrentStderr())  # stdout is for the results
    configure_logging(settings.log_level, settings.log_format, settings.secret_values(), stderr)
    try:
        results = _prepare_and_send(settings, campaign_id, channel, to, contact_id)
    finally:
        structlog.configure(**saved)
    refused = False
    for result in results:
        if result.error is None:
            typer.echo(f"sent {channel} proof to {result.to} via {result.provider}: {result.provider_id}")
        else:
            refused = True
            typer.echo(f"refused {channel} proof to {result.to} by {result.provider}: {result.error}")
    if refused:
        raise typer.Exit(1)


def _prepare_and_send(
    settings: Settings, campaign_id: str, channel: str, to: str, contact_id: str | None
) -> list[ProofResult]:
    campaign = load_campaign_or_exit(settings, campaign_id)
    if channel not in campaign.channels:
        _fail(f"campaign {campaign_id!r} does not send on {channel} (its channels: {', '.join(campaign.channels)})")
    try:
        addresses = parse_addresses(to, channel, campaign.provider_for(channel))
        compiled = compile_campaign(campaign, settings.templates_dir, settings.compliance)
        keyring = load_keyring(settings)
    except InvalidInput as exc:
        print_problems(exc.problems)
        raise typer.Exit(2) from None
    except (ProofProblem, KeyringError) as exc:
        _fail(str(exc))
    links = CampaignLinks(campaign, keyring, TrackingBase.parse(settings.tracking_base_url))
    try:
        return asyncio.run(send_proofs(settings, campaign, compiled, links, channel, addresses, contact_id))
    except DatabaseUnavailable as exc:
        say(str(exc))
        raise typer.Exit(1) from None
    except ProofProblem as exc:
        _fail(str(exc))


# ---------------------------------------------------------------- addresses


def parse_addresses(text: str, channel: str, im_provider: str | None = None) -> list[str]:
    """The ``--to`` addresses as the channel's messenger takes them, or ``ProofProblem`` naming each
    bad one: email syntax, E.164 phones, IM ids (``provider:id`` or the id alone; the campaign's
    IM provider)."""
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise ProofProblem("--to needs at least one address")
    found: list[str] = []
    bad: list[str] = []
    for part in parts:
        if not part:
            continue
        address = _address(part, channel, im_provider)
        if address is None:
            bad.append(part)
        elif address not in found:
            found.append(address)
    if bad:
        what = {
            "email": "an email address (name@example.com)",
            "sms": "an E.164 phone number (+14155550101)",
            "im": f"an IM id ({im_provider or 'provider'}:ID or ID)",
        }[channel]
        raise ProofProblem(f"--to: not {what}: {', '.join(repr(b) for b in bad)}")
    return found


def _address(part: str, channel: str, im_provider: str | None) -> str | None:
    if channel == "email":
        return part if _EMAIL_RE.fullmatch(part) and len(part) <= 254 else None
    if channel == "sms":
        return part if _E164_RE.fullmatch(part) else None
    provider, colon, ident = part.partition(":")
    if not colon:
        provider, ident = im_provider or "", part
    if not provider or (im_provider is not None and provider != im_provider) or not _IM_ID_RE.fullmatch(ident):
        return None
    if provider in spec_of("im").phone_keys and not _E164_RE.fullmatch(ident):
        return None
    return f"{provider}:{ident}"


# ---------------------------------------------------------------- test values


def test_coupon(campaign: Campaign) -> str:
    """``TEST-`` + a code shaped like the campaign's, which no verification accepts; empty without coupons."""
    if campaign.coupon is None:
        return ""
    generate = campaign.coupon.generate
    if generate is None:
        return TEST_COUPON_PREFIX + "PROOF"
    body = ("PROOF" + "0" * generate.length)[: max(generate.length, len("PROOF"))]
    return TEST_COUPON_PREFIX + generate.prefix + body


def is_test_coupon(code: str) -> bool:
    return code.strip().upper().startswith(TEST_COUPON_PREFIX)


# ---------------------------------------------------------------- sending


@dataclass(frozen=True)
class ProofResult:
    to: str
    provider: str
    provider_id: str | None = None
    error: str | None = None


async def send_proofs(
    settings: Settings,
    campaign: Campaign,
    compiled: CompiledCampaign,
    links: CampaignLinks,
    channel: str,
    addresses: list[str],
    contact_id: str | None,
    registry: Registry | None = None,
) -> list[ProofResult]:
    """Render the proof once per address and hand each to the channel's messenger."""
    now = SystemClock().now()
    engine = await prepare_database(settings.database_url, read_only=True)
    try:
        contact, which = await _contact(engine, campaign, contact_id, now)
        delivery = links.for_delivery(TEST_DELIVERY_ID, channel)
        messages = [_render(compiled, campaign, channel, contact, delivery, address, now) for address in addresses]
        pending = links.book.pending()
        if pending:  # so that the tracking server can redirect a proof's clicks
            await save_links(engine, campaign.id, pending)
            links.book.mark_saved(pending)
    finally:
        await engine.dispose()
    say(f"rendered for {which}")
    registry = registry or Registry(settings)
    try:
        messenger = registry.messenger(channel, campaign.provider_for(channel))  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - provider settings that cannot build a messenger
        raise ProofProblem(f"cannot set up the {channel} provider: {exc}") from None
    try:
        pairs = zip(addresses, messages, strict=True)
        return [await _send(messenger, campaign, channel, address, message) for address, message in pairs]
    finally:
        await registry.close()


async def _send(messenger: Messenger, campaign: Campaign, channel: str, to: str, message: Message) -> ProofResult:
    provider = messenger.provider
    try:
        provider_id = await messenger.send(message)
    except SendError as exc:
        log.warning("proof_refused", campaign_id=campaign.id, channel=channel, to=to, provider=provider, error=str(exc))
        return ProofResult(to, provider, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - anything else: may or may not have been sent
        error = f"{type(exc).__name__}: {exc}"
        log.warning("proof_refused", campaign_id=campaign.id, channel=channel, to=to, provider=provider, error=error)
        return ProofResult(to, provider, error=error)
    log.info("proof_sent", campaign_id=campaign.id, channel=channel, to=to, provider=provider, provider_id=provider_id)
    if provider == OUTBOX_PROVIDER:
        provider_id = f"{provider_id} (outbox file: written, not sent; no {channel} provider configured)"
    return ProofResult(to, provider, provider_id)


async def _contact(
    engine: AsyncEngine, campaign: Campaign, contact_id: str | None, now: datetime
) -> tuple[ContactView, str]:
    """The contact to render for and a description of which one it is."""
    if contact_id is not None:
        row = await _fetch_contact(engine, contact_id)
        if row is None:
            raise ProofProblem(f"no contact with external id or id {contact_id!r}")
        return contact_view(row, now.date()), f"contact {row.external_id} (id {row.id})"
    row = await _first_of_audience(engine, campaign, now)
    if row is not None:
        return contact_view(row, now.date()), f"contact {row.external_id} (id {row.id}), the first of the audience"
    sample = sample_contact()
    return sample, f"a made-up sample contact ({sample.external_id}): the audience is empty"  # type: ignore[attr-defined]


async def _first_of_audience(engine: AsyncEngine, campaign: Campaign, now: datetime) -> Row[Any] | None:
    query = select(contacts).where(audience_filter(campaign.audience, now)).order_by(contacts.c.id).limit(1)
    async with engine.connect() as conn:
        return (await conn.execute(query)).first()


def _render(
    compiled: CompiledCampaign,
    campaign: Campaign,
    channel: str,
    contact: ContactView,
    links: DeliveryLinks,
    address: str,
    now: datetime,
) -> Message:
    coupon = test_coupon(campaign) or None
    slot = campaign.schedule.slots[0]
    spec = spec_of(channel)
    if spec.mime:
        rendered = compiled.render_email(contact, coupon, links, slot)
        rendered = dataclasses.replace(
            rendered, subject=TEST_SUBJECT_PREFIX + rendered.subject, headers=(*rendered.headers, TEST_HEADER)
        )
        assembler = compiled.assembler
        assert assembler is not None  # compiled with email content
        data = assembler.assemble(rendered, to=address, delivery_id=TEST_DELIVERY_ID, date=now.astimezone(UTC))
        # every proof its own Message-ID: mailbox providers drop a second message with the same one
        old = assembler.message_id(TEST_DELIVERY_ID).encode("ascii")
        new = f"<test.{secrets.token_hex(8)}{old.decode('ascii')[3:]}".encode("ascii")
        data = data.replace(b"\r\nMessage-ID: " + old + b"\r\n", b"\r\nMessage-ID: " + new + b"\r\n", 1)
        return EmailEnvelope(TEST_DELIVERY_ID, assembler.mail_from, address, data)
    body = TEST_SUBJECT_PREFIX + compiled.render_text(channel, contact, coupon, links, slot)
    key = f"test-{secrets.token_hex(8)}"  # every proof has delivery id 0: its own idempotency key
    if not spec.cards:
        return TextMessage(TEST_DELIVERY_ID, address, body, proof_key=key)
    parts = compiled.render_card(channel, contact, coupon, links, slot)
    card = None
    if parts is not None:
        title = TEST_SUBJECT_PREFIX + parts.title if parts.title else TEST_SUBJECT_PREFIX.strip()
        card = Card(title, parts.link, parts.button, coupon)
    im = campaign.content.im
    template = ContentTemplate(im.content_sid, parts.variables) if im and im.content_sid and parts else None
    return TextMessage(TEST_DELIVERY_ID, address, body, card, template, campaign.id, proof_key=key)


def _fail(message: str) -> NoReturn:
    say(message)
    raise typer.Exit(2)
