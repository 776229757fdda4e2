"""The suite's own PostgreSQL databases: a copy given back and reused is as fresh as a new one.

conftest.Templates reuses each worker's copies of the migrated template instead of making and
dropping one per test. These tests fail if a reused copy could carry anything of an earlier
test: rows, sequence positions or schema.
"""

from __future__ import annotations

import asyncio

import asyncpg

from tests.conftest import ADMIN_KEY, Templates, pg_url


async def _contents(name: str) -> dict[str, str]:
    """Every table's rows (in a stable order) and every sequence's position."""
    conn = await asyncpg.connect(pg_url(name))
    try:
        found: dict[str, str] = {}
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        for row in tables:
            table = row["tablename"]
            found[table] = await conn.fetchval(
                f"SELECT coalesce(json_agg(t ORDER BY t::text), '[]')::text FROM \"{table}\" t"
            )
        for row in await conn.fetch(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"
        ):
            found[f"sequence {row['sequencename']}"] = str(row["last_value"])
        return found
    finally:
        await conn.close()


async def _dirty(name: str) -> None:
    """Rows in many tables and sequences moved on, through the real app."""
    import httpx
    from asgi_lifespan import LifespanManager

    from contactsync.server.app import create_app
    from contactsync.server.config import Settings

    url = pg_url(name).replace("postgresql://", "postgresql+asyncpg://")
    settings = Settings(database_url=url, admin_key=ADMIN_KEY, otp_sender="memory")
    app = create_app(settings)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            ids = []
            for phone in ("+14155550101", "+14155550102", "+4915123456789"):
                r = await client.post("/v1/admin/users", json={"phone": phone}, headers=admin)
                assert r.status_code in (200, 201), r.text
                ids.append(r.json()["user_id"])
            r = await client.post(
                f"/v1/admin/users/{ids[0]}/tokens", json={"device_id": "phone-1"}, headers=admin
            )
            me = {"Authorization": f"Bearer {r.json()['token']}"}
            contacts = [{"phone": "+14155550102"}, {"phone": "+14155550199", "name": "Zed"}]
            r = await client.post("/v1/addressbook", json={"contacts": contacts}, headers=me)
            assert r.status_code == 200, r.text
            r = await client.put(
                "/v1/relations/+14155550102", json={"access_levels": [1]}, headers=me
            )
            assert r.status_code < 300, r.text


async def test_a_reset_copy_equals_a_new_one(templates: Templates) -> None:
    fresh = await asyncio.to_thread(templates.pg_database)
    used = await asyncio.to_thread(templates.pg_database)
    try:
        before = await _contents(fresh)
        await _dirty(used)
        dirty = await _contents(used)
        changed = [table for table in before if dirty[table] != before[table]]
        assert len(changed) >= 5, changed  # the check below would mean something
        assert await templates.reset(used)
        assert await _contents(used) == before
    finally:
        templates.pg_release(fresh)
        templates.pg_release(used)


async def test_a_copy_whose_schema_changed_is_not_reused(templates: Templates) -> None:
    name = await asyncio.to_thread(templates.pg_database)
    try:
        conn = await asyncpg.connect(pg_url(name))
        try:
            await conn.execute("ALTER TABLE users ADD COLUMN left_over integer")
        finally:
            await conn.close()
        assert not await templates.reset(name)
    finally:
        templates.pg_release(name)  # dropped and replaced by a new copy


async def test_a_copy_still_locked_by_a_connection_is_not_reused(templates: Templates) -> None:
    name = await asyncio.to_thread(templates.pg_database)
    holder = await asyncpg.connect(pg_url(name))
    try:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        assert not await templates.reset(name)
        await transaction.rollback()
    finally:
        await holder.close()
        templates.pg_release(name)
