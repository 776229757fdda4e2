"""Bulk loading for benchmarks: a million users in seconds, not through the API."""

from __future__ import annotations

import sqlite3

import asyncpg

from bench.common import PG_ADMIN_URL


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


async def users(url: str, numbers: list[str], now: int = 1) -> None:
    """Insert users (with their event counters) directly. `url` is the async SQLAlchemy URL."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1]
        conn = sqlite3.connect(path)
        with conn:
            conn.executemany(
                "INSERT INTO users (phone, restricted, created_at, notify_contact_joined) "
                "VALUES (?, 0, ?, 1)",
                ((n, now) for n in numbers),
            )
            conn.execute(
                "INSERT INTO event_counters (user_id, last_seq) SELECT id, 0 FROM users "
                "WHERE id NOT IN (SELECT user_id FROM event_counters)"
            )
        conn.close()
        return
    conn = await asyncpg.connect(_plain(url))
    try:
        await conn.copy_records_to_table(
            "users", records=[(n, now) for n in numbers], columns=["phone", "created_at"]
        )
        await conn.execute(
            "INSERT INTO event_counters (user_id, last_seq) SELECT id, 0 FROM users u "
            "WHERE NOT EXISTS (SELECT 1 FROM event_counters c WHERE c.user_id = u.id)"
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def holders(url: str, owner_ids: list[int], phone: str, now: int = 1) -> None:
    """Put `phone` into the global book of every owner."""
    rows = [(o, "", phone, "Friend", now, now) for o in owner_ids]
    columns = ["owner_id", "book", "phone", "name", "created_at", "updated_at"]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        with conn:
            conn.executemany(
                "INSERT INTO book_entries (owner_id, book, phone, name, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        conn.close()
        return
    conn = await asyncpg.connect(_plain(url))
    try:
        await conn.copy_records_to_table("book_entries", records=rows, columns=columns)
        await conn.execute("ANALYZE book_entries")
    finally:
        await conn.close()


__all__ = ["PG_ADMIN_URL", "holders", "users"]
