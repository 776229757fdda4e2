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

The clients speak raw HTTP/1.1 with keep-alive (bench/load.py), so the load generator costs a
small fraction of the server per request (its own CPU per request is printed too) and the
server is what is measured. The users come with their private-discovery tags (bench/seed.py),
so the server does not spend the run tagging a million users in the background. The server
runs with its default concurrency limit and database timeouts (not the end-to-end tests'
generous ones).

Environment: BENCH_CLIENTS (32), BENCH_SECONDS per scenario (6), BENCH_USERS registered users
bulk-loaded first (1,000,000), BENCH_WORKERS (`1,2`: `--workers 2` needs PostgreSQL and
Redis), BENCH_BACKENDS (`postgresql`), BENCH_OVERLOAD (200; 0 skips it).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
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
from tests.e2e.server import SLOW_MACHINE, ServerProcess

from bench import data, load, seed
from bench.common import Figure, database
from contactsync.server.config import Settings
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
    conn: load.Connection
    conversation: int = 0
    after: int = 0
    sent: int = 0
    edits: int = 0


@dataclass
class Round:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    refused: list[float] = field(default_factory=list)
    client_cpu: float = 0.0  # the load generator's own CPU seconds

    def errors(self) -> int:
        return sum(
            n
            for status, n in self.statuses.items()
            if status == 0 or (status >= 500 and status != 503)
        )


async def _setup(http: httpx.AsyncClient, count: int, tag: int) -> list[Client]:
    numbers = data.users(count, seed=80_000 + tag)
    host, port = str(http.base_url.host), int(http.base_url.port or 80)
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
        clients.append(Client(i, uid, headers, book, load.Connection(host, port, headers)))
    for a, b in zip(clients, clients[1:] + clients[:1], strict=True):
        if a.conversation:
            continue
        r = await http.post(
            "/v1/conversations", json={"kind": "dm", "members": [b.user_id]}, headers=a.headers
        )
        assert r.status_code in (200, 201), r.text
        a.conversation = r.json()["id"]
    return clients


Request = tuple[str, str, Any]  # method, target, JSON body (None: no body)


def _upload(c: Client) -> Request:
    c.edits += 1
    start = (c.edits * 10) % (BOOK - 10)
    contacts = [
        {"phone": x["phone"], "name": f"{x['name']} v{c.edits}"} for x in c.book[start : start + 10]
    ]
    return "POST", "/v1/addressbook", {"contacts": contacts}


def _events(c: Client) -> Request:
    return "GET", f"/v1/events?after={c.after}&limit=100", None


def _message(c: Client) -> Request:
    c.sent += 1
    body = {"body": f"hello {c.sent}", "client_msg_id": f"m-{uuid.uuid4().hex}"}
    return "POST", f"/v1/conversations/{c.conversation}/messages", body


def _sync(c: Client) -> Request:
    return "POST", "/v1/sync", {"consent": ["allowed", "unknown"]}


SCENARIOS: dict[str, Callable[[Client], Request]] = {
    "upload": _upload,
    "events": _events,
    "message": _message,
    "sync": _sync,
}


async def _loop(
    client: Client, make: Callable[[Client], Request], until: float, out: Round
) -> None:
    while time.perf_counter() < until:
        method, target, body = make(client)
        started = time.perf_counter()
        try:
            status, _, content = await client.conn.request(method, target, body)
        except load.Closed:
            status = 0
        elapsed = time.perf_counter() - started
        out.statuses[status] += 1
        if status == 503:
            out.refused.append(elapsed)
            await asyncio.sleep(0.05)  # what Retry-After asks, shortened: keep the pressure on
            continue
        out.latencies.append(elapsed)
        if status == 200 and make is _events:
            events = json.loads(content)["events"]
            if events:
                client.after = events[-1]["seq"]


async def _round(
    clients: list[Client], make: Callable[[Client], Request], pid: int, seconds: float
) -> tuple[Round, float, float]:
    out = Round()
    cpu0, t0, own0 = tree_cpu(pid), time.perf_counter(), time.process_time()
    until = t0 + seconds
    await asyncio.gather(*(_loop(c, make, until, out) for c in clients))
    out.client_cpu = time.process_time() - own0
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
    if upload:
        figures.append(
            Figure(
                f"{label} {name}: load generator CPU per request",
                r.client_cpu / max(done, 1) * 1000,
                "ms",
            )
        )
    return figures


async def _measure_server(url: str, pid: int, label: str, tag: int) -> list[Figure]:
    figures: list[Figure] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        clients = await _setup(http, CLIENTS, tag)
        crowd = clients + await _setup(http, OVERLOAD - CLIENTS, tag + 1) if OVERLOAD else []
    # One client alone: the latency of one incremental upload.
    single, wall, cpu = await _round(clients[:1], _upload, pid, SECONDS / 2)
    done = sum(single.statuses.values())
    figures += [
        Figure.at_most(
            f"{label} 1 client upload: p50",
            _pct(single.latencies, 50) * 1000,
            "ms",
            TARGET_SINGLE_P50_MS,
        ),
        Figure(f"{label} 1 client upload: requests/s", done / wall, "req/s"),
        Figure(f"{label} 1 client upload: server CPU per request", cpu / max(1, done) * 1000, "ms"),
    ]
    for name, make in SCENARIOS.items():
        r, wall, cpu = await _round(clients, make, pid, SECONDS)
        figures += _figures(f"{label}, {CLIENTS} clients", name, r, wall, cpu)
    if crowd:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            before = await _upload_buckets(http)
            r, wall, cpu = await _round(crowd, _upload, pid, SECONDS)
            after = await _upload_buckets(http)
        other = f"{label}, {OVERLOAD} clients upload"
        done = sum(r.statuses.values())
        figures += [
            Figure(f"{other}: accepted requests/s", len(r.latencies) / wall, "req/s"),
            Figure.at_most(f"{other}: accepted p99", _pct(r.latencies, 99), "s", 1.0),
            # (one worker's /metrics when there are several; a bucket bound, so "at most")
            Figure(
                f"{other}: accepted p99 on the server's clock (histogram bucket)",
                _bucket_p99(before, after),
                "s",
            ),
            Figure(f"{other}: refused (503)", len(r.refused), ""),
            Figure.at_most(
                f"{other}: refused p99", _pct(r.refused, 99) if r.refused else 0, "s", 1.5
            ),
            Figure.at_most(f"{other}: errors (5xx other than 503, resets)", r.errors(), "", 0),
            Figure(f"{other}: server CPU per answer", cpu / max(done, 1) * 1000, "ms"),
            Figure(
                f"{other}: load generator CPU per answer", r.client_cpu / max(done, 1) * 1000, "ms"
            ),
        ]
    for c in crowd or clients:
        await c.conn.close()
    return figures


async def _upload_buckets(http: httpx.AsyncClient) -> dict[float, float]:
    """The server's own latency histogram of uploads: {bucket bound: count so far}."""
    r = await http.get("/metrics", headers=ADMIN)
    found: dict[float, float] = {}
    for line in r.text.splitlines():
        if line.startswith("contactsync_http_request_duration_seconds_bucket{") and (
            'route="/v1/addressbook"' in line and 'method="POST"' in line
        ):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            found[float(bound)] = float(line.rsplit(" ", 1)[1])
    return found


def _bucket_p99(before: dict[float, float], after: dict[float, float]) -> float:
    """The bucket bound under which 99% of the requests between the two scrapes fell."""
    counts = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = counts[-1][1] if counts else 0.0
    for bound, n in counts:
        if total and n >= 0.99 * total:
            return bound
    return float("nan")


# The server as deployed: its own concurrency limit and database timeouts, not the generous
# ones ServerProcess gives end-to-end tests on a loaded machine.
def _default(name: str) -> str | None:
    value = Settings.model_fields[name.removeprefix("CONTACTSYNC_").lower()].default
    return None if value is None else str(value)


SERVER_DEFAULTS = {name: _default(name) for name in SLOW_MACHINE}


async def _prepare(url: str, data_dir: Path) -> tuple[float, float]:
    """Users and their discovery tags; (seconds for the users, seconds for the tags)."""
    db = Database.from_url(url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    numbers = data.users(USERS, seed=1)
    started = time.perf_counter()
    await seed.users(url, numbers)
    users = time.perf_counter() - started
    started = time.perf_counter()
    await seed.tags(url, numbers, data_dir)
    return users, time.perf_counter() - started


async def _measure(backend: str) -> list[Figure]:
    figures: list[Figure] = []
    async with database(backend, "tp") as url:
        with tempfile.TemporaryDirectory() as tmp:
            keys = Path(tmp) / "keys"
            seeded, tagged = await _prepare(url, keys)
            figures.append(Figure(f"{backend}: bulk-load {USERS:,} users", seeded, "s"))
            figures.append(Figure(f"{backend}: ... and their discovery tags", tagged, "s"))
            for tag, workers in enumerate(WORKERS):
                if workers > 1 and backend == "sqlite":
                    continue  # refused: one SQLite file cannot be shared by several processes
                env = {**SERVER_DEFAULTS, "CONTACTSYNC_LOG_LEVEL": "warning"}
                args: list[str] = []
                if workers > 1:
                    env["CONTACTSYNC_REDIS_URL"] = REDIS
                    args = ["--workers", str(workers)]
                data_dir = Path(tmp) / f"server-{workers}"
                data_dir.mkdir()
                shutil.copyfile(keys / "discovery_keys", data_dir / "discovery_keys")
                server = ServerProcess(
                    data_dir,
                    url.replace("+asyncpg", "") if backend != "sqlite" else None,
                    env=env,
                    args=args,
                    port=ephemeral_port(),
                )
                if backend == "sqlite":
                    os.link(url.split("///", 1)[1], data_dir / "contactsync.db")
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
        with asyncio.Runner(loop_factory=load.new_event_loop) as runner:
            figures += runner.run(_measure(backend))
    return figures


def _main() -> None:  # pragma: no cover - `python -m bench.bench_throughput` for a quick look
    for f in run():
        print(f"{f.name}: {f.value:.4g} {f.unit} {f.target} {'' if f.ok is None else f.ok}")


if __name__ == "__main__":
    _main()
