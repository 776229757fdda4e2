"""The console and /metrics on a big install: how long the pages and a scrape take.

Loads USERS users (joined over the last 24 hours) with ENTRIES_PER_USER address-book entries
each straight into the database, then times, through the real app in process: the overview
page (counts and the per-hour chart), a user search by number and by name, one user's page, and
a /metrics scrape that reads the database gauges. Both databases.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import tempfile
from pathlib import Path

import asyncpg
import httpx
from asgi_lifespan import LifespanManager
from tests.conftest import ADMIN_KEY

from bench import data, seed
from bench.common import Figure, database, median, timed
from contactsync.server.app import create_app
from contactsync.server.clock import SystemClock
from contactsync.server.config import Settings

USERS = 200_000
ENTRIES_PER_USER = 5
HOUR_MS = 3600 * 1000


async def _load(url: str, numbers: list[str], now: int) -> None:
    await seed.users(url, numbers, now=now)
    rng = random.Random(5)
    # Spread the joins over the last day so the chart has 24 populated hours.
    joined = [(now - rng.randrange(24 * HOUR_MS), i + 1) for i in range(len(numbers))]
    entries = [
        (owner, "", numbers[rng.randrange(len(numbers))], None, now, now)
        for owner in range(1, len(numbers) + 1)
        for _ in range(ENTRIES_PER_USER)
    ]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1])
        with conn:
            conn.executemany("UPDATE users SET created_at = ? WHERE id = ?", joined)
            conn.executemany(
                "INSERT OR IGNORE INTO book_entries "
                "(owner_id, book, phone, name, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                entries,
            )
        conn.close()
        return
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.executemany("UPDATE users SET created_at = $1 WHERE id = $2", joined)
        unique = list({(e[0], e[2]): e for e in entries}.values())
        await conn.copy_records_to_table(
            "book_entries",
            records=unique,
            columns=["owner_id", "book", "phone", "name", "created_at", "updated_at"],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _one(backend: str) -> list[Figure]:
    figures: list[Figure] = []
    async with database(backend, "console") as url:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(data_dir=Path(tmp), database_url=url, admin_key=ADMIN_KEY)
            app = create_app(settings)
            async with LifespanManager(app) as manager:  # migrates the empty database
                numbers = data.users(USERS, seed=31)
                await _load(url, numbers, SystemClock().now_ms())
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://bench", timeout=120
                ) as client:
                    form = await client.get("/console/login")
                    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
                    assert token
                    r = await client.post(
                        "/console/login", data={"key": ADMIN_KEY, "csrf": token.group(1)}
                    )
                    assert r.status_code == 303, r.text

                    async def get(path: str) -> None:
                        response = await client.get(path)
                        assert response.status_code == 200, response.text[:500]

                    metrics = app.state.ctx.services.metrics

                    async def scrape() -> None:
                        metrics._db_read_at = -1e18  # no cache: the cost of a real refresh
                        response = await client.get(
                            "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}
                        )
                        assert response.status_code == 200

                    cases = [
                        ("overview page", "/console/overview", 1000),
                        ("user search by number", f"/console/users?q={numbers[777]}", 250),
                        ("user search by digits", "/console/users?q=5550", 1000),
                        ("user search by name", "/console/users?q=nobody-has-this", 1000),
                        ("user page", "/console/users/777", 100),
                    ]
                    entries = USERS * ENTRIES_PER_USER
                    label = f"{backend}, {USERS // 1000}k users, {entries // 1000}k entries"
                    for name, path, limit in cases:
                        ms = median(await timed(lambda p=path: get(p), runs=5)) * 1000
                        figures.append(Figure.at_most(f"{name} ({label})", ms, "ms", limit))
                    ms = median(await timed(scrape, runs=5)) * 1000
                    figures.append(
                        Figure.at_most(f"/metrics scrape, uncached ({label})", ms, "ms", 1000)
                    )
    return figures


def run() -> list[Figure]:
    out: list[Figure] = []
    for backend in ("sqlite", "postgresql"):
        out.extend(asyncio.run(_one(backend)))
    return out
