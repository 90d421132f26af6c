"""Alembic environment: migrations run on the connection fleetwatch hands over."""

from __future__ import annotations

from alembic import context

from fleetwatch.collector.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    msg = "run migrations through `fleetwatch db upgrade`, which provides the connection"
    raise RuntimeError(msg)

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
connection.commit()
