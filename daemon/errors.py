"""One root error for topslot, and the problem record every validator reports."""

from __future__ import annotations

from dataclasses import dataclass


class TopslotError(Exception):
    """Root of every error topslot raises on purpose."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with an input file, located as precisely as known."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class InvalidInput(TopslotError):
    """Input from outside (YAML, CSV, templates) failed validation; carries every problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))
