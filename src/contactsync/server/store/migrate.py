"""Apply the Alembic migrations: on start, from `contactsync db upgrade`, and in tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from contactsync.server.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


async def upgrade(db: Database, revision: str = "heads") -> None:
    """Bring the schema to `revision` (all heads by default)."""

    def run(connection: Connection) -> None:
        command.upgrade(alembic_config(connection), revision)

    # A migration may rewrite a big table: no per-statement timeout for it.
    target = db if db.is_sqlite else db.without_command_timeout()
    try:
        async with target.write() as conn:
            await conn.run_sync(run)
    finally:
        if target is not db:
            await target.dispose()


async def current(db: Database) -> set[str]:
    """The revisions the database is at."""
    from alembic.runtime.migration import MigrationContext

    def run(connection: Connection) -> set[str]:
        return set(MigrationContext.configure(connection).get_current_heads())

    async with db.read() as conn:
        return await conn.run_sync(run)
