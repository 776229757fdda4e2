"""Faults, with the production defaults (connect 5 s, statement 10 s, pool wait 1 s): real
`contactsync serve` processes whose PostgreSQL and Redis sit behind the TCP proxy of
tests/faults/proxy.py (the services themselves are never touched), and the CLI across a
server restart.

- PostgreSQL hangs (packets held, nothing refused): how long a request in flight and a new
  request take to end with 503, how fast /readyz answers (and that it says 503), how long
  until /readyz is 200 again once the database answers (no restart);
- Redis black-holed under two processes sharing the database: how long an event written
  through B takes to reach a socket on A, and what the black hole adds to a write's p99;
- the server killed mid-sync and down for 20 s: whether the CLI finishes without a rerun.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess
from tests.e2e.test_sdk_sync import write_vcf
from tests.faults.proxy import Proxy
from websockets.asyncio.client import connect

from bench.common import Figure, database

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# The defaults, not the test suite's generous ones (see tests/e2e/server.py).
DEFAULTS = {
    "CONTACTSYNC_DB_CONNECT_TIMEOUT_SECONDS": "5",
    "CONTACTSYNC_DB_COMMAND_TIMEOUT_SECONDS": "10",
    "CONTACTSYNC_DB_POOL_TIMEOUT_SECONDS": "1",
    "CONTACTSYNC_LOG_LEVEL": "warning",
}
WRITES = 30
RESTART_SECONDS = 20.0
BOOK = 5000


def ephemeral_port() -> int:
    """A port from the kernel's ephemeral range (test workers hand out ports below it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _user(http: httpx.AsyncClient, phone: str) -> dict[str, str]:
    r = await http.post("/v1/admin/users", json={"phone": phone}, headers=ADMIN)
    uid = r.json()["user_id"]
    t = await http.post(f"/v1/admin/users/{uid}/tokens", json={"device_id": "bench"}, headers=ADMIN)
    return {"Authorization": f"Bearer {t.json()['token']}"}


async def _timed(request: Any) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = await request
    return time.monotonic() - started, response


async def _pg_hang(url: str, pg: Proxy) -> list[Figure]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        me = await _user(http, "+14155550100")
        contacts = [{"phone": f"+1415555{i:04d}"} for i in range(5000)]
        for _ in range(3):
            await http.get("/v1/me", headers=me)  # pooled connections, as in steady use
        upload = asyncio.create_task(
            _timed(http.post("/v1/addressbook", json={"contacts": contacts}, headers=me))
        )
        await asyncio.sleep(0.05)  # the upload is in its transaction
        pg.set("pause")
        hung = time.monotonic()
        new, answer = await _timed(http.get("/v1/me", headers=me))
        ready, readyz = await _timed(http.get("/readyz"))
        _, uploaded = await upload
        in_flight = time.monotonic() - hung
        pg.set("pass")
        resumed = time.monotonic()
        while (await http.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.1)
        recovered = time.monotonic() - resumed
        me_again = (await http.get("/v1/me", headers=me)).status_code

    def as_503(seconds: float, response: httpx.Response) -> float:
        ok = response.status_code == 503 and response.headers.get("Retry-After")
        return seconds if ok else float("inf")

    return [
        Figure.at_most(
            "PostgreSQL hang: time to 503, request in flight"
            + ("" if uploaded.status_code == 503 else f" (it answered {uploaded.status_code})"),
            as_503(in_flight, uploaded) if uploaded.status_code == 503 else in_flight,
            "s",
            11,
        ),
        Figure.at_most("PostgreSQL hang: time to 503, new request", as_503(new, answer), "s", 11),
        Figure.at_most("PostgreSQL hang: /readyz answers 503 in", as_503(ready, readyz), "s", 2),
        Figure.at_most(
            "PostgreSQL back: /readyz 200 again after (no restart)",
            recovered if me_again == 200 else float("inf"),
            "s",
            5,
        ),
    ]


async def _writes(
    b: httpx.AsyncClient, ws: Any, headers: dict[str, str], count: int
) -> tuple[list[float], list[float]]:
    """`count` writes through B, each waited for on A's socket: (write latencies, deliveries)."""
    latencies, deliveries = [], []
    for _ in range(count):
        started = time.monotonic()
        r = await b.post("/v1/devices/sync-request", headers=headers)
        latencies.append(time.monotonic() - started)
        seq = r.json().get("seq")
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if frame["op"] == "event" and (seq is None or frame["seq"] >= seq):
                break
        deliveries.append(time.monotonic() - started)
    return latencies, deliveries


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _redis_black_hole(a_url: str, b_url: str, redis: Proxy) -> list[Figure]:
    async with (
        httpx.AsyncClient(base_url=a_url, timeout=60) as a,
        httpx.AsyncClient(base_url=b_url, timeout=60) as b,
    ):
        headers = await _user(a, "+14155550200")
        ws_url = a_url.replace("http://", "ws://") + "/v1/events/ws?after=0"
        async with connect(ws_url, additional_headers=headers, proxy=None) as ws:
            assert json.loads(await ws.recv())["op"] == "ready"
            healthy, _ = await _writes(b, ws, headers, WRITES)
            redis.set("pause")
            blocked, deliveries = await _writes(b, ws, headers, WRITES)
            redis.set("pass")
    return [
        Figure.at_most("Redis black-holed: cross-process delivery, worst", max(deliveries), "s", 3),
        Figure(
            "Redis black-holed: cross-process delivery, median",
            sorted(deliveries)[WRITES // 2],
            "s",
        ),
        Figure("Redis healthy: write p99", _p99(healthy) * 1000, "ms"),
        Figure("Redis black-holed: write p99", _p99(blocked) * 1000, "ms"),
        Figure.at_most(
            "Redis black-holed: extra write latency, p99",
            max(0.0, _p99(blocked) - _p99(healthy)) * 1000,
            "ms",
            50,
        ),
    ]


def _cli_across_restart(tmp: Path) -> list[Figure]:
    server = ServerProcess(tmp / "restart", env=DEFAULTS, port=ephemeral_port()).start(120)
    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        r = http.post("/v1/admin/users", json={"phone": "+14155550300"}, headers=ADMIN)
        uid = r.json()["user_id"]
        token = http.post(
            f"/v1/admin/users/{uid}/tokens", json={"device_id": "cli"}, headers=ADMIN
        ).json()["token"]
        expected = write_vcf(tmp / "book.vcf", BOOK)
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "contactsync.cli", "sync", str(tmp / "book.vcf")]
            + ["--server", server.url, "--token", token, "--region", "US"]
            + ["--state", str(tmp / "state"), "--batch-size", "100", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        auth = {"Authorization": f"Bearer {token}"}
        while proc.poll() is None:
            page = http.get("/v1/addressbook", params={"limit": 5000}, headers=auth).json()
            if len(page["contacts"]) >= BOOK // 10:
                break
            time.sleep(0.05)
        server.kill()
        time.sleep(RESTART_SECONDS)  # the outage itself
        server.start(120)
        out, _err = proc.communicate(timeout=300)
        took = time.monotonic() - started
        book: dict[str, Any] = {}
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 5000, **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/addressbook", params=params, headers=auth).json()
            book.update((c["phone"], c.get("name")) for c in page["contacts"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        whole = proc.returncode == 0 and book == expected and json.loads(out)["failed"] == 0
        http.close()
    finally:
        server.stop()
    return [
        Figure.at_most(
            f"CLI sync across a {RESTART_SECONDS:.0f} s server restart: reruns needed",
            0 if whole else 1,
            "",
            0,
        ),
        Figure(f"CLI sync across a {RESTART_SECONDS:.0f} s server restart: took", took, "s"),
    ]


async def _measure() -> list[Figure]:
    figures: list[Figure] = []
    async with database("postgresql", "faults") as url:
        target = make_url(url)
        with (
            Proxy(target.host or "127.0.0.1", target.port or 5432) as pg,
            Proxy("127.0.0.1", 6379) as redis,
            tempfile.TemporaryDirectory() as tmp,
        ):
            via = target.set(drivername="postgresql", host="127.0.0.1", port=pg.port)
            env = {**DEFAULTS, "CONTACTSYNC_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0"}
            servers = [
                ServerProcess(
                    Path(tmp) / name,
                    via.render_as_string(hide_password=False),
                    env=env,
                    port=ephemeral_port(),
                )
                for name in ("a", "b")
            ]
            for server in servers:
                await asyncio.to_thread(server.start, 120)
            try:
                a, b = servers
                figures += await _redis_black_hole(a.url, b.url, redis)
                figures += await _pg_hang(a.url, pg)
            finally:
                for server in servers:
                    await asyncio.to_thread(server.stop)
            figures += await asyncio.to_thread(_cli_across_restart, Path(tmp))
    return figures


def run() -> list[Figure]:
    return asyncio.run(_measure())
