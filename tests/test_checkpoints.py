"""SQLite's WAL checkpoints run in the background while the server runs, not inside the
request whose commit fills the log (store/checkpoints.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from contactsync.server.store.checkpoints import BACKSTOP_PAGES, Checkpoint, Checkpointer
from tests.conftest import Api
from tests.test_addressbook import book, upload

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

BOOK = [{"phone": f"+1415555{1000 + i:04d}", "name": f"Name {i}"} for i in range(2_000)]


async def _autocheckpoint(api: Api) -> int:
    async with api.ctx.db.read() as conn:
        return int(await conn.scalar(sa.text("PRAGMA wal_autocheckpoint")))


async def test_the_servers_commits_leave_checkpoints_to_the_background(api: Api) -> None:
    checkpointer = api.ctx.db.checkpointer
    assert checkpointer is not None and checkpointer.running
    # a request's commit checkpoints only past the backstop, far beyond SQLite's 1,000 pages
    assert await _autocheckpoint(api) == BACKSTOP_PAGES
    _, me = await api.user_with_token("+14155550100")
    before = checkpointer.count
    assert (await upload(api, me, BOOK))["created"] == len(BOOK)
    # within a few seconds of the writes, a checkpoint has copied the whole log into the file
    for _ in range(100):
        if checkpointer.count > before and checkpointer.last and not checkpointer.last.busy:
            break
        await asyncio.sleep(0.05)
    last = checkpointer.last
    assert checkpointer.count > before and last is not None
    assert last.log_pages > 0 and last.done_pages == last.log_pages
    # the database file itself now holds the book: read with the log set aside
    path = Path(str(api.ctx.db.engine.url.database))
    copy = path.with_name("copy.db")
    copy.write_bytes(path.read_bytes())  # the file alone, without its -wal
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT count(*) FROM book_entries").fetchone()[0] == len(BOOK)
    assert len(await book(api, me)) == len(BOOK)


async def test_a_database_without_a_running_server_keeps_sqlites_own_checkpoints(
    api: Api,
) -> None:
    # stopped (as at shutdown): connections opened from now on checkpoint by themselves
    await api.ctx.db.stop_checkpoints()
    await api.ctx.db.engine.dispose()
    assert api.ctx.db.checkpointer is None
    assert await _autocheckpoint(api) == 1000
    _, me = await api.user_with_token("+14155550100")
    assert (await upload(api, me, BOOK))["created"] == len(BOOK)


async def test_stopping_while_a_checkpoint_runs_waits_for_it_and_leaves_no_connection(
    api: Api,
) -> None:
    """A checkpoint's thread runs on when its task is cancelled (a server stopping): the
    connection is closed only after it, and no checkpoint opens the file again afterwards.
    (Closing it under a running checkpoint crashed the process.)"""
    _, me = await api.user_with_token("+14155550100")
    await upload(api, me, BOOK)
    path = str(api.ctx.db.engine.url.database)
    for _ in range(30):
        checkpointer = Checkpointer(path, every_s=0)
        running = [asyncio.ensure_future(checkpointer.checkpoint()) for _ in range(3)]
        await asyncio.sleep(0)  # their threads start
        await checkpointer.stop()
        outcomes = await asyncio.gather(*running, return_exceptions=True)
        assert checkpointer._conn is None
        for outcome in outcomes:  # each ran before the close, or was refused after it
            assert isinstance(outcome, Checkpoint | sqlite3.ProgrammingError), outcome
    with pytest.raises(sqlite3.ProgrammingError):
        await checkpointer.checkpoint()
