"""Real-time delivery: WebSocket fan-out from one registration, on real server processes.

Setup (PostgreSQL): `HOLDERS` users whose books all hold the joiners' numbers (bulk-loaded),
`CLIENTS` of them connected over WebSocket from this process. Each round registers one joiner
through the admin API; every holder gets a `contact.joined`, and we time, for each connected
holder, from the registration's HTTP response to the event's arrival on its socket. Then the
same with two server processes over Redis, half the clients on each, registering through one.
Memory per idle connection is the server's RSS growth over the connecting of `CLIENTS` idle
sockets, divided by `CLIENTS`.

Smaller sizes for a quick look: BENCH_RT_CLIENTS=100 BENCH_RT_HOLDERS=1000 scripts/bench realtime
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import secrets
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess
from websockets.asyncio.client import ClientConnection, connect

from bench import data, seed
from bench.common import Figure, database
from contactsync.server.store import migrate
from contactsync.server.store.database import Database

CLIENTS = int(os.environ.get("BENCH_RT_CLIENTS", "1000"))
HOLDERS = int(os.environ.get("BENCH_RT_HOLDERS", "10000"))
ROUNDS = int(os.environ.get("BENCH_RT_ROUNDS", "3"))
REDIS = os.environ.get("BENCH_RT_REDIS", "redis://127.0.0.1:6379/0")
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def _seed(url: str, joiners: list[str]) -> list[str]:
    """Users, the joiners in every book, and tokens for the first CLIENTS users."""
    db = Database.from_url(url)
    await migrate.upgrade(db)
    await db.dispose()
    await seed.users(url, data.users(HOLDERS, seed=77))
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        ids = [r[0] for r in await conn.fetch("SELECT id FROM users ORDER BY id")]
        online = ids[:CLIENTS]
        await conn.copy_records_to_table(
            "devices",
            records=[(u, "bench", 1) for u in online],
            columns=["user_id", "device_id", "created_at"],
        )
        devices = dict(await conn.fetch("SELECT user_id, id FROM devices"))
        tokens = {u: "cs_" + secrets.token_urlsafe(32) for u in online}
        await conn.copy_records_to_table(
            "tokens",
            records=[
                (hashlib.sha256(t.encode()).hexdigest(), u, devices[u], 1)
                for u, t in tokens.items()
            ],
            columns=["token_hash", "user_id", "device_pk", "created_at"],
        )
    finally:
        await conn.close()
    for joiner in joiners:
        await seed.holders(url, ids, joiner)
    return [tokens[u] for u in online]


class Client:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.arrivals: dict[str, float] = {}  # joiner phone -> perf_counter at receipt
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame.get("op") == "event" and frame["type"] == "contact.joined":
                self.arrivals[frame["data"]["phone"]] = time.perf_counter()


async def _connect(servers: list[ServerProcess], tokens: list[str]) -> list[Client]:
    limit = asyncio.Semaphore(50)

    async def one(i: int, token: str) -> Client:
        server = servers[i % len(servers)]
        async with limit:
            ws = await connect(
                server.url.replace("http://", "ws://") + "/v1/events/ws?after=0",
                additional_headers={"Authorization": f"Bearer {token}"},
                proxy=None,
                compression=None,
                open_timeout=60,
                max_size=2**20,
            )
            assert json.loads(await ws.recv())["op"] == "ready"
            return Client(ws)

    return list(await asyncio.gather(*(one(i, t) for i, t in enumerate(tokens))))


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _rounds(
    servers: list[ServerProcess], clients: list[Client], joiners: list[str]
) -> tuple[list[float], list[float], list[float]]:
    """(response->receipt latencies, request->receipt latencies, registration response times)"""
    after_response: list[float] = []
    after_request: list[float] = []
    responses: list[float] = []
    async with httpx.AsyncClient(base_url=servers[0].url, headers=ADMIN, timeout=60) as http:
        for joiner in joiners:
            sent = time.perf_counter()
            r = await http.post("/v1/admin/users", json={"phone": joiner})
            answered = time.perf_counter()
            assert r.status_code == 201, r.text
            responses.append(answered - sent)
            deadline = time.monotonic() + 30
            while any(joiner not in c.arrivals for c in clients):
                if time.monotonic() > deadline:
                    missing = sum(joiner not in c.arrivals for c in clients)
                    raise RuntimeError(f"{missing} clients did not get the event")
                await asyncio.sleep(0.01)
            for c in clients:
                after_response.append(max(0.0, c.arrivals[joiner] - answered))
                after_request.append(c.arrivals[joiner] - sent)
            await asyncio.sleep(1)
    return after_response, after_request, responses


async def _push_round(
    server: ServerProcess, clients: list[Client], joiner: str
) -> tuple[float, list[float], float, int]:
    """With the push webhook on: (registration response, socket latencies, seconds until the
    outbox is empty, pushes received). The receiver is a local HTTP server."""
    from tests.test_push import SECRET, Receiver

    async with (
        Receiver().running() as receiver,
        httpx.AsyncClient(base_url=server.url, headers=ADMIN, timeout=60) as http,
    ):
        r = await http.put(
            "/v1/admin/settings",
            json={"push_webhook_url": receiver.url, "push_webhook_secret": SECRET},
        )
        assert r.status_code == 200, r.text
        sent = time.perf_counter()
        r = await http.post("/v1/admin/users", json={"phone": joiner})
        answered = time.perf_counter()
        assert r.status_code == 201, r.text
        while any(joiner not in c.arrivals for c in clients):
            await asyncio.sleep(0.01)
        latencies = [max(0.0, c.arrivals[joiner] - answered) for c in clients]
        deadline = time.monotonic() + 300
        while True:
            counts = (await http.get("/v1/admin/push/outbox")).json()["counts"]
            if counts["pending"] == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        drained = time.perf_counter() - answered
        await http.put("/v1/admin/settings", json={"push_webhook_url": None})
        return answered - sent, latencies, drained, len(receiver.deliveries())


async def _scenario(processes: int) -> list[Figure]:
    joiners = data.users(ROUNDS + 1, seed=4242)
    push_joiner = joiners.pop()
    label = "1 process" if processes == 1 else f"{processes} processes over Redis"
    async with database("postgresql", "rt") as url:
        tokens = await _seed(url, [*joiners, push_joiner])
        with tempfile.TemporaryDirectory() as tmp:
            env = {"CONTACTSYNC_LOG_LEVEL": "warning"}
            if processes > 1:
                env["CONTACTSYNC_REDIS_URL"] = REDIS
            servers = [
                ServerProcess(Path(tmp) / f"s{i}", url.replace("+asyncpg", ""), env=env)
                for i in range(processes)
            ]
            try:
                for s in servers:
                    s.start()
                await asyncio.sleep(1)
                before = [rss_kb(s.proc.pid) for s in servers]  # type: ignore[union-attr]
                started = time.perf_counter()
                clients = await _connect(servers, tokens)
                connect_s = time.perf_counter() - started
                await asyncio.sleep(3)  # idle: let the servers settle
                gc.collect()
                after = [rss_kb(s.proc.pid) for s in servers]  # type: ignore[union-attr]
                per_conn_kb = (sum(after) - sum(before)) / len(clients)
                lat, from_request, responses = await _rounds(servers, clients, joiners)
                push = None
                if processes == 1:
                    push = await _push_round(servers[0], clients, push_joiner)
                for c in clients:
                    await c.ws.close()
                    c.task.cancel()
            finally:
                for s in servers:
                    s.stop()
    n = len(clients)
    extra: list[Figure] = []
    if push is not None:
        response, push_lat, drained, pushed = push
        extra = [
            Figure(f"{label}, push webhook on: registration response", response, "s"),
            Figure.at_most(
                f"{label}, push webhook on: p99 response -> event on socket",
                _p(push_lat, 0.99),
                "s",
                1.0,
            ),
            Figure(
                f"{label}, push webhook on: {pushed:,} offline holders pushed, all acknowledged",
                drained,
                "s",
            ),
        ]
    return [
        Figure(f"{label}: connect {n:,} sockets (auth + ready)", connect_s, "s"),
        Figure.at_most(f"{label}: server memory per idle socket", per_conn_kb, "KB", 50),
        Figure(
            f"{label}: registration response ({HOLDERS:,} holders, {n:,} online)",
            _p(responses, 0.5),
            "s",
        ),
        Figure.at_most(
            f"{label}: p99 registration response -> event on socket ({ROUNDS}x{n:,})",
            _p(lat, 0.99),
            "s",
            1.0,
        ),
        Figure(f"{label}: p50 registration response -> event on socket", _p(lat, 0.5), "s"),
        Figure(
            f"{label}: p99 registration request -> event on socket", _p(from_request, 0.99), "s"
        ),
        *extra,
    ]


def run() -> list[Figure]:
    figures = asyncio.run(_scenario(1))
    figures += asyncio.run(_scenario(2))
    return figures
