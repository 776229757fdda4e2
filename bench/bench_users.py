"""The real server's registration rate: POST /v1/admin/users over loopback, both databases."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess

from bench import data
from bench.common import Figure, database

USERS = 2_000
CONCURRENCY = 16


async def _register(url: str, numbers: list[str]) -> float:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    queue = list(numbers)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def worker() -> None:
            while queue:
                number = queue.pop()
                r = await client.post("/v1/admin/users", json={"phone": number})
                assert r.status_code == 201, r.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(numbers) / (time.perf_counter() - started)


async def _one(backend: str) -> float:
    async with database(backend, "users") as url:
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(
                Path(tmp), None if backend == "sqlite" else url.replace("+asyncpg", "")
            ).start()
            try:
                return await _register(server.url, data.users(USERS, seed=21))
            finally:
                server.stop()


def run() -> list[Figure]:
    return [
        Figure(
            f"POST /v1/admin/users, {backend} ({CONCURRENCY} concurrent)",
            asyncio.run(_one(backend)),
            "users/s",
        )
        for backend in ("sqlite", "postgresql")
    ]
