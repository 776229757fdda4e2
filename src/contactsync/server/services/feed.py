"""Batched reads of many users' event logs, for live connections.

When one registration wakes a thousand sockets, each wants "my events after seq N". Asked one
by one that is a thousand read transactions competing for the pool; here the requests that
arrive in the same turn of the event loop are answered by one statement (a LATERAL join on
PostgreSQL, a window function on SQLite), with at most `page` events per user.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass

import sqlalchemy as sa

from contactsync.server.context import Context
from contactsync.server.services.events import Event

_COLUMNS = (
    sa.column("user_id", sa.BigInteger),
    sa.column("after", sa.BigInteger),
    sa.column("seq", sa.BigInteger),
    sa.column("type", sa.String),
    sa.column("at", sa.BigInteger),
    sa.column("data", sa.JSON),
)

_READ_PG = sa.text(
    """
    SELECT w.user_id, w.after, e.seq, e.type, e.at, e.data
    FROM unnest(CAST(:ids AS BIGINT[]), CAST(:afters AS BIGINT[])) AS w(user_id, after)
    CROSS JOIN LATERAL (
        SELECT seq, type, at, data FROM events
        WHERE events.user_id = w.user_id AND events.seq > w.after
        ORDER BY seq LIMIT :lim
    ) AS e
    """
).columns(*_COLUMNS)

_READ_SQLITE = sa.text(
    """
    SELECT user_id, after, seq, type, at, data FROM (
        SELECT e.user_id, w.after, e.seq, e.type, e.at, e.data,
               ROW_NUMBER() OVER (PARTITION BY e.user_id, w.after ORDER BY e.seq) AS rn
        FROM events e JOIN (
            SELECT json_extract(value, '$[0]') AS user_id, json_extract(value, '$[1]') AS after
            FROM json_each(:pairs)
        ) AS w ON e.user_id = w.user_id AND e.seq > w.after
    ) WHERE rn <= :lim
    """
).columns(*_COLUMNS)


@dataclass(frozen=True)
class Page:
    events: list[Event]
    more: bool  # True when the log may hold more events after this page


class Feed:
    """`await feed.read(user_id, after)` -> the next page of that user's log, batched."""

    def __init__(self, ctx: Context, page: int = 200, max_users: int = 1000) -> None:
        self.ctx = ctx
        self.page = page
        self.max_users = max_users
        self._pending: dict[int, list[tuple[int, asyncio.Future[Page]]]] = defaultdict(list)
        self._flush_task: asyncio.Task[None] | None = None
        self.statements = 0  # for tests and benchmarks: how many batched reads ran

    async def read(self, user_id: int, after: int) -> Page:
        future: asyncio.Future[Page] = asyncio.get_running_loop().create_future()
        self._pending[user_id].append((after, future))
        if self._flush_task is None:
            # A task, not an immediate read: every socket woken in this turn of the loop
            # gets to queue its request first.
            self._flush_task = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)
        pending, self._pending = self._pending, defaultdict(list)
        self._flush_task = None
        # One row of the query per distinct (user, after): two devices of a user at
        # different places in the log each get their own page.
        asks: dict[tuple[int, int], list[asyncio.Future[Page]]] = defaultdict(list)
        for user, waiting in pending.items():
            for after, future in waiting:
                asks[(user, after)].append(future)
        keys = list(asks)
        chunks = [keys[i : i + self.max_users] for i in range(0, len(keys), self.max_users)]
        await asyncio.gather(*(self._answer({k: asks[k] for k in chunk}) for chunk in chunks))

    async def _answer(self, asks: dict[tuple[int, int], list[asyncio.Future[Page]]]) -> None:
        try:
            rows = await self._query(list(asks))
        except BaseException as exc:
            for futures in asks.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        found: dict[tuple[int, int], list[Event]] = defaultdict(list)
        for row in rows:
            found[(row.user_id, row.after)].append(Event(row.seq, row.type, row.at, row.data))
        for key, futures in asks.items():
            page = sorted(found.get(key, ()), key=lambda e: e.seq)
            for future in futures:
                if not future.done():
                    future.set_result(Page(page, len(page) >= self.page))

    async def _query(self, keys: list[tuple[int, int]]) -> list[sa.Row]:
        async with self.ctx.read() as tx:
            if tx.dialect == "postgresql":
                result = await tx.conn.execute(
                    _READ_PG,
                    {
                        "ids": [u for u, _ in keys],
                        "afters": [a for _, a in keys],
                        "lim": self.page,
                    },
                )
            else:
                result = await tx.conn.execute(
                    _READ_SQLITE, {"pairs": json.dumps(keys), "lim": self.page}
                )
            self.statements += 1
            return list(result)
