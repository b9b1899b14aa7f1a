"""Alembic environment: runs only on a connection handed over by ``topslot.store.db.upgrade``."""

from __future__ import annotations

from alembic import context

from topslot.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `topslot db upgrade` (topslot.store.db.upgrade), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
