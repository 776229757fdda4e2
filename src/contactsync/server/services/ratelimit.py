"""Sliding-window rate limits kept in the database, so every server process shares them."""

from __future__ import annotations

import sqlalchemy as sa

from contactsync.errors import RateLimited
from contactsync.server.context import Tx
from contactsync.server.store.tables import rate_hits


async def hit(tx: Tx, key: str, *, limit: int, window_s: int, message: str | None = None) -> None:
    """Count one hit for `key`; raise RateLimited when `limit` hits are already in the window."""
    since = tx.now - window_s * 1000
    await tx.conn.execute(
        sa.delete(rate_hits).where(rate_hits.c.key == key, rate_hits.c.at <= since)
    )
    rows = (
        await tx.conn.execute(
            sa.select(rate_hits.c.at)
            .where(rate_hits.c.key == key)
            .order_by(rate_hits.c.at)
            .limit(limit)
        )
    ).all()
    if len(rows) >= limit:
        retry_after = (rows[0].at + window_s * 1000 - tx.now + 999) // 1000
        raise RateLimited(retry_after, message)
    await tx.conn.execute(sa.insert(rate_hits).values(key=key, at=tx.now))
