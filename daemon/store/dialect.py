"""Dialect-specific INSERT (for ON CONFLICT) chosen from the connection, never from strings."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection


def upsert_insert(conn: AsyncConnection, table: Table) -> Any:
    """``insert(table)`` from the connection's dialect, with ``on_conflict_do_*`` available."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for dialect {name}")
