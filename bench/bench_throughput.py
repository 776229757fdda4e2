"""Throughput: many concurrent clients over real loopback HTTP against `contactsync serve`.

Each client is its own user with its own token and a 1,000-contact book, and runs closed-loop
(no think time) for a few seconds per scenario:

- upload: 10 renamed contacts into its book (`POST /v1/addressbook`, incremental)
- events: `GET /v1/events?after=<last>`
- message: a message into a DM with the next client (`POST /v1/conversations/{id}/messages`)
- sync: `POST /v1/sync` for all its conversations

Per scenario: requests per second, the server's CPU-seconds per request (utime + stime of the
server process and its worker processes, from /proc: on a shared machine far steadier than wall
time), p50 and p99 latency and errors. One client alone gives the latency of a single upload;
an overload round (BENCH_OVERLOAD clients, default 200) checks that too many callers are
answered at once: accepted ones fast, the rest refused with 503 `overloaded`, never a 500.

Environment: BENCH_CLIENTS (32), BENCH_SECONDS per scenario (6), BENCH_USERS registered users
bulk-loaded first (1,000,000), BENCH_WORKERS (`1,2`: `--workers 2` needs PostgreSQL and
Redis), BENCH_BACKENDS (`postgresql`), BENCH_OVERLOAD (200; 0 skips it).
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess

from bench import data, seed
from bench.common import Figure, database
from contactsync.server.store import migrate
from contactsync.server.store.database import Database

CLIENTS = int(os.environ.get("BENCH_CLIENTS", "32"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))
USERS = int(os.environ.get("BENCH_USERS", "1000000"))
WORKERS = [int(w) for w in os.environ.get("BENCH_WORKERS", "1,2").split(",") if w]
BACKENDS = os.environ.get("BENCH_BACKENDS", "postgresql").split(",")
OVERLOAD = int(os.environ.get("BENCH_OVERLOAD", "200"))
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
BOOK = 1_000
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TARGET_REQ_PER_CPU_S = 300  # incremental uploads, 32 clients
TARGET_SINGLE_P50_MS = 5.0


def ephemeral_port() -> int:
    """A port the kernel picks (not the tests' fixed ranges, which other runs on this machine
    may be using at the same moment)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants."""
    total = 0.0
    todo = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@dataclass
class Client:
    """One simulated app: a user, a token, a book, a DM with the next client."""

    index: int
    user_id: int
    headers: dict[str, str]
    book: list[dict[str, str]]
    conversation: int = 0
    after: int = 0
    sent: int = 0
    edits: int = 0


@dataclass
class Round:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    refused: list[float] = field(default_factory=list)

    def errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 or status == 0)


async def _setup(http: httpx.AsyncClient, count: int, tag: int) -> list[Client]:
    numbers = data.users(count, seed=80_000 + tag)
    clients: list[Client] = []
    for i, number in enumerate(numbers):
        r = await http.post("/v1/admin/users", json={"phone": number}, headers=ADMIN)
        assert r.status_code in (200, 201), r.text
        uid = r.json()["user_id"]
        r = await http.post(
            f"/v1/admin/users/{uid}/tokens", json={"device_id": "bench"}, headers=ADMIN
        )
        headers = {"Authorization": f"Bearer {r.json()['token']}"}
        book = data.book(BOOK, seed=90_000 + tag * 1000 + i)
        r = await http.post("/v1/addressbook", json={"contacts": book}, headers=headers)
        assert r.status_code == 200, r.text
        clients.append(Client(i, uid, headers, book))
    for a, b in zip(clients, clients[1:] + clients[:1], strict=True):
        if a.conversation:
            continue
        r = await http.post(
            "/v1/conversations", json={"kind": "dm", "members": [b.user_id]}, headers=a.headers
        )
        assert r.status_code in (200, 201), r.text
        a.conversation = r.json()["id"]
    return clients


def _upload(c: Client) -> tuple[str, str, dict[str, Any]]:
    c.edits += 1
    start = (c.edits * 10) % (BOOK - 10)
    contacts = [
        {"phone": x["phone"], "name": f"{x['name']} v{c.edits}"} for x in c.book[start : start + 10]
    ]
    return "POST", "/v1/addressbook", {"json": {"contacts": contacts}}


def _events(c: Client) -> tuple[str, str, dict[str, Any]]:
    return "GET", "/v1/events", {"params": {"after": c.after, "limit": 100}}


def _message(c: Client) -> tuple[str, str, dict[str, Any]]:
    c.sent += 1
    body = {"body": f"hello {c.sent}", "client_msg_id": f"m-{uuid.uuid4().hex}"}
    return "POST", f"/v1/conversations/{c.conversation}/messages", {"json": body}


def _sync(c: Client) -> tuple[str, str, dict[str, Any]]:
    return "POST", "/v1/sync", {"json": {"consent": ["allowed", "unknown"]}}


SCENARIOS: dict[str, Callable[[Client], tuple[str, str, dict[str, Any]]]] = {
    "upload": _upload,
    "events": _events,
    "message": _message,
    "sync": _sync,
}


async def _loop(
    http: httpx.AsyncClient,
    client: Client,
    make: Callable[[Client], tuple[str, str, dict[str, Any]]],
    until: float,
    out: Round,
) -> None:
    while time.perf_counter() < until:
        method, path, kwargs = make(client)
        started = time.perf_counter()
        try:
            r = await http.request(method, path, headers=client.headers, **kwargs)
            status = r.status_code
        except httpx.HTTPError:
            status = 0
        elapsed = time.perf_counter() - started
        out.statuses[status] += 1
        if status == 503:
            out.refused.append(elapsed)
            await asyncio.sleep(0.05)  # what Retry-After asks, shortened: keep the pressure on
            continue
        out.latencies.append(elapsed)
        if status == 200 and make is _events:
            events = r.json()["events"]
            if events:
                client.after = events[-1]["seq"]


async def _round(
    http: httpx.AsyncClient,
    clients: list[Client],
    make: Callable[[Client], tuple[str, str, dict[str, Any]]],
    pid: int,
    seconds: float,
) -> tuple[Round, float, float]:
    out = Round()
    cpu0, t0 = tree_cpu(pid), time.perf_counter()
    until = t0 + seconds
    await asyncio.gather(*(_loop(http, c, make, until, out) for c in clients))
    return out, time.perf_counter() - t0, tree_cpu(pid) - cpu0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _figures(label: str, name: str, r: Round, wall: float, cpu: float) -> list[Figure]:
    done = sum(r.statuses.values())
    per_cpu = done / cpu if cpu > 0 else float("inf")
    upload = name == "upload" and "32 clients" in label
    figures = [
        Figure(f"{label} {name}: requests/s", done / wall, "req/s"),
        Figure(f"{label} {name}: server CPU per request", cpu / max(done, 1) * 1000, "ms"),
        Figure.at_least(
            f"{label} {name}: requests per server CPU-second",
            per_cpu,
            "req/CPU-s",
            TARGET_REQ_PER_CPU_S,
        )
        if upload
        else Figure(f"{label} {name}: requests per server CPU-second", per_cpu, "req/CPU-s"),
        Figure(f"{label} {name}: p50", _pct(r.latencies, 50) * 1000, "ms"),
        Figure(f"{label} {name}: p99", _pct(r.latencies, 99) * 1000, "ms"),
        Figure.at_most(f"{label} {name}: errors (5xx other than 503, resets)", r.errors(), "", 0),
    ]
    return figures


async def _measure_server(url: str, pid: int, label: str, tag: int) -> list[Figure]:
    limits = httpx.Limits(
        max_connections=max(CLIENTS, OVERLOAD) + 8, max_keepalive_connections=None
    )
    figures: list[Figure] = []
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        clients = await _setup(http, CLIENTS, tag)
        # One client alone: the latency of one incremental upload.
        single, wall, cpu = await _round(http, clients[:1], _upload, pid, SECONDS / 2)
        figures.append(
            Figure.at_most(
                f"{label} 1 client upload: p50",
                _pct(single.latencies, 50) * 1000,
                "ms",
                TARGET_SINGLE_P50_MS,
            )
        )
        figures.append(
            Figure(
                f"{label} 1 client upload: requests/s",
                sum(single.statuses.values()) / wall,
                "req/s",
            )
        )
        figures.append(
            Figure(
                f"{label} 1 client upload: server CPU per request",
                cpu / max(1, sum(single.statuses.values())) * 1000,
                "ms",
            )
        )
        for name, make in SCENARIOS.items():
            r, wall, cpu = await _round(http, clients, make, pid, SECONDS)
            figures += _figures(f"{label}, {CLIENTS} clients", name, r, wall, cpu)
        if OVERLOAD:
            crowd = clients + await _setup(http, OVERLOAD - CLIENTS, tag + 1)
            r, wall, cpu = await _round(http, crowd, _upload, pid, SECONDS)
            other = f"{label}, {OVERLOAD} clients upload"
            figures += [
                Figure(f"{other}: accepted requests/s", len(r.latencies) / wall, "req/s"),
                Figure.at_most(f"{other}: accepted p99", _pct(r.latencies, 99), "s", 1.0),
                Figure(f"{other}: refused (503)", len(r.refused), ""),
                Figure.at_most(
                    f"{other}: refused p99", _pct(r.refused, 99) if r.refused else 0, "s", 1.5
                ),
                Figure.at_most(f"{other}: errors (5xx other than 503, resets)", r.errors(), "", 0),
            ]
    return figures


async def _prepare(url: str) -> float:
    db = Database.from_url(url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    started = time.perf_counter()
    await seed.users(url, data.users(USERS, seed=1))
    return time.perf_counter() - started


async def _measure(backend: str) -> list[Figure]:
    figures: list[Figure] = []
    async with database(backend, "tp") as url:
        seeded = await _prepare(url)
        figures.append(Figure(f"{backend}: bulk-load {USERS:,} users", seeded, "s"))
        for tag, workers in enumerate(WORKERS):
            if workers > 1 and backend == "sqlite":
                continue  # refused: one SQLite file cannot be shared by several processes
            with tempfile.TemporaryDirectory() as tmp:
                env = {"CONTACTSYNC_LOG_LEVEL": "warning"}
                args: list[str] = []
                if workers > 1:
                    env["CONTACTSYNC_REDIS_URL"] = REDIS
                    args = ["--workers", str(workers)]
                server = ServerProcess(
                    Path(tmp) / "server",
                    url.replace("+asyncpg", "") if backend != "sqlite" else None,
                    env=env,
                    args=args,
                    port=ephemeral_port(),
                )
                if backend == "sqlite":
                    (Path(tmp) / "server").mkdir()
                    os.link(url.split("///", 1)[1], Path(tmp) / "server" / "contactsync.db")
                server.start(timeout=120)
                try:
                    assert server.proc is not None
                    label = f"{backend} {workers}w"
                    figures += await _measure_server(server.url, server.proc.pid, label, tag * 10)
                finally:
                    server.stop()
    return figures


def run() -> list[Figure]:
    figures: list[Figure] = []
    for backend in BACKENDS:
        figures += asyncio.run(_measure(backend))
    return figures


def _main() -> None:  # pragma: no cover - `python -m bench.bench_throughput` for a quick look
    for f in run():
        print(f"{f.name}: {f.value:.4g} {f.unit} {f.target} {'' if f.ok is None else f.ok}")


if __name__ == "__main__":
    _main()
