"""The schema comes only from the Alembic migrations, and they upgrade and downgrade cleanly."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from contactsync.server.store import migrate
from contactsync.server.store.database import Database
from contactsync.server.store.tables import metadata


async def test_migrated_schema_matches_the_table_definitions(db_url: str) -> None:
    db = Database.from_url(db_url)
    try:

        def diff(connection: sa.Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        async with db.read() as conn:
            differences = await conn.run_sync(diff)
        assert differences == []
        heads = ScriptDirectory.from_config(migrate.alembic_config()).get_heads()
        assert len(heads) == 1, f"migration history must be linear, heads: {heads}"
        assert await migrate.current(db) == set(heads)
    finally:
        await db.dispose()


async def test_downgrade_to_base_and_upgrade_again(db_url: str) -> None:
    db = Database.from_url(db_url)
    try:
        async with db.write() as conn:
            await conn.execute(
                sa.text("INSERT INTO users (phone, restricted, created_at) VALUES ('+1', false, 1)")
            )

        def down(connection: sa.Connection) -> None:
            from alembic import command

            command.downgrade(migrate.alembic_config(connection), "base")

        async with db.write() as conn:
            await conn.run_sync(down)
        async with db.read() as conn:
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        assert "users" not in tables
        assert await migrate.current(db) == set()
        async with db.write() as conn:  # and as a database that never had a migration
            await conn.execute(sa.text("DROP TABLE alembic_version"))
        assert await migrate.current(db) == set()
        await migrate.upgrade(db)
        assert await migrate.current(db) == migrate.heads()
        async with db.read() as conn:
            count = await conn.scalar(sa.text("SELECT count(*) FROM users"))
        assert count == 0
    finally:
        await db.dispose()


async def test_user_ids_are_never_reused(db_url: str) -> None:
    """A deleted user's id must not come back: other users' data may still name it."""
    db = Database.from_url(db_url)
    try:
        insert = sa.text(
            "INSERT INTO users (phone, restricted, created_at) VALUES (:p, false, 1) RETURNING id"
        )
        async with db.write() as conn:
            first = await conn.scalar(insert, {"p": "+14155550100"})
            await conn.execute(sa.text("DELETE FROM users WHERE id = :i"), {"i": first})
            second = await conn.scalar(insert, {"p": "+14155550100"})
        assert second != first
    finally:
        await db.dispose()


async def test_books_filled_before_their_versions_get_one(db_url: str) -> None:
    """Books with entries and no version row (filled before migration 0010) get one: a book
    without a version row is taken to be empty."""
    from alembic import command

    db = Database.from_url(db_url)
    try:
        async with db.write() as conn:
            await conn.run_sync(lambda c: command.downgrade(migrate.alembic_config(c), "0015"))
            owner = await conn.scalar(
                sa.text(
                    "INSERT INTO users (phone, restricted, created_at) "
                    "VALUES ('+14155550100', false, 1) RETURNING id"
                )
            )
            for book in ("", "tablet"):
                await conn.execute(
                    sa.text(
                        "INSERT INTO book_entries (owner_id, book, phone, name, created_at, "
                        "updated_at) VALUES (:o, :b, '+14155550101', 'A', 1, 1)"
                    ),
                    {"o": owner, "b": book},
                )
            await conn.execute(
                sa.text("INSERT INTO book_versions VALUES (:o, 'tablet', 7)"), {"o": owner}
            )
        await migrate.upgrade(db)
        async with db.read() as conn:
            rows = (
                await conn.execute(sa.text("SELECT book, version FROM book_versions ORDER BY book"))
            ).all()
        assert [tuple(r) for r in rows] == [("", 1), ("tablet", 7)]
    finally:
        await db.dispose()
