from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from fleetwatch.collector.storage.engine import alembic_config, make_engine, upgrade
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


class TestResponseMigration:
    def test_findings_stored_before_the_lifecycle_take_their_place_in_it(
        self, database_url: str
    ) -> None:
        """0005 on a database with findings: open ones are `open`, resolved ones `verified`
        (no case left to follow), and nothing stored is lost."""
        engine = make_engine(database_url)
        config = alembic_config()
        at = datetime(2026, 11, 1, tzinfo=UTC).isoformat()
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
            connection.execute(
                text("INSERT INTO hosts (host_id, enrolled_at, sections, conditions, dropped_total)"
                     " VALUES ('h', :at, '{}', '{}', 0)"),
                {"at": at},
            )  # fmt: skip
            for key, resolved in (("tcp/1", None), ("tcp/2", at)):
                connection.execute(
                    text("INSERT INTO findings (host_id, rule, key, severity, detail, first_seen,"
                         " last_seen, resolved_at) VALUES ('h', 'allowed_ports', :key, 'high',"
                         " 'd', :at, :at, :resolved)"),
                    {"key": key, "at": at, "resolved": resolved},
                )  # fmt: skip
            connection.commit()
        upgrade(engine)
        store = Store(engine)
        with store.read() as conn:
            rows = store.findings.query(conn, host_ids=["h"])
        engine.dispose()
        assert [(r.key, r.state, r.verified_at is not None) for r in rows] == [
            ("tcp/1", "open", False),
            ("tcp/2", "verified", True),
        ]
