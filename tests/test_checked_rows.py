"""Statements that write many rows with foreign keys (`bulk.checked_rows`): on PostgreSQL the
row checks run from kept plans for that statement only; the keys are still checked, and every
other statement of the transaction is planned with its parameters as before. Both databases."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from contactsync.server.services import addressbook
from contactsync.server.store import bulk
from tests.conftest import Api


@dataclass
class Contact:
    phone: str
    name: str | None = None
    destroy: bool = False


async def _mode(conn: sa.ext.asyncio.AsyncConnection) -> str:
    return str(await conn.scalar(sa.text("SHOW plan_cache_mode")))


async def test_a_big_upload_plans_the_rest_of_its_transaction_as_before(api: Api) -> None:
    me, _ = await api.user_with_token("+14155550100")
    numbers = [f"+1415555{i:04d}" for i in range(1000, 1000 + bulk.CHECKED_ROWS + 50)]
    async with api.ctx.tx() as tx:
        answer = await addressbook.upload(
            tx,
            addressbook.Owner(me["user_id"], None),
            addressbook.Upload(contacts=[Contact(n, "Friend") for n in numbers]),
            default_region=None,
        )
        assert answer["created"] == len(numbers)
        if tx.dialect == "postgresql":
            assert await _mode(tx.conn) == "force_custom_plan"
    async with api.ctx.read() as tx:
        stored = await tx.conn.scalar(
            sa.text("SELECT count(*) FROM book_entries WHERE owner_id = :o"),
            {"o": me["user_id"]},
        )
    assert stored == len(numbers)


async def test_the_keys_are_still_checked_and_a_failure_leaves_nothing(api: Api) -> None:
    me, _ = await api.user_with_token("+14155550100")
    # the first row's user is the caller; the others name a user who does not exist
    rows = [
        {"o": me["user_id"], "p": f"+1415555{i:04d}", "u": me["user_id"] + 1000} for i in range(200)
    ]
    rows[0]["u"] = me["user_id"]
    insert = sa.text(
        "INSERT INTO book_entries (owner_id, book, phone, created_at, updated_at, user_id) "
        "VALUES (:o, '', :p, 1, 1, :u)"
    )
    with pytest.raises(IntegrityError):
        async with api.ctx.tx() as tx:
            await tx.conn.execute(insert, rows[:1])
            async with bulk.checked_rows(tx.conn, tx.dialect, len(rows)):
                if tx.dialect == "postgresql":
                    assert await _mode(tx.conn) == "auto"
                await tx.conn.execute(insert, rows[1:])
    async with api.ctx.tx() as tx:
        if tx.dialect == "postgresql":
            assert await _mode(tx.conn) == "force_custom_plan"
        left = await tx.conn.scalar(sa.text("SELECT count(*) FROM book_entries"))
    assert left == 0


async def test_a_few_rows_change_nothing(api: Api) -> None:
    async with api.ctx.tx() as tx:
        async with bulk.checked_rows(tx.conn, tx.dialect, bulk.CHECKED_ROWS - 1):
            if tx.dialect == "postgresql":
                assert await _mode(tx.conn) == "force_custom_plan"
