from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from fleetwatch.collector.storage.engine import alembic_config
from fleetwatch.collector.storage.store import Store
from fleetwatch.collector.storage.tables import metadata


class TestMigrations:
    def test_migrations_build_the_tables_the_code_uses(self, store: Store) -> None:
        """Upgrading an empty database gives exactly the tables, columns and indexes of tables.py."""
        with store.read() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            differences = compare_metadata(context, metadata)
        assert differences == []

    def test_migrations_form_one_line(self) -> None:
        """Every migration follows exactly one other: one head, no branches."""
        scripts = ScriptDirectory.from_config(alembic_config())
        assert len(scripts.get_heads()) == 1
        assert all(
            not isinstance(script.down_revision, tuple) for script in scripts.walk_revisions()
        )
