"""Alembic environment: runs migrations over the async engine for SQLite and PostgreSQL."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from strongroom.adapters.db.engine import create_engines
from strongroom.adapters.db.tables import metadata

target_metadata = metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite rebuilds tables to ALTER
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    engines = create_engines(url, pool_size=1)
    try:
        async with engines.write.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engines.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `strongroom db upgrade`")
asyncio.run(_run_async())
