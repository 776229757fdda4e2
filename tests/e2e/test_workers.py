"""`contactsync serve --workers N`: N processes on one port sharing PostgreSQL and Redis, and
refused (with the reason) where they could not work together."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess
from tests.e2e.test_realtime import SHARED_REDIS, hold, register, user_token

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contactsync.cli", "serve", "--port", "0", *args],
        env={
            "PATH": "/usr/bin:/bin",
            "CONTACTSYNC_DATA_DIR": str(tmp_path / "data"),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_two_workers_on_sqlite_are_refused_with_the_reason(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--workers", "2")
    assert done.returncode == 2
    assert "--workers 2 refused" in done.stderr and "PostgreSQL" in done.stderr
    assert "SQLite" in done.stderr
    assert not (tmp_path / "data" / "contactsync.db").exists()  # nothing was started


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_two_workers_without_redis_are_refused_with_the_reason(tmp_path: Path, db_url: str) -> None:
    done = _serve(tmp_path, "--workers", "2", "--database-url", db_url.replace("+asyncpg", ""))
    assert done.returncode == 2
    assert "--workers 2 refused" in done.stderr and "Redis" in done.stderr


async def _presence(db_url: str) -> dict[str, set[int]]:
    """{process id: user ids it holds a socket for}, as the workers publish it in Redis."""
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            instance = await conn.scalar(
                sa.text("SELECT value FROM app_settings WHERE key = 'secret.instance_id'")
            )
    finally:
        await engine.dispose()
    ns = f"contactsync:{str(instance).strip(chr(34))}"
    client = aioredis.Redis.from_url(SHARED_REDIS)
    try:
        procs = [p.decode() for p in await client.zrange(f"{ns}:procs", 0, -1)]
        return {p: {int(u) for u in await client.smembers(f"{ns}:presence:{p}")} for p in procs}
    finally:
        await client.aclose()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_two_workers_deliver_an_event_caused_through_the_other_worker(
    tmp_path: Path, db_url: str
) -> None:
    server = ServerProcess(
        tmp_path / "s",
        db_url.replace("+asyncpg", ""),
        env={"CONTACTSYNC_REDIS_URL": SHARED_REDIS},
        args=["--workers", "2"],
    ).start()
    sockets = []
    try:
        joiner = "+14155550199"
        people = [user_token(server.url, f"+1415555012{i}") for i in range(8)]
        for _, token in people:
            hold(server.url, token, [joiner])
        # Each socket is a new connection, taken by whichever worker accepts it first: open
        # them (round the users) until both workers hold some; each lists its users in Redis.
        held: list[tuple[int, ClientConnection]] = []
        presence: dict[str, set[int]] = {}
        for uid, token in people * 4:
            ws = await connect(
                server.url.replace("http://", "ws://") + "/v1/events/ws?after=0",
                additional_headers={"Authorization": f"Bearer {token}"},
                proxy=None,
                compression=None,
                open_timeout=10,
            )
            sockets.append(ws)
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["op"] == "ready"
            held.append((uid, ws))
            if len(held) < len(people):
                continue
            for _ in range(20):
                presence = await _presence(db_url)
                if len(presence) == 2 and all(presence.values()):
                    break
                await asyncio.sleep(0.05)
            if len(presence) == 2 and all(presence.values()):
                break
        assert len(presence) == 2 and all(presence.values()), presence
        # One request, so one worker, writes contact.joined for all eight: the sockets held
        # by the other worker can only hear of it over Redis.
        await asyncio.to_thread(register, server.url, joiner)
        for uid, ws in held:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame["op"] == "event":
                    break
            assert frame["type"] == "contact.joined", (uid, frame)
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
    finally:
        for ws in sockets:
            await ws.close()
        server.stop()
