"""Address-book upload and joins against a large user base, on PostgreSQL and SQLite.

Server time is measured in process through the whole HTTP stack (routing, JSON, validation,
normalisation, SQL), without the network. The users come with their private-discovery tags
(bench/seed.py), so the app is not tagging them in the background meanwhile. Sizes can be
reduced for a quick look:
BENCH_USERS=100000 scripts/bench addressbook
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_lifespan import LifespanManager

from bench import data, seed
from bench.common import Figure, database, median
from contactsync import phone
from contactsync.server.app import create_app
from contactsync.server.config import Settings
from contactsync.server.store import migrate
from contactsync.server.store.database import Database

USERS = int(os.environ.get("BENCH_USERS", "1000000"))
BOOK = 10_000
RUNS = 5
HOLDERS = 10_000
ADMIN = "csadmin_bench-key-0123456789abcdefghijklmnop"
TARGETS = {  # seconds: (postgresql, sqlite)
    "first": (0.25, 0.15),
    "incremental": (0.010, 0.010),
    "recheck": (0.040, 0.040),
    "join": (1.0, 1.0),
}


async def _upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    contacts: list[dict[str, Any]],
    size: int = 5000,
    **options: Any,
) -> float:
    # The bodies are encoded before the clock starts: what is timed is the server's work.
    bodies = [
        json.dumps({"contacts": contacts[i : i + size], **options}).encode()
        for i in range(0, max(len(contacts), 1), size)
    ]
    sending = {**headers, "Content-Type": "application/json"}
    started = time.perf_counter()
    for body in bodies:
        r = await client.post("/v1/addressbook", headers=sending, content=body)
        assert r.status_code == 200, r.text
    return time.perf_counter() - started


async def _user(client: httpx.AsyncClient, number: str, device: str = "d") -> dict[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    r = await client.post("/v1/admin/users", json={"phone": number}, headers=admin)
    uid = r.json()["user_id"]
    r = await client.post(
        f"/v1/admin/users/{uid}/tokens", json={"device_id": device}, headers=admin
    )
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def _measure(backend: str, registered: list[str]) -> list[Figure]:
    pg_target, lite_target = 0, 1
    pick = pg_target if backend == "postgresql" else lite_target
    async with database(backend, "ab") as url:
        db = Database.from_url(url)
        await migrate.upgrade(db)
        await db.dispose()
        t = time.perf_counter()
        await seed.users(url, registered)
        seeded = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as tmp:
            # with their discovery tags: else the app would spend the run tagging them all
            await seed.tags(url, registered, Path(tmp))
            settings = Settings(data_dir=Path(tmp), database_url=url, admin_key=ADMIN)
            app = create_app(settings)
            async with LifespanManager(app) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://b", timeout=120
                ) as client:
                    figures = await _runs(client, app.state.ctx, backend, registered, pick)
    figures.insert(0, Figure(f"{backend}: bulk-load {len(registered):,} users", seeded, "s"))
    return figures


async def _runs(
    client: httpx.AsyncClient, ctx: Any, backend: str, registered: list[str], pick: int
) -> list[Figure]:
    first, national, incremental, recheck = [], [], [], []
    for run in range(RUNS):
        owner = await _user(client, data.users(1, seed=9000 + run)[0])
        book = data.book(BOOK, registered=registered, ratio=0.05, seed=100 + run)
        phone.cache_clear()  # a first upload meets numbers the server has not seen
        first.append(await _upload(client, owner, book))
        edits = [{"phone": c["phone"], "name": c["name"] + " (edited)"} for c in book[:10]]
        incremental.append(await _upload(client, owner, edits))
        recheck.append(await _upload(client, owner, book))
        other = await _user(client, data.users(1, seed=9500 + run)[0])
        written = data.book(
            BOOK, registered=registered, ratio=0.05, seed=300 + run, style="written"
        )
        phone.cache_clear()
        national.append(await _upload(client, other, written, region="US"))
    join = await _join(client, ctx)
    name = backend
    return [
        Figure.at_most(
            f"{name}: first upload 10k E.164 (2 requests)",
            median(first),
            "s",
            TARGETS["first"][pick],
        ),
        Figure(f"{name}: first upload 10k written forms, region US", median(national), "s"),
        Figure.at_most(
            f"{name}: incremental upload of 10 changes",
            median(incremental),
            "s",
            TARGETS["incremental"][pick],
        ),
        Figure.at_most(
            f"{name}: re-check of 10k numbers already in the book",
            median(recheck),
            "s",
            TARGETS["recheck"][pick],
        ),
        Figure.at_most(
            f"{name}: registration held in {HOLDERS:,} books (events written)",
            join,
            "s",
            TARGETS["join"][pick],
        ),
    ]


async def _join(client: httpx.AsyncClient, ctx: Any) -> float:
    url = str(ctx.db.engine.url.render_as_string(hide_password=False))
    joiner = "+14155550177"
    async with ctx.read() as tx:
        ids = [
            r[0]
            for r in await tx.conn.execute(
                sa.text("SELECT id FROM users ORDER BY id LIMIT :n"), {"n": HOLDERS}
            )
        ]
    await seed.holders(url, ids, joiner)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    started = time.perf_counter()
    r = await client.post("/v1/admin/users", json={"phone": joiner}, headers=admin)
    elapsed = time.perf_counter() - started
    assert r.status_code == 201
    async with ctx.read() as tx:
        written = await tx.conn.scalar(
            sa.text("SELECT count(*) FROM events WHERE type = 'contact.joined'")
        )
    assert written == HOLDERS, written
    return elapsed


def run() -> list[Figure]:
    registered = data.users(USERS, seed=1)
    figures: list[Figure] = []
    for backend in ("postgresql", "sqlite"):
        figures += asyncio.run(_measure(backend, registered))
    return figures
