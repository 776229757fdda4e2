"""Conversations on the real server over loopback.

1. `/v1/sync` round trip for a user with 1,000 conversations (DMs, 20 old messages each), 100 of
   which have 10 new messages since the client's cursors: target <= 100 ms on PostgreSQL.
2. Sending to a group of 100 members: time to the sender's response, target p50 <= 10 ms.
   The message.created events for all 100 members are appended in the send's own transaction,
   so they are durable in the log when the response arrives; the benchmark checks that they
   are all there.
3. The same group with all 100 members connected to /v1/events/ws: time from a send's start
   until every member's socket has the event, target <= 200 ms.

The data is seeded in bulk with direct inserts after the server has migrated the database.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess

from bench.common import Figure, database
from contactsync.server.store.database import Database
from contactsync.server.store.tables import (
    conversation_members,
    conversations,
    event_counters,
    events,
    messages,
    users,
)

CONVERSATIONS = 1_000
ACTIVE = 100
OLD_MESSAGES = 20
NEW_MESSAGES = 10
GROUP = 100
SENDS = 200
SYNC_RUNS = 30
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _phone(i: int) -> str:
    return f"+1555{i:07d}"


async def _insert(conn: Any, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 5000):
        await conn.execute(sa.insert(table), rows[start : start + 5000])


async def _seed(url: str) -> dict[str, Any]:
    """Users 1..N, DMs of user 1 with users 2..1001, a group of 100; returns the cursors."""
    db = Database.from_url(url)
    now = int(time.time() * 1000)
    try:
        async with db.write() as conn:
            user_rows = [
                {"id": i, "phone": _phone(i), "restricted": False, "created_at": now}
                for i in range(1, CONVERSATIONS + 2)
            ]
            await _insert(conn, users, user_rows)
            await _insert(
                conn, event_counters, [{"user_id": r["id"], "last_seq": 0} for r in user_rows]
            )
            conv_rows, member_rows, message_rows = [], [], []
            cursors: dict[str, int] = {}
            for n in range(CONVERSATIONS):
                cid, other = n + 1, n + 2
                total = OLD_MESSAGES + (NEW_MESSAGES if n % (CONVERSATIONS // ACTIVE) == 0 else 0)
                conv_rows.append(
                    {
                        "id": cid,
                        "kind": "dm",
                        "dm_key": f"1:{other}",
                        "name": None,
                        "created_by": 1,
                        "last_seq": total,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                for uid in (1, other):
                    member_rows.append(
                        {
                            "conversation_id": cid,
                            "user_id": uid,
                            "role": "member",
                            "consent": "allowed",
                            "since_seq": 0,
                            "joined_at": now,
                            "consent_at": now,
                        }
                    )
                for seq in range(1, total + 1):
                    message_rows.append(
                        {
                            "conversation_id": cid,
                            "seq": seq,
                            "kind": "text",
                            "sender_id": 1 if seq % 2 else other,
                            "client_msg_id": f"m{seq}",
                            "body": f"message {seq} in a conversation of a benchmark",
                            "sent_at": now,
                        }
                    )
                cursors[str(cid)] = OLD_MESSAGES
            group_id = CONVERSATIONS + 1
            conv_rows.append(
                {
                    "id": group_id,
                    "kind": "group",
                    "dm_key": None,
                    "name": "hundred",
                    "created_by": 1,
                    "last_seq": 0,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            for uid in range(1, GROUP + 1):
                member_rows.append(
                    {
                        "conversation_id": group_id,
                        "user_id": uid,
                        "role": "admin" if uid == 1 else "member",
                        # Not "allowed" for user 1, so the group does not change the sync
                        # figures; every member still gets live events (only denied do not).
                        "consent": "unknown" if uid == 1 else "allowed",
                        "since_seq": 0,
                        "joined_at": now,
                        "consent_at": now,
                    }
                )
            await _insert(conn, conversations, conv_rows)
            await _insert(conn, conversation_members, member_rows)
            await _insert(conn, messages, message_rows)
            if db.dialect == "postgresql":
                for table in ("users", "conversations"):
                    await conn.execute(
                        sa.text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT max(id) FROM {table}))"
                        )
                    )
        if db.dialect == "postgresql":
            async with db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(sa.text("ANALYZE"))
        return {"cursors": cursors, "group_id": group_id}
    finally:
        await db.dispose()


async def _count_events(url: str) -> int:
    db = Database.from_url(url)
    try:
        async with db.read() as conn:
            n = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(events)
                .where(events.c.type == "message.created")
            )
        return int(n or 0)
    finally:
        await db.dispose()


LIVE_SENDS = 20


async def _live(
    client: httpx.AsyncClient, url: str, group_id: int, sender: dict[str, str], backend: str
) -> list[Figure]:
    """Every member online over WebSocket: time from a send's start until all 100 members'
    sockets have its message.created."""
    from websockets.asyncio.client import connect

    sockets = []
    for uid in range(1, GROUP + 1):
        device = "phone" if uid in (1, 2) else "ws"
        if uid == 2:
            headers = sender
        else:
            r = await client.post(
                f"/v1/admin/users/{uid}/tokens", json={"device_id": device}, headers=ADMIN
            )
            headers = {"Authorization": f"Bearer {r.json()['token']}"}
        last = (await client.get("/v1/events?after=0&limit=1000", headers=headers)).json()
        after = max([e["seq"] for e in last["events"]] or [0])
        ws = await connect(
            url.replace("http://", "ws://") + f"/v1/events/ws?after={after}",
            additional_headers=headers,
            open_timeout=10,
            max_size=None,
        )
        assert json.loads(await ws.recv())["op"] == "ready"
        sockets.append(ws)

    async def seen(ws: Any, seq: int) -> None:
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("op") == "event" and frame["data"].get("seq") == seq:
                return

    times = []
    try:
        for i in range(LIVE_SENDS):
            t = time.perf_counter()
            r = await client.post(
                f"/v1/conversations/{group_id}/messages",
                json={"body": f"live {i}", "client_msg_id": f"live{i}"},
                headers=sender,
            )
            seq = r.json()["seq"]
            await asyncio.wait_for(asyncio.gather(*(seen(ws, seq) for ws in sockets)), 10)
            times.append((time.perf_counter() - t) * 1000)
    finally:
        for ws in sockets:
            await ws.close()
    label = f"all {GROUP} members' live event (WebSocket) after a send, {backend}"
    return [
        Figure(label + " (p50)", statistics.median(times), "ms"),
        Figure.at_most(label + " (max)", max(times), "ms", 200),
    ]


async def _run(backend: str) -> list[Figure]:
    figures: list[Figure] = []
    async with database(backend, "conversations") as url:
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(
                Path(tmp), None if backend == "sqlite" else url.replace("+asyncpg", "")
            ).start()
            sqlite_file = Path(tmp) / "contactsync.db"
            db_url = f"sqlite+aiosqlite:///{sqlite_file}" if backend == "sqlite" else url
            try:
                seeded = await _seed(db_url)
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                    tokens = []
                    for uid, device in ((1, "phone"), (2, "phone")):
                        r = await client.post(
                            f"/v1/admin/users/{uid}/tokens",
                            json={"device_id": device},
                            headers=ADMIN,
                        )
                        tokens.append({"Authorization": f"Bearer {r.json()['token']}"})
                    user1, user2 = tokens

                    body = {"cursors": seeded["cursors"], "message_limit": 100, "limit": 500}
                    times = []
                    for i in range(SYNC_RUNS + 3):
                        t = time.perf_counter()
                        r = await client.post("/v1/sync", json=body, headers=user1)
                        elapsed = time.perf_counter() - t
                        result = r.json()
                        assert r.status_code == 200, r.text
                        assert (result["eligible"], result["synced"]) == (CONVERSATIONS, ACTIVE)
                        assert sum(len(c["messages"]) for c in result["conversations"]) == (
                            ACTIVE * NEW_MESSAGES
                        )
                        if i >= 3:  # warm-up: connections, caches
                            times.append(elapsed * 1000)
                    label = f"/v1/sync, 1,000 conversations, 100 with 10 new, {backend}"
                    p50 = statistics.median(times)
                    figures.append(
                        Figure.at_most(label + " (p50)", p50, "ms", 100)
                        if backend == "postgresql"
                        else Figure(label + " (p50)", p50, "ms")
                    )
                    figures.append(Figure(label.replace("(p50)", "") + " (max)", max(times), "ms"))

                    group_id = seeded["group_id"]
                    sends = []
                    for i in range(SENDS + 10):
                        t = time.perf_counter()
                        r = await client.post(
                            f"/v1/conversations/{group_id}/messages",
                            json={"body": f"hello group {i}", "client_msg_id": f"g{i}"},
                            headers=user2,
                        )
                        elapsed = time.perf_counter() - t
                        assert r.status_code == 201, r.text
                        if i >= 10:
                            sends.append(elapsed * 1000)
                    sends.sort()
                    label = f"send to a group of {GROUP}, {backend}: time to sender's response"
                    p50 = statistics.median(sends)
                    figures.append(
                        Figure.at_most(label + " (p50)", p50, "ms", 10)
                        if backend == "postgresql"
                        else Figure(label + " (p50)", p50, "ms")
                    )
                    figures.append(Figure(label + " (p95)", sends[int(len(sends) * 0.95)], "ms"))
                    figures += await _live(client, server.url, group_id, user2, backend)
                    # For scale: an authenticated request that does nothing, same connection.
                    floor = []
                    for _ in range(100):
                        t = time.perf_counter()
                        await client.get("/v1/me", headers=user2)
                        floor.append((time.perf_counter() - t) * 1000)
                    figures.append(
                        Figure(
                            f"for scale: GET /v1/me on the same connection, {backend} (p50)",
                            statistics.median(floor),
                            "ms",
                        )
                    )
                # Every send appended one event per member inside its own transaction.
                in_log = await _count_events(db_url)
                expected = (SENDS + 10 + LIVE_SENDS) * GROUP
                figures.append(
                    Figure(
                        f"message.created events in the log when the sends returned ({backend})",
                        in_log,
                        "events",
                        f"= {expected}",
                        in_log == expected,
                    )
                )
            finally:
                server.stop()
    return figures


def run() -> list[Figure]:
    out: list[Figure] = []
    for backend in ("postgresql", "sqlite"):
        out += asyncio.run(_run(backend))
    return out
