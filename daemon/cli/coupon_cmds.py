"""``topslot coupons import | verify | stock``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.campaign import Campaign
from topslot.cli.common import ConfigOption, out, print_problems, progress_bar, say, settings_or_exit, with_engine
from topslot.cli.import_input import EncodingOption, import_file_or_exit
from topslot.clock import SystemClock
from topslot.config import load_campaigns
from topslot.coupons import codes
from topslot.coupons.keys import coupon_keys
from topslot.coupons.pool_file import check_pool_name
from topslot.coupons.stock import PoolStock
from topslot.errors import InvalidInput
from topslot.imports.report import ImportReport
from topslot.links.keys import KeyringError, load_keyring
from topslot.links.tokens import TEST_COUPON_PREFIX
from topslot.settings import Settings
from topslot.store.coupons import DEFAULT_BATCH_SIZE, find_code, import_pool, pool_stock

coupons_app = typer.Typer(help="Coupon codes: import pools, verify codes, check stock.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(coupons_app, name="coupons")


# ---------------------------------------------------------------- import


@coupons_app.command("import")
def coupons_import(
    pool: Annotated[str, typer.Argument(help="Pool name (campaigns refer to it as coupon.pool).")],
    file: Annotated[Path, typer.Argument(help="One code per line, or a CSV with a 'code' column.")],
    config: ConfigOption = Path("config"),
    batch_size: Annotated[int, typer.Option(min=1, help="Codes per transaction.")] = DEFAULT_BATCH_SIZE,
    encoding: EncodingOption = None,
) -> None:
    """Add codes to a pool. Re-importing is harmless; bad and repeated codes are listed (exit 1)."""
    settings = settings_or_exit(config)
    why = check_pool_name(pool)
    if why:
        say(why)
        raise typer.Exit(2)
    codec = import_file_or_exit(file, encoding)

    async def work(engine: AsyncEngine) -> tuple[ImportReport, PoolStock]:
        with progress_bar(f"codes from {file.name}") as advance:
            report = await import_pool(
                engine, pool, file, now=SystemClock().now(), batch_size=batch_size, encoding=codec, progress=advance
            )
        return report, await pool_stock(engine, pool)

    try:
        report, stock = with_engine(settings, work)
    except InvalidInput as exc:
        print_problems(exc.problems)
        raise typer.Exit(2) from None
    print_problems(report.problems)
    table = Table(title=f"pool {pool} from {file}")
    for column in ("imported", "already in pool", "rejected"):
        table.add_column(column, justify="right")
    table.add_row(str(report.imported), str(report.ignored), str(report.rejected))
    out.print(table)
    _print_stock(stock)
    if not report.ok:
        raise typer.Exit(1)


# ---------------------------------------------------------------- stock


@coupons_app.command("stock")
def coupons_stock(
    pool: Annotated[str, typer.Argument(help="Pool name.")],
    config: ConfigOption = Path("config"),
) -> None:
    """Codes available, reserved (in flight) and assigned (sent) in a pool."""
    settings = settings_or_exit(config)
    stock = with_engine(settings, lambda engine: pool_stock(engine, pool), read_only=True)
    if stock.total == 0:
        say(f"no codes in pool {pool!r}")
        raise typer.Exit(1)
    _print_stock(stock)


def _print_stock(stock: PoolStock) -> None:
    table = Table(title=f"pool {stock.pool}")
    for column in ("available", "reserved", "assigned", "total", "left"):
        table.add_column(column, justify="right")
    left = f"{100 * stock.fraction_left:.1f} %"
    table.add_row(str(stock.available), str(stock.reserved), str(stock.assigned), str(stock.total), left)
    out.print(table)
    if stock.total and stock.low:
        say(f"warning: pool {stock.pool} has {left} of its codes left (import more with topslot coupons import)")


# ---------------------------------------------------------------- verify


@coupons_app.command("verify")
def coupons_verify(
    code: Annotated[
        str, typer.Argument(help="The code as the customer typed it (case, spaces and dashes do not matter).")
    ],
    campaign_id: Annotated[str | None, typer.Option("--campaign", help="Only check against this campaign.")] = None,
    config: ConfigOption = Path("config"),
) -> None:
    """Is CODE a real coupon? Generated codes are checked offline (signing keys and campaign files
    only); pool codes are looked up in the database. Exit 0 valid, 1 invalid (with the reason)."""
    settings = settings_or_exit(config)
    loaded = load_campaigns(settings.campaigns_dir, settings.templates_dir)
    if campaign_id is not None:
        if campaign_id not in loaded.campaigns:
            print_problems(loaded.problems)
            say(f"campaign {campaign_id!r} not found or invalid")
            raise typer.Exit(2)
        campaigns = [loaded.campaigns[campaign_id]]
        if campaigns[0].coupon is None:
            say(f"campaign {campaign_id} has no coupon")
            raise typer.Exit(2)
    else:
        campaigns = [c for c in loaded.campaigns.values() if c.coupon is not None]
    generating = [c for c in campaigns if c.coupon and c.coupon.generate]
    pooled = [c for c in campaigns if c.coupon and c.coupon.pool]

    reasons: list[str] = []
    if generating:
        found, reasons = _verify_generated(code, generating, settings)
        if found:
            raise typer.Exit(0)
    if pooled and _verify_pooled(code, pooled, settings, reasons):
        raise typer.Exit(0)
    if not generating and not pooled:
        reasons.append("no campaign with a coupon")
    if code.strip().upper().startswith(TEST_COUPON_PREFIX):
        reasons.insert(0, "a test coupon of a proof (topslot send-test): never valid")
    _say_invalid(code, reasons)
    raise typer.Exit(1)


def _verify_generated(code: str, campaigns: list[Campaign], settings: Settings) -> tuple[bool, list[str]]:
    try:
        keys = coupon_keys(load_keyring(settings))
    except KeyringError as exc:
        say(f"cannot verify generated codes: {exc}")
        raise typer.Exit(2) from None
    typo = codes.verify(code)
    if not typo.valid:
        return False, [f"check character: {typo.reason} (a typo, or not a generated code)"]
    reasons = []
    for campaign in campaigns:
        spec = campaign.coupon.generate  # type: ignore[union-attr]
        verdict = None
        for key in keys.values():
            verdict = codes.scheme(key, campaign.id, spec.prefix, spec.length).verify(code)  # type: ignore[union-attr]
            if verdict.valid:
                out.print(
                    f"valid: {verdict.code} is campaign {campaign.id}'s code for contact {verdict.contact_id}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
                return True, []
        reasons.append(f"{campaign.id}: {verdict.reason if verdict is not None else 'no key'}")
    return False, reasons


def _verify_pooled(code: str, campaigns: list[Campaign], settings: Settings, reasons: list[str]) -> bool:
    text = code.strip()
    pools = {c.coupon.pool: c.id for c in campaigns}  # type: ignore[union-attr]

    async def work(engine: AsyncEngine) -> list[dict[str, object]]:
        async with engine.connect() as conn:
            return [row for pool in pools for row in await find_code(conn, text, pool)]

    rows = with_engine(settings, work, read_only=True)
    for row in rows:
        if row["state"] == "available":
            reasons.append(f"pool {row['pool']}: the code was never handed out")
            continue
        sent = "sent" if row["state"] == "assigned" else "reserved, not yet sent"
        out.print(
            f"valid: {text} is from pool {row['pool']}, campaign {row['campaign_id']}, "
            f"contact {row['contact_id']} ({sent})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return True
    if not rows:
        reasons.append(f"not in pool{'s' if len(pools) > 1 else ''} {', '.join(sorted(pools))}")  # type: ignore[arg-type]
    return False


def _say_invalid(code: str, reasons: list[str]) -> None:
    say(f"invalid: {code}")
    for reason in reasons:
        say(f"  {reason}")
