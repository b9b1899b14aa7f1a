"""Read a file and parse it into batches of clean rows plus problems (pure apart from reading the file).

The store writes one batch per transaction; these generators decide where batches end so that a
worker process can parse the next batch while the current one is being written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from topslot.errors import Problem
from topslot.imports.contacts import ContactRow, parse_contact
from topslot.imports.events import EventRow, parse_event
from topslot.imports.reader import read_records

RowT = TypeVar("RowT")


@dataclass
class Batch(Generic[RowT]):
    rows: list[RowT] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # rows rejected while reading this batch
    rejected: int = 0


def contact_batches(
    path: Path, *, default_country: str | None, now: datetime, batch_size: int, encoding: str | None = None
) -> Iterator[Batch[ContactRow]]:
    """A batch ends at ``batch_size`` rows, or before a second row for the same external_id (so
    that rows are applied in file order). ``encoding`` as for ``read_records``."""
    batch: Batch[ContactRow] = Batch()
    seen: set[str] = set()
    for record in read_records(path, encoding):
        row = parse_contact(record, str(path), default_country=default_country, now=now)
        if isinstance(row, list):
            batch.problems.extend(row)
            batch.rejected += 1
            continue
        if row.external_id in seen or len(batch.rows) >= batch_size:
            yield batch
            batch, seen = Batch(), set()
        batch.rows.append(row)
        seen.add(row.external_id)
    if batch.rows or batch.problems:
        yield batch


def event_batches(path: Path, *, batch_size: int, encoding: str | None = None) -> Iterator[Batch[EventRow]]:
    batch: Batch[EventRow] = Batch()
    for record in read_records(path, encoding):
        row = parse_event(record, str(path))
        if isinstance(row, list):
            batch.problems.extend(row)
            batch.rejected += 1
            continue
        batch.rows.append(row)
        if len(batch.rows) >= batch_size:
            yield batch
            batch = Batch()
    if batch.rows or batch.problems:
        yield batch
