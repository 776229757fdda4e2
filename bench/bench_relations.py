"""Relations and profile fan-out: bulk relation sync and profile.updated to many subscribers.

Targets (PostgreSQL): `POST /v1/relations/sync` of 10,000 numbers in at most 0.5 s; a profile
update by a user with 10,000 subscribers, every filtered event written, in at most 1 s. The
requests go through the real app in process (HTTP parsing, validation, services, database);
the data they work on is seeded with direct bulk inserts.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_lifespan import LifespanManager

from bench import data
from bench.common import Figure, database
from contactsync import phone
from contactsync.server.app import create_app
from contactsync.server.config import Settings
from contactsync.server.services import sessions
from contactsync.server.store.tables import event_counters, relations, users

NUMBERS = 10_000
REGISTERED_SHARE = 0.2
SUBSCRIBERS = 10_000
ADMIN_KEY = "csadmin_bench-key-0123456789abcdefghijklmnop"


async def _seed_users(ctx: Any, numbers: list[str]) -> list[int]:
    async with ctx.tx() as tx:
        rows = [
            {"phone": n, "name": None, "region": None, "restricted": False, "created_at": tx.now}
            for n in numbers
        ]
        for i in range(0, len(rows), 5000):
            await tx.conn.execute(sa.insert(users), rows[i : i + 5000])
        ids = list(
            await tx.conn.scalars(
                sa.select(users.c.id).where(users.c.phone.in_(numbers)).order_by(users.c.id)
            )
        )
        await tx.conn.execute(
            sa.insert(event_counters), [{"user_id": i, "last_seq": 0} for i in ids]
        )
    return ids


async def _owner(ctx: Any, number: str) -> tuple[int, dict[str, str]]:
    [owner] = await _seed_users(ctx, [number])
    async with ctx.tx() as tx:
        token = await sessions.mint(tx, owner, "bench")
    return owner, {"Authorization": f"Bearer {token}"}


async def _sync(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> float:
    started = time.perf_counter()
    r = await client.post("/v1/relations/sync", json=body, headers=headers)
    elapsed = time.perf_counter() - started
    assert r.status_code == 200, r.text
    return elapsed


async def _bench_sync(ctx: Any, client: httpx.AsyncClient) -> dict[str, float]:
    numbers = data.users(NUMBERS + 1, seed=31)
    owner_number, numbers = numbers[0], numbers[1:]
    await _seed_users(ctx, numbers[: int(NUMBERS * REGISTERED_SHARE)])
    _, headers = await _owner(ctx, owner_number)
    # Warm the process (routes, pool, prepared statements) with a one-number sync by someone
    # else, so the figures are the sync's own cost and not the first request's.
    _, warmup = await _owner(ctx, data.users(1, seed=98)[0])
    await _sync(client, warmup, {"phones": [data.users(1, seed=97)[0]]})
    phone.cache_clear()
    started = time.perf_counter()
    for number in numbers:
        phone.try_normalize(number, None)
    out: dict[str, float] = {"normalize": time.perf_counter() - started}
    phone.cache_clear()
    out["create"] = await _sync(
        client, headers, {"phones": numbers, "access_levels": [1], "subscribe": True}
    )
    # A second user syncing the same numbers: every one new to them, the numbers now read
    # before (the process-wide cache), as when many users' books share numbers.
    _, other = await _owner(ctx, data.users(1, seed=99)[0])
    out["create_warm"] = await _sync(
        client, other, {"phones": numbers, "access_levels": [1], "subscribe": True}
    )
    async with ctx.read() as tx:
        count = await tx.conn.scalar(sa.select(sa.func.count()).select_from(relations))
    assert count == 2 * NUMBERS + 1, count
    updates = []
    for level in (2, 3, 4):
        updates.append(await _sync(client, headers, {"phones": numbers, "access_levels": [level]}))
    out["update"] = statistics.median(updates)
    out["merge_unchanged"] = await _sync(
        client, headers, {"phones": numbers, "access_levels": [4], "mode": "merge"}
    )
    return out


async def _bench_fanout(ctx: Any, client: httpx.AsyncClient) -> dict[str, float]:
    async with ctx.read() as tx:
        taken = set(await tx.conn.scalars(sa.select(users.c.phone)))
    numbers = [n for n in data.users(SUBSCRIBERS * 2, seed=41) if n not in taken]
    numbers = numbers[: SUBSCRIBERS + 1]
    owner, headers = await _owner(ctx, numbers[0])
    subscribers = await _seed_users(ctx, numbers[1:])
    async with ctx.tx() as tx:
        subs = [
            {
                "owner_id": s,
                "target_id": owner,
                "phone": None,
                "contact": False,
                "subscribe": True,
                "levels": 0,
                "created_at": tx.now,
                "updated_at": tx.now,
            }
            for s in subscribers
        ]
        # A third of the subscribers are the owner's contacts with level 1.
        grants = [
            {
                **row,
                "owner_id": owner,
                "target_id": row["owner_id"],
                "subscribe": False,
                "contact": True,
                "levels": 1,
            }
            for row in subs[::3]
        ]
        for i in range(0, len(subs), 5000):
            await tx.conn.execute(sa.insert(relations), subs[i : i + 5000])
        await tx.conn.execute(sa.insert(relations), grants)
    times = []
    for round_ in range(3):
        body = {
            "fields": {
                "status": {"value": f"status {round_}", "level": 0},
                "email": {"value": f"e{round_}@example.com", "level": 1},
            }
        }
        started = time.perf_counter()
        r = await client.patch("/v1/me/profile", json=body, headers=headers)
        times.append(time.perf_counter() - started)
        assert r.status_code == 200, r.text
    async with ctx.read() as tx:
        written = await tx.conn.scalar(
            sa.text("SELECT count(*) FROM events WHERE type = 'profile.updated'")
        )
    assert written == 3 * SUBSCRIBERS, written
    return {"median": statistics.median(times), "max": max(times)}


async def _one(backend: str) -> dict[str, float]:
    async with database(backend, "relations") as url:
        with tempfile.TemporaryDirectory() as tmp:
            settings = Settings(
                data_dir=Path(tmp), database_url=url, admin_key=ADMIN_KEY, otp_sender="memory"
            )
            app = create_app(settings)
            async with LifespanManager(app) as manager:
                transport = httpx.ASGITransport(app=manager.app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://bench", timeout=60
                ) as client:
                    ctx = app.state.ctx
                    sync = await _bench_sync(ctx, client)
                    fan = await _bench_fanout(ctx, client)
    return {**{f"sync_{k}": v for k, v in sync.items()}, **{f"fan_{k}": v for k, v in fan.items()}}


def run() -> list[Figure]:
    figures: list[Figure] = []
    for backend in ("postgresql", "sqlite"):
        r = asyncio.run(_one(backend))
        limit_sync = 0.5 if backend == "postgresql" else None
        limit_fan = 1.0 if backend == "postgresql" else None

        def fig(name: str, value: float, limit: float | None) -> Figure:
            if limit is None:
                return Figure(name, value, "s")
            return Figure.at_most(name, value, "s", limit)

        figures += [
            fig(
                f"relation sync, {NUMBERS:,} numbers, all new (cold number cache), {backend}",
                r["sync_create"],
                limit_sync,
            ),
            Figure(
                f"  of which reading the {NUMBERS:,} E.164 numbers (libphonenumber, cold)",
                r["sync_normalize"],
                "s",
            ),
            fig(
                f"relation sync, {NUMBERS:,} numbers, all new (numbers read before), {backend}",
                r["sync_create_warm"],
                limit_sync,
            ),
            fig(
                f"relation sync, {NUMBERS:,} numbers, new levels for all (median of 3), {backend}",
                r["sync_update"],
                limit_sync,
            ),
            fig(
                f"relation sync, {NUMBERS:,} numbers, merge with nothing to change, {backend}",
                r["sync_merge_unchanged"],
                limit_sync,
            ),
            fig(
                f"profile update to {SUBSCRIBERS:,} subscribers, events written (median of 3), "
                f"{backend}",
                r["fan_median"],
                limit_fan,
            ),
            fig(
                f"profile update to {SUBSCRIBERS:,} subscribers, slowest of 3, {backend}",
                r["fan_max"],
                limit_fan,
            ),
        ]
    return figures
