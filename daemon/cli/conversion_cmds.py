"""``topslot conversions import FILE``: orders from the shop, as the webhook would send them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from topslot.attribution.inputs import ConversionInput, parse_conversion_fields
from topslot.attribution.record import BATCH_SIZE, RecordResult, record_conversions
from topslot.cli.common import ConfigOption, out, print_problems, say, settings_or_exit, with_engine
from topslot.cli.import_input import EncodingOption, import_file_or_exit
from topslot.clock import SystemClock
from topslot.config import load_campaigns
from topslot.errors import Problem
from topslot.imports.reader import read_records
from topslot.links.keys import KeyringError, load_keyring

conversions_app = typer.Typer(help="Conversions (orders) from the shop.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(conversions_app, name="conversions")


def read_conversions(path: Path, problems: list[Problem], encoding: str | None = None) -> Iterator[ConversionInput]:
    """Every valid conversion of a CSV (header row) or JSON Lines file, streamed; each bad field
    is appended to ``problems`` as ``path:line:column: message`` (column 1 for JSON Lines).
    ``encoding`` as for ``topslot.imports.lines.resolve_encoding``."""
    for record in read_records(path, encoding):
        if record.error is not None:
            problems.append(Problem(str(path), record.line, 1, record.error))
            continue
        result = parse_conversion_fields(record.fields)
        if isinstance(result, ConversionInput):
            yield result
            continue
        for problem in result:
            column = record.column(problem.field) if problem.field else 1
            problems.append(Problem(str(path), record.line, column, problem.message))


@conversions_app.command("import")
def conversions_import(
    file: Annotated[Path, typer.Argument(help="CSV with a header row, or JSON Lines: one order per row.")],
    config: ConfigOption = Path("config"),
    batch_size: Annotated[int, typer.Option(min=1, help="Orders per transaction.")] = BATCH_SIZE,
    encoding: EncodingOption = None,
) -> None:
    """Record orders and refunds and credit them to campaigns (coupon, click id, contact).

    Columns: order_id, occurred_at (ISO 8601 with offset), revenue (required); coupon_code, click_id
    (tsid), contact_id (the shop's = external_id), discount, units, currency, refund (true/false),
    margin (0-1) (optional). Orders already recorded are skipped. Every bad row is listed as
    path:line:column: message and the good rows are kept (exit 1 if any row was bad)."""
    settings = settings_or_exit(config)
    codec = import_file_or_exit(file, encoding)
    try:
        keyring = load_keyring(settings)
    except KeyringError as exc:
        say(f"cannot check click ids and generated coupons: {exc}")
        raise typer.Exit(2) from None
    campaigns = load_campaigns(settings.campaigns_dir, settings.templates_dir).campaigns
    problems: list[Problem] = []
    rows = read_conversions(file, problems, codec)

    async def work(engine: AsyncEngine) -> RecordResult:
        now = SystemClock().now()
        return await record_conversions(
            engine, rows, now, campaigns=campaigns, keyring=keyring, source="import", batch_size=batch_size
        )

    result = with_engine(settings, work)
    problems.sort()
    print_problems(problems)
    rejected = len({p.line for p in problems})
    table = Table(title=f"conversions from {file}")
    for column in ("recorded", "already recorded", "rejected", "by coupon", "by click", "by contact", "not credited"):
        table.add_column(column, justify="right")
    by = result.attributed
    table.add_row(
        *(str(n) for n in (result.recorded, result.duplicates, rejected)),
        *(str(by.get(k, 0)) for k in ("coupon", "click", "contact", "none")),
    )
    out.print(table)
    if result.currency_mismatches:
        say(f"warning: {result.currency_mismatches} orders are in another currency than their campaign's costs")
    if problems:
        raise typer.Exit(1)
