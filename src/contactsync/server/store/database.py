"""The database handle: an async engine plus the per-dialect details kept in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from contactsync.errors import StoreUnavailable


class Database:
    """Owns the engine. `write()` and `read()` give a connection inside a transaction.

    On SQLite a write transaction starts with BEGIN IMMEDIATE, so two writers queue on the
    busy timeout instead of failing when a read lock cannot be upgraded.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.is_sqlite:
            _configure_sqlite(engine)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Database:
        if url.startswith("sqlite"):
            kwargs.setdefault("connect_args", {"timeout": 30})
        else:
            # Our hot statements take whole arrays of numbers; a cached generic plan cannot
            # know the array's size and can pick a nested loop that costs seconds, so plan
            # each execution with its real parameters (well under a millisecond).
            kwargs.setdefault(
                "connect_args", {"server_settings": {"plan_cache_mode": "force_custom_plan"}}
            )
            kwargs.setdefault("pool_size", 10)
            kwargs.setdefault("max_overflow", 20)
            kwargs.setdefault("pool_pre_ping", True)
        return cls(create_async_engine(url, **kwargs))

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._transaction(write=True) as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._transaction(write=False) as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        conn = self.engine.connect()
        try:
            await conn.start()
        except (DBAPIError, OSError, ConnectionError) as exc:
            # Any failure to get a connection (server down, database gone, auth) is the
            # store being unavailable, not a bug in the request.
            raise StoreUnavailable() from exc
        try:
            if write:
                conn = await conn.execution_options(contactsync_write=True)
            async with conn.begin():
                yield conn
        except (OperationalError, OSError, ConnectionError) as exc:
            raise StoreUnavailable() from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable() from exc
            raise
        finally:
            await conn.close()

    async def ping(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event decide how transactions start (see below).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("contactsync_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
