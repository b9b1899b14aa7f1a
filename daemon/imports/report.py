"""What an import did: counts and every problem found."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from topslot.errors import Problem


@dataclass
class ImportReport:
    imported: int = 0  # new rows written
    updated: int = 0  # existing rows changed (contacts upserted by external_id)
    ignored: int = 0  # duplicates already stored (events re-imported)
    rejected: int = 0  # rows refused; each has at least one problem
    problems: list[Problem] = field(default_factory=list)

    @property
    def rows(self) -> int:
        """Rows handled so far (a progress bar's count)."""
        return self.imported + self.updated + self.ignored + self.rejected

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def reject(self, problems: list[Problem]) -> None:
        self.rejected += 1
        self.problems.extend(problems)


Progress = Callable[[int], None]
"""Told the rows handled so far after each batch (``topslot`` shows a progress bar on a terminal)."""
