"""The Alembic chain: one head, and it builds exactly the schema tables.py declares, on both
databases (so a table change without a migration fails here)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from strongroom.adapters.db.engine import create_engines
from strongroom.adapters.db.migrate import alembic_config
from strongroom.adapters.db.tables import metadata


def test_the_chain_has_a_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite+aiosqlite://"))
    assert len(script.get_heads()) == 1


async def test_migrated_schema_matches_the_tables(database_url: str) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    engines = create_engines(database_url)
    try:
        async with engines.write.connect() as conn:
            assert await conn.run_sync(diff) == []
    finally:
        await engines.dispose()
