"""The SDK end to end: `ContactsManager` syncing a vCard file to a real server process on
loopback that holds many registered users (bulk-loaded, not through the API).

Figures: first sync of a 10,000-contact vCard book (parse, normalise, upload, store, match;
numbers written the way people type them, 5% registered), a resync after 10 edits (including
the scan of the file), that a resync with no change sends nothing, and the client's peak RSS
syncing a 100,000-contact book (a separate `contactsync sync` process). The users come with
their private-discovery tags (bench/seed.py), so the server is not tagging a million users in
the background while the figures are taken. Sizes can be reduced:
BENCH_USERS=10000 scripts/bench sdk ; BENCH_BACKENDS=sqlite to skip PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess

from bench import data, seed
from bench.common import Figure, database, median
from contactsync import phone
from contactsync.client import ContactsManager, VCardSource
from contactsync.server.store import migrate
from contactsync.server.store.database import Database
from contactsync.server.store.tables import app_settings

USERS = int(os.environ.get("BENCH_USERS", "1000000"))
BACKENDS = os.environ.get("BENCH_BACKENDS", "postgresql,sqlite").split(",")
BOOK = 10_000
BIG_BOOK = int(os.environ.get("BENCH_BIG_BOOK", "100000"))
RUNS = 3
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def write_vcf(path: Path, contacts: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i, c in enumerate(contacts):
            out.write(
                f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c{i}\r\nFN:{c['name']}\r\n"
                f"TEL;TYPE=CELL:{c['phone']}\r\nEND:VCARD\r\n"
            )


async def _prepare(url: str, registered: list[str]) -> float:
    db = Database.from_url(url)
    try:
        await migrate.upgrade(db)
        async with db.write() as conn:
            # the big-book figure uploads 100,000 new numbers; the default daily
            # anti-enumeration quota (10,000) would stop it
            await conn.execute(sa.insert(app_settings).values(key="discovery_quota", value=10**7))
    finally:
        await db.dispose()
    started = time.perf_counter()
    await seed.users(url, registered)
    return time.perf_counter() - started


def _token(client: httpx.Client, number: str) -> str:
    uid = client.post("/v1/admin/users", json={"phone": number}, headers=ADMIN).json()["user_id"]
    r = client.post(f"/v1/admin/users/{uid}/tokens", json={"device_id": "bench"}, headers=ADMIN)
    return str(r.json()["token"])


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0  # ended meanwhile
    return int(fields[11]) + int(fields[12])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += map(int, (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _cpu(pid: int, *, itself: bool = True, besides: int | None = None) -> float:
    """CPU seconds used so far by a process and its live children (user + system): on a
    busy machine wall time swings, CPU time much less, so the figures show both. Children
    count: the SDK may normalise in a worker process, the server may run workers."""
    pids = [child for child in _children(pid) if child != besides]
    ticks = sum(map(_ticks, pids)) + (_ticks(pid) if itself else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _client_cpu(server_pid: int) -> float:
    """This process's CPU seconds (finer than /proc's ticks) and its children's, running or
    ended (the SDK's number worker), but the server's (this process started it)."""
    ended = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (
        time.process_time()
        + ended.ru_utime
        + ended.ru_stime
        + _cpu(os.getpid(), itself=False, besides=server_pid)
    )


async def _runs(
    url: str, registered: list[str], tmp: Path, server_pid: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {
        "first": [],
        "edits": [],
        "nochange": [],
        "sent": [],
        "client_cpu": [],
        "server_cpu": [],
        "edits_client_cpu": [],
        "edits_server_cpu": [],
    }
    with httpx.Client(base_url=url, timeout=60) as admin:
        for run in range(RUNS):
            token = _token(admin, data.users(1, seed=7000 + run)[0])
            book = data.book(
                BOOK, registered=registered, ratio=0.05, seed=500 + run, style="written"
            )
            path = tmp / f"book-{run}.vcf"
            write_vcf(path, book)
            phone.cache_clear()  # the client meets these numbers for the first time
            manager = ContactsManager(
                VCardSource(path),
                server=url,
                token=token,
                region="US",
                state_dir=tmp / f"state-{run}",
                events=False,
                watch_interval=None,
            )
            try:
                client0, server0 = _client_cpu(server_pid), _cpu(server_pid)
                first = await manager.sync()
                out["client_cpu"].append(_client_cpu(server_pid) - client0)
                out["server_cpu"].append(_cpu(server_pid) - server0)
                assert first.error is None and first.uploaded >= BOOK * 0.95, first.error
                out["first"].append(first.duration)
                rng = random.Random(run)
                for i in rng.sample(range(BOOK), 10):
                    book[i] = {**book[i], "name": book[i]["name"] + " (edited)"}
                write_vcf(path, book)
                client0, server0 = _client_cpu(server_pid), _cpu(server_pid)
                started = time.perf_counter()
                edits = await manager.sync()
                out["edits"].append(time.perf_counter() - started)
                out["edits_client_cpu"].append(_client_cpu(server_pid) - client0)
                out["edits_server_cpu"].append(_cpu(server_pid) - server0)
                assert edits.uploaded == 10 and edits.error is None, edits
                started = time.perf_counter()
                same = await manager.sync()
                out["nochange"].append(time.perf_counter() - started)
                out["sent"].append(same.uploaded + same.bytes)
            finally:
                await manager.close()
    return out


def _rss(url: str, registered: list[str], tmp: Path) -> float:
    """Peak RSS (MB) of a separate `contactsync sync` process on a BIG_BOOK-contact file."""
    with httpx.Client(base_url=url, timeout=60) as admin:
        token = _token(admin, data.users(1, seed=7999)[0])
    path = tmp / "big.vcf"
    write_vcf(
        path, data.book(BIG_BOOK, registered=registered, ratio=0.05, seed=999, style="written")
    )
    out_path, err_path, hwm_path = tmp / "big.out", tmp / "big.err", tmp / "big.hwm"
    args = [
        "sync",
        str(path),
        "--server",
        url,
        "--token",
        token,
        "--region",
        "US",
        "--state",
        str(tmp / "big-state"),
        "--json",
    ]
    # The child reports its own VmHWM: ru_maxrss would also count the pages of this (big)
    # bench process that the child held between fork and exec.
    wrapper = (
        "import atexit, sys\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        f"            open({str(hwm_path)!r}, 'w').write(line.split()[1])\n"
        "atexit.register(hwm)\n"
        f"sys.argv = ['contactsync'] + {args!r}\n"
        "from contactsync.cli import main\n"
        "main()\n"
    )
    with out_path.open("wb") as out, err_path.open("wb") as err:
        code = subprocess.call([sys.executable, "-c", wrapper], stdout=out, stderr=err)
    assert code == 0, err_path.read_text()[-2000:]
    stdout = out_path.read_text()
    metrics: dict[str, Any] = json.loads(stdout)
    assert metrics["uploaded"] >= BIG_BOOK * 0.95, metrics["error"]
    return int(hwm_path.read_text()) / 1024  # kB


async def _measure(backend: str, registered: list[str]) -> list[Figure]:
    label = f"{backend}, {len(registered):,} users"
    async with database(backend, "sdk") as url:
        seeded = await _prepare(url, registered)
        with tempfile.TemporaryDirectory() as tmp:
            server = ServerProcess(
                Path(tmp) / "server",
                url.replace("+asyncpg", "") if backend != "sqlite" else None,
                env={"CONTACTSYNC_NUMBER_WORKERS": None},  # the server's own default
            )
            # the users' private-discovery tags, as registered users have them: a server
            # started on untagged users tags them all in the background (some 80 CPU-s for a
            # million), which every figure taken meanwhile would count
            await seed.tags(url, registered, Path(tmp) / "server")
            if backend == "sqlite":
                # the server's embedded SQLite file is the database we seeded
                os.link(url.split("///", 1)[1], Path(tmp) / "server" / "contactsync.db")
            server.start(timeout=120)
            try:
                assert server.proc is not None
                runs = await _runs(server.url, registered, Path(tmp), server.proc.pid)
                rss = _rss(server.url, registered, Path(tmp)) if backend == BACKENDS[0] else None
            finally:
                server.stop()
    figures = [
        Figure(f"{label}: bulk-load users", seeded, "s"),
        Figure.at_most(
            f"{label}: first sync, {BOOK:,}-contact vCard (median)",
            median(runs["first"]),
            "s",
            1.0,
        ),
        Figure(f"{label}: first sync, client CPU (median)", median(runs["client_cpu"]), "s"),
        Figure(f"{label}: first sync, server CPU (median)", median(runs["server_cpu"]), "s"),
        Figure.at_most(
            f"{label}: resync after 10 edits, with the scan (median)",
            median(runs["edits"]) * 1000,
            "ms",
            30,
        ),
        Figure(
            f"{label}: resync after 10 edits, client CPU (median)",
            median(runs["edits_client_cpu"]) * 1000,
            "ms",
        ),
        Figure(
            f"{label}: resync after 10 edits, server CPU (median)",
            median(runs["edits_server_cpu"]) * 1000,
            "ms",
        ),
        Figure.at_most(
            f"{label}: resync, no change (median)", median(runs["nochange"]) * 1000, "ms", 50
        ),
        Figure.at_most(
            f"{label}: contacts + bytes sent by a no-change resync", max(runs["sent"]), "", 0
        ),
    ]
    if rss is not None:
        figures.append(
            Figure.at_most(f"client peak RSS, {BIG_BOOK:,}-contact book", rss, "MB", 200)
        )
    return figures


def run() -> list[Figure]:
    registered = data.users(USERS, seed=1)
    figures: list[Figure] = []
    for backend in BACKENDS:
        figures += asyncio.run(_measure(backend, registered))
    return figures
