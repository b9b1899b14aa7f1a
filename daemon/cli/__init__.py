"""The ``topslot`` command line. Each submodule registers its own commands."""

from __future__ import annotations

import typer

from daemon.cli import (
    config_cmds,
    control_cmds,
    conversion_cmds,
    coupon_cmds,
    data_cmds,
    delivery_cmds,
    plan_cmds,
    preview_cmds,
    report_cmds,
    run_cmds,
)

app = typer.Typer(
    name="topslot",
    help="topslot: outbound email/SMS/IM timed for 07:30 and 17:00 in each recipient's own time zone.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (
    run_cmds,
    config_cmds,
    data_cmds,
    plan_cmds,
    preview_cmds,
    coupon_cmds,
    delivery_cmds,
    report_cmds,
    conversion_cmds,
    control_cmds,
):
    module.register(app)


def main() -> None:
    app()
