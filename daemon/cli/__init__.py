"""The ``topslot`` command line. Each submodule registers its own commands."""

from __future__ import annotations

import typer

from topslot import __version__
from topslot.cli import (
    bounce_cmds,
    config_cmds,
    control_cmds,
    conversion_cmds,
    coupon_cmds,
    data_cmds,
    delivery_cmds,
    init_cmds,
    plan_cmds,
    preview_cmds,
    proof_cmds,
    report_cmds,
    run_cmds,
    suppression_cmds,
)

app = typer.Typer(
    name="topslot",
    help="topslot: outbound email/SMS/IM timed for 07:30 and 17:00 in each recipient's own time zone.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"topslot {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print topslot's version and exit."
    ),
) -> None:
    """topslot: outbound email/SMS/IM timed for 07:30 and 17:00 in each recipient's own time zone."""


for module in (
    init_cmds,
    run_cmds,
    config_cmds,
    data_cmds,
    plan_cmds,
    preview_cmds,
    proof_cmds,
    coupon_cmds,
    delivery_cmds,
    report_cmds,
    conversion_cmds,
    control_cmds,
    suppression_cmds,
    bounce_cmds,
):
    module.register(app)


def main() -> None:
    app()
