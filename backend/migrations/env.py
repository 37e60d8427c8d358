"""Alembic environment: runs on a connection handed over by ``store.db.upgrade``."""

from __future__ import annotations

from alembic import context

from papercrane.backend.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline SQL generation is not supported
    raise RuntimeError("run migrations through `papercrane db upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
