"""Private discovery (docs/privacy.md): the OPRF, the filter, and the SDK end to end against a
real server process in private mode holding many registered users (bulk-loaded with their
tags, not through the API).

Figures: server OPRF evaluation per CPU-second of one core; the client's CPU per number; the
filter's bytes per user and measured false-positive rate; building the filter for all users;
the delta after 100 joins; the first private sync of a 10,000-contact (and a 1,000-contact)
vCard book, SDK to matches, filter download included; a later sync with 10 new contacts
(incremental), beside a force_sync that matches the whole book again; a join reaching the
holder's `on_contact_joined`. Scale: BENCH_USERS (1,000,000), BENCH_BOOK
(10,000), BENCH_BACKENDS (postgresql; sqlite too with "postgresql,sqlite").
"""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

import httpx
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess

from bench import data, seed
from bench.bench_sdk import _client_cpu, _cpu, _token, write_vcf
from bench.common import Figure, database, median
from contactsync import oprf, phone, tagfilter
from contactsync.client import ContactsManager, Event, VCardSource
from contactsync.server.store import migrate
from contactsync.server.store.database import Database

USERS = int(os.environ.get("BENCH_USERS", "1000000"))
BOOK = int(os.environ.get("BENCH_BOOK", "10000"))
BACKENDS = os.environ.get("BENCH_BACKENDS", "postgresql").split(",")
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _oprf_figures() -> list[Figure]:
    key = oprf.new_key()
    numbers = data.users(4_000, seed=31)
    started = time.process_time()
    blinded = [oprf.blind(n) for n in numbers]
    blind_cpu = time.process_time() - started
    points = [p for _, p in blinded]
    started = time.process_time()
    answers = oprf.evaluate_many(key, points)
    server_cpu = time.process_time() - started
    started = time.process_time()
    tags = [
        oprf.finalize(n, oprf.unblind(r, a))
        for n, (r, _), a in zip(numbers, blinded, answers, strict=True)
    ]
    unblind_cpu = time.process_time() - started
    assert tags[:10] == [oprf.tag(key, n) for n in numbers[:10]]
    per_number = (blind_cpu + unblind_cpu) / len(numbers) * 1e6
    return [
        Figure.at_least(
            "server OPRF evaluation (one core)", len(points) / server_cpu, "points/s", 3500
        ),
        Figure("client blind + unblind + hash", per_number, "us CPU/number"),
    ]


def _filter_figures(count: int) -> list[Figure]:
    rng = random.Random(5)
    keys = [rng.getrandbits(63) for _ in range(count)]
    encoded = tagfilter.encode(keys, version=1, key_version=1)
    decoded = tagfilter.Filter.decode(encoded)
    assert all(decoded.contains(k) for k in keys[:1000])
    probes = 2_000_000
    false = sum(decoded.contains(rng.getrandbits(63)) for _ in range(probes))
    # the measured rate needs ~10^10 probes to see 10^-9; the bound is exact for this layout
    bound = count / (1 << decoded.bits) / 2**32
    return [
        Figure.at_most(f"filter size, {count:,} users", len(encoded) / count, "bytes/user", 6),
        Figure.at_most("filter false-positive rate (bound)", bound, "per lookup", 1e-9),
        Figure(f"filter false positives in {probes:,} random lookups", false, "lookups"),
    ]


async def _prepare(url: str, registered: list[str], data_dir: Path) -> float:
    """Users and their tags under a key written to the server's data folder; returns the
    seconds the tags took (made anew: a figure of its own)."""
    db = Database.from_url(url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    await seed.users(url, registered)
    return await seed.tags(url, registered, data_dir, keep=False)


async def _sync(
    url: str, token: str, path: Path, state: Path
) -> tuple[ContactsManager, float, int]:
    manager = ContactsManager(
        VCardSource(path),
        server=url,
        token=token,
        region="US",
        state_dir=state,
        watch_interval=None,
        discovery="private",
    )
    started = time.perf_counter()
    metrics = await manager.start()
    elapsed = time.perf_counter() - started
    assert metrics.error is None, metrics.error
    return manager, elapsed, len(metrics.registered)


async def _measure(backend: str, registered: list[str]) -> list[Figure]:
    label = f"{backend}, {len(registered):,} users"
    figures: list[Figure] = []
    async with database(backend, "private") as url:
        with tempfile.TemporaryDirectory() as tmp:
            server_dir = Path(tmp) / "server"
            server_dir.mkdir()
            tag_seconds = await _prepare(url, registered, server_dir)
            server = ServerProcess(
                server_dir,
                url.replace("+asyncpg", "") if backend != "sqlite" else None,
                env={"CONTACTSYNC_DISCOVERY_MODE": "private"},
            )
            if backend == "sqlite":
                os.link(url.split("///", 1)[1], server_dir / "contactsync.db")
            server.start(timeout=120)
            try:
                assert server.proc is not None
                pid = server.proc.pid
                async with httpx.AsyncClient(base_url=server.url, timeout=120) as admin:
                    await admin.put(
                        "/v1/admin/settings", json={"discovery_quota": 10**7}, headers=ADMIN
                    )
                    with httpx.Client(base_url=server.url, timeout=60) as sync_admin:
                        token = _token(sync_admin, data.users(1, seed=8100)[0])
                    headers = {"Authorization": f"Bearer {token}"}
                    # the filter's first build, from the stored tags (what a first download
                    # waits for once per process; later ones come from the cache)
                    started = time.perf_counter()
                    r = await admin.get("/v1/discovery/filter", headers=headers)
                    build = time.perf_counter() - started
                    assert r.status_code == 200, r.text
                    size = len(r.content) / len(registered)
                    version = int(r.headers["x-discovery-version"])
                    key_version = int(r.headers["x-discovery-key-version"])
                    for n in data.users(100, seed=8200):
                        await admin.post("/v1/admin/users", json={"phone": n}, headers=ADMIN)
                    r = await admin.get(
                        f"/v1/discovery/filter?since={version}&key_version={key_version}",
                        headers=headers,
                    )
                    # (a drawn number may already be a user's: then it is no join)
                    joins = r.json()["version"] - version
                    delta_bytes = len(r.content) * 100 / max(joins, 1)
                    assert joins >= 90, r.text
                figures += [
                    Figure(f"{label}: tags for every user (2 processes)", tag_seconds, "s"),
                    Figure.at_most(f"{label}: build the filter", build, "s", 60),
                    Figure.at_most(f"{label}: filter download", size, "bytes/user", 6),
                    Figure.at_most(
                        f"{label}: delta after 100 joins", delta_bytes, "bytes (JSON)", 2048
                    ),
                ]
                figures += await _sdk(server.url, registered, Path(tmp), pid, label)
            finally:
                server.stop()
    return figures


async def _sdk(url: str, registered: list[str], tmp: Path, pid: int, label: str) -> list[Figure]:
    figures: list[Figure] = []
    with httpx.Client(base_url=url, timeout=60) as admin:
        tokens = [_token(admin, n) for n in data.users(2, seed=8300)]
    for size, target, token in ((BOOK, 8.0, tokens[0]), (min(BOOK, 1000), 1.0, tokens[1])):
        book = data.book(size, registered=registered, ratio=0.05, seed=600 + size, style="written")
        # a few numbers that register later (the join figure)
        later = data.users(3, seed=8400 + size)
        book += [{"name": f"Later {i}", "phone": n} for i, n in enumerate(later)]
        path = tmp / f"book-{size}.vcf"
        write_vcf(path, book)
        phone.cache_clear()
        client0, server0 = _client_cpu(pid), _cpu(pid)
        manager, first, matched = await _sync(url, token, path, tmp / f"state-{size}")
        client_cpu, server_cpu = _client_cpu(pid) - client0, _cpu(pid) - server0
        try:
            figures += [
                Figure.at_most(
                    f"{label}: first private sync, {size:,} contacts", first, "s", target
                ),
                Figure(f"{label}: ... its client CPU", client_cpu, "s"),
                Figure(f"{label}: ... its server CPU", server_cpu, "s"),
                Figure(f"{label}: ... matches", matched, "users"),
            ]
            if size != BOOK:
                continue
            extra = data.book(10, registered=registered, ratio=0.5, seed=700, style="e164")
            write_vcf(path, book + extra)
            client0, server0 = _client_cpu(pid), _cpu(pid)
            started = time.perf_counter()
            metrics = await manager.sync()
            later_sync = time.perf_counter() - started
            client_cpu, server_cpu = _client_cpu(pid) - client0, _cpu(pid) - server0
            assert metrics.error is None and metrics.evaluated >= 10, metrics
            # the same book matched and resolved whole again (what every later sync did
            # before syncs were incremental): the ratio of the two, taken in one run
            client1, server1 = _client_cpu(pid), _cpu(pid)
            started = time.perf_counter()
            whole = await manager.force_sync()
            whole_sync = time.perf_counter() - started
            whole_client, whole_server = _client_cpu(pid) - client1, _cpu(pid) - server1
            assert whole.error is None and whole.evaluated == 0, whole
            figures += [
                Figure.at_most(f"{label}: later sync, 10 new contacts", later_sync, "s", 0.1),
                Figure(f"{label}: ... its client CPU", client_cpu, "s"),
                Figure(f"{label}: ... its server CPU", server_cpu, "s"),
                Figure(
                    f"{label}: force_sync: the whole book read and matched again", whole_sync, "s"
                ),
                Figure(f"{label}: ... its client CPU", whole_client, "s"),
                Figure(f"{label}: ... its server CPU", whole_server, "s"),
            ]
            joined: asyncio.Queue[tuple[float, Event]] = asyncio.Queue()
            manager.on_contact_joined(
                lambda e, q=joined: q.put_nowait((time.perf_counter(), e))  # type: ignore[misc]
            )
            await asyncio.sleep(1)  # the event socket is up
            latencies = []
            async with httpx.AsyncClient(base_url=url, headers=ADMIN) as admin:
                for number in later:
                    started = time.perf_counter()
                    await admin.post("/v1/admin/users", json={"phone": number})
                    at, event = await asyncio.wait_for(joined.get(), 30)
                    assert event.data["phone"] == number
                    latencies.append(at - started)
            figures.append(
                Figure.at_most(
                    f"{label}: join to on_contact_joined (median)", median(latencies), "s", 2
                )
            )
        finally:
            await manager.close()
    return figures


def run() -> list[Figure]:
    figures = _oprf_figures() + _filter_figures(USERS)
    registered = data.users(USERS, seed=77)
    for backend in BACKENDS:
        figures += asyncio.run(_measure(backend, registered))
    return figures
