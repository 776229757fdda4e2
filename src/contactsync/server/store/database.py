"""The database handle: an async engine plus the per-dialect details kept in one place.

Every wait on the database is bounded, and what goes wrong in the driver is translated here,
at the store boundary, into the two errors a client may see (both 503 with Retry-After; the
request changed nothing):
- no free connection in the pool within `pool_timeout` -> `Overloaded` (on SQLite, whose
  writers queue on the file lock for its busy timeout, within that);
- no connection within `connect_timeout` (server down or not answering), a statement not
  answered within `command_timeout`, a connection lost mid-transaction -> `StoreUnavailable`.
A connection that timed out or broke is thrown away without another word to the server (a
ROLLBACK on a hung server would hang as long again), so the pool heals by itself when the
database answers again: no restart needed.

No ping on every checkout (it cost a round trip and ~0.8 ms of CPU per transaction). A pooled
PostgreSQL connection whose socket was closed while it sat in the pool (a restart, a proxy
that cut it) is seen without a round trip (a poll of its socket) and pinged, so it is replaced
before the request uses it; one that sat idle for `IDLE_PING_S` is pinged too (a peer that
vanished without closing).
A connection that breaks while busy fails its statement: that request ends with
`StoreUnavailable` and SQLAlchemy replaces every older connection of the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from contactsync.errors import Overloaded, StoreUnavailable
from contactsync.server.store.checkpoints import BACKSTOP_PAGES, Checkpointer

if TYPE_CHECKING:
    from contactsync.server.config import Settings

# What a driver raises when the server is gone or silent (asyncpg's command and connect
# timeouts are plain TimeoutErrors, which are OSErrors too).
SQLITE_BUSY_SECONDS = 30

_LOST = (OperationalError, OSError, ConnectionError, TimeoutError)


class Database:
    """Owns the engine. `write()` and `read()` give a connection inside a transaction.

    On SQLite a write transaction starts with BEGIN IMMEDIATE, so two writers queue on the
    busy timeout instead of failing when a read lock cannot be upgraded.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        connect_timeout: float = 5.0,
        pool_timeout: float = 1.0,
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # Checking a connection out may wait for the pool, ping a pooled connection and open
        # a new one: bounded as a whole.
        self.acquire_timeout = pool_timeout + connect_timeout
        self._ping: asyncio.Task[bool] | None = None
        self._writer = asyncio.Lock()
        # SQLite's WAL checkpoints, in the background while a server runs (checkpoints.py)
        self.checkpointer: Checkpointer | None = None
        if self.is_sqlite:
            _configure_sqlite(engine, self)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        connect_timeout: float = 5.0,
        command_timeout: float | None = 10.0,
        pool_timeout: float = 1.0,
        pool_size: int = 32,
        max_overflow: int = 8,
        idle_ping_seconds: float | None = None,
        **kwargs: Any,
    ) -> Database:
        if not _in_memory(url):
            kwargs.setdefault("pool_size", pool_size)
            kwargs.setdefault("max_overflow", max_overflow)
        # A failed statement's message (and the trace logged for a 500) must not carry its
        # values: they are names, numbers and message bodies.
        kwargs.setdefault("hide_parameters", True)
        if cls.is_sqlite_url(url):
            # Writers queue on SQLite's file lock for up to its busy timeout anyway: a burst
            # of them waits as long for a pooled connection instead of failing after one
            # second (the embedded database serves one process).
            pool_timeout = SQLITE_BUSY_SECONDS
            kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_SECONDS})
        else:
            # Our hot statements take whole arrays of numbers; a cached generic plan cannot
            # know the array's size and can pick a nested loop that costs seconds, so plan
            # each execution with its real parameters (well under a millisecond).
            kwargs.setdefault(
                "connect_args",
                {
                    "server_settings": {"plan_cache_mode": "force_custom_plan"},
                    # asyncpg: `timeout` bounds opening a connection, `command_timeout` every
                    # statement (BEGIN, COMMIT and the pool's ping included)
                    "timeout": connect_timeout,
                    "command_timeout": command_timeout,
                    "connection_class": _asyncpg_connection_class(),
                },
            )
        if not _in_memory(url):
            kwargs.setdefault("pool_timeout", pool_timeout)
        engine = create_async_engine(url, **kwargs)
        if not cls.is_sqlite_url(url) and not kwargs.get("pool_pre_ping"):
            _ping_when_idle(engine, IDLE_PING_S if idle_ping_seconds is None else idle_ping_seconds)
        return cls(engine, connect_timeout=connect_timeout, pool_timeout=pool_timeout)

    def without_command_timeout(self) -> Database:
        """A one-connection sibling whose statements may run as long as they take (schema
        migrations on a big table); the caller disposes of it."""
        url = self.engine.url.render_as_string(hide_password=False)
        return Database.from_url(url, command_timeout=None, pool_size=1, max_overflow=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls.from_url(
            settings.resolved_database_url(),
            connect_timeout=settings.db_connect_timeout_seconds,
            command_timeout=settings.db_command_timeout_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )

    @staticmethod
    def is_sqlite_url(url: str) -> bool:
        return url.startswith("sqlite")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def start_checkpoints(self) -> None:
        """SQLite on a file: its WAL checkpoints from now on run in the background, not in
        the commit that fills the log (checkpoints.py). The connections open so far are
        closed, so that every one the pool opens from now on leaves them to it."""
        path = self.engine.url.database
        if not self.is_sqlite or not path or _in_memory(str(self.engine.url)):
            return
        if self.checkpointer is None:
            await self.engine.dispose()
            self.checkpointer = Checkpointer(path)
            self.checkpointer.start()

    async def stop_checkpoints(self) -> None:
        if self.checkpointer is not None:
            checkpointer, self.checkpointer = self.checkpointer, None
            await checkpointer.stop()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        async with self._transaction(write=True) as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self._transaction(write=False) as conn:
            yield conn

    async def _connect(self) -> AsyncConnection:
        conn = self.engine.connect()
        try:
            async with asyncio.timeout(self.acquire_timeout):
                await conn.start()
        except PoolTimeout as exc:
            # Every connection is busy: the server has more requests than it can serve.
            raise Overloaded() from exc
        except (DBAPIError, *_LOST) as exc:
            # Any failure to get a connection (server down or silent, database gone, auth)
            # is the store being unavailable, not a bug in the request.
            raise StoreUnavailable() from exc
        return conn

    @asynccontextmanager
    async def _transaction(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        if write and self.is_sqlite:
            # SQLite has one writer at a time. Writers of this process queue here, in order,
            # instead of on the file lock, where a waiting writer sleeps in steps of up to
            # 100 ms (SQLite's busy handler) and 30 of them took 50 ms each. Other processes
            # on the file (the CLI) still meet the busy timeout.
            try:
                async with asyncio.timeout(SQLITE_BUSY_SECONDS):
                    await self._writer.acquire()
            except TimeoutError as exc:
                raise Overloaded() from exc
            try:
                async with self._transaction_on(write=True) as conn:
                    yield conn
            finally:
                self._writer.release()
            if self.checkpointer is not None:
                self.checkpointer.wrote()
            return
        async with self._transaction_on(write=write) as conn:
            yield conn

    @asynccontextmanager
    async def _transaction_on(self, *, write: bool) -> AsyncIterator[AsyncConnection]:
        conn = await self._connect()
        try:
            if write and self.is_sqlite:
                conn = await conn.execution_options(contactsync_write=True)
            elif not write and not self.is_sqlite:
                # PostgreSQL reads at READ COMMITTED, where every statement takes its own
                # snapshot anyway: a read needs no BEGIN and COMMIT (two round trips less).
                # SQLite's read transaction does give one snapshot to all its statements.
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            transaction = await conn.begin()
            try:
                yield conn
            except BaseException as exc:
                # A broken or silent connection gets no ROLLBACK (see `_discard`).
                if not _lost(exc) and transaction.is_active:
                    await transaction.rollback()
                raise
            await transaction.commit()
        except (DBAPIError, *_LOST) as exc:
            if not _lost(exc):
                raise  # a constraint and the like: the service's to handle
            await _discard(conn)
            raise StoreUnavailable() from exc
        finally:
            await _give_back(conn)

    async def ping(self, timeout: float = 1.5) -> bool:
        """Whether the database answers `SELECT 1` within `timeout` seconds. A slow ping is
        left to finish on its own (bounded by the timeouts above), and callers meanwhile
        share it: a readiness probe every second during an outage opens no pile of them."""
        loop = asyncio.get_running_loop()
        if self._ping is None or self._ping.done() or self._ping.get_loop() is not loop:
            self._ping = loop.create_task(self._select_one())
        try:
            return await asyncio.wait_for(asyncio.shield(self._ping), timeout)
        except TimeoutError:
            return False

    async def _select_one(self) -> bool:
        try:
            async with self.read() as conn:
                await conn.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    async def dispose(self) -> None:
        if self._ping is not None and not self._ping.done():
            self._ping.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._ping
        await self.engine.dispose()


def _asyncpg_connection_class() -> type:
    """asyncpg's connection, closed without a goodbye once a command of it timed out.

    After a timeout asyncpg sends the server a cancel request and a graceful close waits for
    it; SQLAlchemy closes an invalidated connection gracefully, for up to 2 s. A server that
    let the command time out will not answer either, so the request would end seconds after
    its command timeout instead of at it.
    """
    import asyncpg

    class Connection(asyncpg.Connection):  # type: ignore[misc]
        async def close(self, *, timeout: float | None = None) -> None:
            if getattr(self, "_cancellations", None):
                self.terminate()
                return
            await super().close(timeout=timeout)

        async def _introspect_types(self, typeoids: Any, timeout: Any) -> Any:
            # asyncpg has no built-in codec for some arrays of built-in types (varchar[],
            # bigint[]) and asks the server about them on every new connection, a catalog
            # query of ~10 ms: a new connection's first set-based statement paid it. Built-in
            # types have the same OIDs and descriptions in every database of a server
            # version, so they are asked once a process.
            oids = frozenset(typeoids)
            if max(oids, default=_FIRST_NORMAL_OID) >= _FIRST_NORMAL_OID:
                return await super()._introspect_types(typeoids, timeout)
            key = (self.get_server_version(), oids)
            if key not in _BUILTIN_TYPES:
                types, _ = await super()._introspect_types(typeoids, timeout)
                _BUILTIN_TYPES[key] = types
            # The second item is the introspection's statement: asyncpg re-prepares an
            # unnamed statement after it, which an anonymous stand-in keeps doing.
            return _BUILTIN_TYPES[key], _ANONYMOUS

    return Connection


# OIDs below this are PostgreSQL's own (fixed at initdb); see `_introspect_types` above.
_FIRST_NORMAL_OID = 16384
_BUILTIN_TYPES: dict[tuple[Any, frozenset[int]], Any] = {}


class _Anonymous:
    name = ""


_ANONYMOUS = _Anonymous()


def _in_memory(url: str) -> bool:
    """An in-memory SQLite database: one shared connection, no pool to size."""
    return url.startswith("sqlite") and (url.rstrip("/").endswith(":") or ":memory:" in url)


def _lost(exc: BaseException) -> bool:
    """The connection is unusable: the server went silent or away under it."""
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated or isinstance(exc, OperationalError)
    return isinstance(exc, _LOST)


async def _discard(conn: AsyncConnection) -> None:
    """Throw a broken or silent connection away (see `_asyncpg_connection_class`)."""
    with contextlib.suppress(Exception):
        await conn.invalidate()


IDLE_PING_S = 5.0


def _ping_when_idle(engine: AsyncEngine, idle_seconds: float) -> None:
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        # A connection the server (or anything between) closed while it sat in the pool is
        # known closed without a round trip: the driver saw the end of its socket, or the
        # socket has something to read (an idle connection has nothing to say but goodbye).
        driver = getattr(record, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the pooled connection was closed")
        since = record.info.get("idle_since")
        if not _readable(driver) and (since is None or time.monotonic() - since < idle_seconds):
            return
        try:
            alive = dialect.do_ping(dbapi_conn)
        except Exception:
            alive = False
        if not alive:
            # The pool throws this connection away and checks out a fresh one.
            raise DisconnectionError("the pooled connection did not answer a ping")


def _readable(driver: Any) -> bool:
    """Whether the driver connection's socket is readable (or closed) right now."""
    transport = getattr(driver, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN | select.POLLRDHUP)
    return bool(poller.poll(0))


async def _give_back(conn: AsyncConnection) -> None:
    """Return the connection to the pool even when the task is being cancelled (a server
    stopping its background tasks): a return cut short leaves the connection's reset
    (ROLLBACK) half done, and SQLite's worker thread then finishes it after the event loop
    has gone. The cancellation is passed on once the connection is back."""
    closing = asyncio.ensure_future(conn.close())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await closing
        raise


def _configure_sqlite(engine: AsyncEngine, database: Database) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event decide how transactions start (see below).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        if database.checkpointer is not None:
            cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        write = conn.get_execution_options().get("contactsync_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
