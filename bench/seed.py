"""Bulk loading for benchmarks: a million users in seconds, not through the API.

Users come with their private-discovery tags (`tags`), as users registered through the API
have them: a server started on users without tags tags them all in the background (one
scalar multiplication each, about 80 CPU-seconds for a million), which any figure taken
meanwhile would count.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
import sqlite3
import time
from pathlib import Path

import asyncpg

from bench.common import DATA, PG_ADMIN_URL
from contactsync import oprf
from contactsync.server.services.private_discovery import KeyRing


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


def _tag_chunk(args: tuple[bytes, list[str]]) -> list[str]:
    key, numbers = args
    return [oprf.tag(key, n).hex() for n in numbers]


def _tags_for(numbers: list[str], keep: bool) -> tuple[Path, list[str], float]:
    """A key file and every number's tag under it, made with 2 processes (with `keep`: made
    once for these numbers and kept in bench/.data); the seconds spent making them."""
    digest = hashlib.sha256("\n".join(numbers).encode()).hexdigest()[:16]
    folder = DATA / f"tags-{len(numbers)}-{digest}"
    key_file, tag_file = folder / "discovery_keys", folder / "tags.txt"
    if keep and key_file.exists() and tag_file.exists():
        tags = tag_file.read_text().split()
        if len(tags) == len(numbers):
            return key_file, tags, 0.0
    tag_file.unlink(missing_ok=True)  # (tags of an older key, if any)
    key_file.unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    keys = KeyRing(key_file)
    key = keys.key(keys.add())
    chunks = [numbers[i : i + 20_000] for i in range(0, len(numbers), 20_000)]
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        tags = [t for part in pool.map(_tag_chunk, [(key, c) for c in chunks]) for t in part]
    made = time.perf_counter() - started
    tmp = tag_file.with_name("tags.tmp")
    tmp.write_text("\n".join(tags))
    tmp.replace(tag_file)
    return key_file, tags, made


async def tags(url: str, numbers: list[str], data_dir: Path, *, keep: bool = True) -> float:
    """Every user of `numbers` tagged for private discovery under a key put in the server's
    data folder `data_dir` (listed, the default audience); returns the seconds the tags took
    to make (0 when kept from an earlier run; `keep=False` makes them anew)."""
    key_file, made, seconds = _tags_for(numbers, keep)
    data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(key_file, data_dir / "discovery_keys")
    version = max(KeyRing(key_file).load())
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        with conn:
            ids = dict(conn.execute("SELECT phone, id FROM users"))
            conn.executemany(
                "INSERT INTO discovery_tags (user_id, key_version, tag, listed) "
                "VALUES (?, ?, ?, 1)",
                ((ids[n], version, t) for n, t in zip(numbers, made, strict=True)),
            )
            conn.execute("UPDATE discovery_state SET key_version = ?, version = 1", (version,))
        conn.close()
        return seconds
    conn = await asyncpg.connect(_plain(url))
    try:
        ids = dict(await conn.fetch("SELECT phone, id FROM users"))
        await conn.copy_records_to_table(
            "discovery_tags",
            records=[(ids[n], version, t, True) for n, t in zip(numbers, made, strict=True)],
            columns=["user_id", "key_version", "tag", "listed"],
        )
        await conn.execute("UPDATE discovery_state SET key_version = $1, version = 1", version)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return seconds


async def holders(url: str, owner_ids: list[int], phone: str, now: int = 1) -> None:
    """Put `phone` into the global book of every owner."""
    rows = [(o, "", phone, "Friend", now, now) for o in owner_ids]
    columns = ["owner_id", "book", "phone", "name", "created_at", "updated_at"]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1], timeout=30)
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


__all__ = ["PG_ADMIN_URL", "holders", "tags", "users"]
