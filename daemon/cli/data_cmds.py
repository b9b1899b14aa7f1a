"""Placeholder until its owner fills it in."""

import typer


def register(app: typer.Typer) -> None:
    pass
