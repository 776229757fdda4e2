"""What every benchmark shares: the figure type, timing helpers, servers and databases."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent
DATA = ROOT / ".data"
PG_ADMIN_URL = os.environ.get(
    "CONTACTSYNC_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None  # None: no target to meet

    @classmethod
    def at_most(cls, name: str, value: float, unit: str, limit: float) -> Figure:
        return cls(name, value, unit, f"<= {limit:g}", value <= limit)

    @classmethod
    def at_least(cls, name: str, value: float, unit: str, floor: float) -> Figure:
        return cls(name, value, unit, f">= {floor:g}", value >= floor)


def median(values: list[float]) -> float:
    return statistics.median(values)


async def timed(fn: Callable[[], Awaitable[object]], runs: int = 5) -> list[float]:
    """Seconds per run of `fn`, `runs` times."""
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t)
    return out


async def _pg(statement: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def database(backend: str, name: str) -> AsyncIterator[str]:
    """A fresh, empty database URL (async driver) for one benchmark; removed afterwards."""
    if backend == "sqlite":
        DATA.mkdir(parents=True, exist_ok=True)
        path = DATA / f"{name}-{uuid.uuid4().hex[:6]}.db"
        try:
            yield f"sqlite+aiosqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        return
    db = f"csbench_{name}_{uuid.uuid4().hex[:6]}"
    await _pg(f'CREATE DATABASE "{db}"')
    try:
        yield (
            PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            + "/"
            + db
        )
    finally:
        await _pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def run_async(coro: Awaitable[list[Figure]]) -> list[Figure]:
    return asyncio.run(coro)  # type: ignore[arg-type]
