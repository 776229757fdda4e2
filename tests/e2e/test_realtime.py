"""Real `contactsync serve` processes sharing one PostgreSQL and one Redis act as one service:
an event caused through B reaches a socket on A; a killed process's clients reconnect
elsewhere with their last seq and miss nothing; with Redis stopped, events stay durable and
arrive on reconnect, by GET /v1/events, and live again once Redis is back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess, free_port
from tests.workers import redis_url

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SHARED_REDIS = redis_url()


@contextlib.contextmanager
def servers(
    tmp_path: Path, db_url: str, redis_url: str, n: int = 2
) -> Iterator[list[ServerProcess]]:
    procs = [
        ServerProcess(tmp_path / f"s{i}", db_url, env={"CONTACTSYNC_REDIS_URL": redis_url})
        for i in range(n)
    ]
    try:
        # One at a time: the first one migrates the shared database.
        for proc in procs:
            proc.start()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def user_token(url: str, phone: str, device: str = "phone") -> tuple[int, str]:
    with httpx.Client(base_url=url, headers=ADMIN, timeout=10) as client:
        created = client.post("/v1/admin/users", json={"phone": phone})
        assert created.status_code in (200, 201), created.text
        uid = created.json()["user_id"]
        token = client.post(f"/v1/admin/users/{uid}/tokens", json={"device_id": device})
        return int(uid), token.json()["token"]


def hold(url: str, token: str, phones: list[str]) -> None:
    response = httpx.post(
        url + "/v1/addressbook",
        json={"contacts": [{"phone": p, "name": f"N{p[-3:]}"} for p in phones]},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def register(url: str, phone: str) -> None:
    response = httpx.post(url + "/v1/admin/users", json={"phone": phone}, headers=ADMIN, timeout=10)
    assert response.status_code == 201, response.text


def ws_url(server: ServerProcess, after: int) -> str:
    return server.url.replace("http://", "ws://") + f"/v1/events/ws?after={after}"


class Follower:
    """A client that keeps a socket open to the first live server of its list, reconnecting
    with its last seq whenever the socket drops, and records every event it gets."""

    def __init__(self, token: str, servers: list[ServerProcess]) -> None:
        self.token = token
        self.servers = servers
        self.seqs: list[int] = []
        self.connections = 0
        self.connected = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    async def run(self) -> None:
        while True:
            for server in self.servers:
                if server.proc is None or server.proc.poll() is not None:
                    continue
                try:
                    async with connect(
                        ws_url(server, self.last),
                        additional_headers={"Authorization": f"Bearer {self.token}"},
                        proxy=None,
                        compression=None,
                        open_timeout=5,
                    ) as ws:
                        self.connections += 1
                        async for raw in ws:
                            frame = json.loads(raw)
                            if frame["op"] == "ready":
                                self.connected.set()
                            elif frame["op"] == "event":
                                self.seqs.append(frame["seq"])
                except (ConnectionClosed, OSError, InvalidHandshake, TimeoutError):
                    pass
                self.connected.clear()
            await asyncio.sleep(0.2)

    def start(self) -> Follower:
        self.task = asyncio.create_task(self.run())
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def until(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_a_client_on_a_receives_an_event_caused_through_b(
    tmp_path: Path, db_url: str
) -> None:
    with servers(tmp_path, db_url, SHARED_REDIS) as (a, b):
        _, token = user_token(a.url, "+14155550170")
        hold(a.url, token, ["+14155550171"])
        follower = Follower(token, [a]).start()
        try:
            await asyncio.wait_for(follower.connected.wait(), 10)
            started = time.monotonic()
            await asyncio.to_thread(register, b.url, "+14155550171")
            await until(lambda: follower.seqs == [1], timeout=5)
            assert time.monotonic() - started < 3
        finally:
            await follower.stop()


async def test_killed_process_clients_reconnect_and_miss_nothing(
    tmp_path: Path, db_url: str
) -> None:
    joiners = [f"+1415555{2000 + i:04d}" for i in range(24)]
    with servers(tmp_path, db_url, SHARED_REDIS) as (a, b):
        tokens = [user_token(a.url, f"+1415555{1900 + i:04d}")[1] for i in range(4)]
        for token in tokens:
            hold(a.url, token, joiners)
        # Two followers start on A, two on B; all fall back to the other process.
        followers = [
            Follower(t, [a, b] if i % 2 == 0 else [b, a]).start() for i, t in enumerate(tokens)
        ]
        try:
            for f in followers:
                await asyncio.wait_for(f.connected.wait(), 10)
            for i, phone in enumerate(joiners):
                if i == 8:
                    a.kill()  # mid-stream, while its clients are connected
                await asyncio.to_thread(register, b.url, phone)
                await asyncio.sleep(0.05)
            expected = list(range(1, len(joiners) + 1))
            await until(
                lambda: all(f.seqs == expected or len(f.seqs) > len(expected) for f in followers),
                timeout=20,
            )
            for f in followers:
                assert f.seqs == expected  # nothing missed, nothing twice
            assert followers[0].connections >= 2  # the ones on A did reconnect
        finally:
            for f in followers:
                await f.stop()


@contextlib.contextmanager
def own_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    proc = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


async def test_redis_stopped_events_stay_durable_and_arrive(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    with own_redis(port) as redis_proc, servers(tmp_path, db_url, redis_url) as (a, b):
        _, token = user_token(a.url, "+14155550180")
        phones = ["+14155550181", "+14155550182", "+14155550183"]
        hold(a.url, token, phones)
        follower = Follower(token, [a]).start()
        try:
            await asyncio.wait_for(follower.connected.wait(), 10)
            await asyncio.to_thread(register, b.url, phones[0])
            await until(lambda: follower.seqs == [1])

            redis_proc.terminate()
            redis_proc.wait(10)
            # B still answers, and the event is in the log.
            started = time.monotonic()
            await asyncio.to_thread(register, b.url, phones[1])
            assert time.monotonic() - started < 3
            events = httpx.get(
                a.url + "/v1/events?after=1", headers={"Authorization": f"Bearer {token}"}
            ).json()["events"]
            assert [e["seq"] for e in events] == [2]
            # A fresh connection (the client's reconnect) replays it.
            async with connect(
                ws_url(a, 1),
                additional_headers={"Authorization": f"Bearer {token}"},
                proxy=None,
                compression=None,
            ) as ws:
                frames = [json.loads(await ws.recv()) for _ in range(2)]
                assert frames[1]["op"] == "event" and frames[1]["seq"] == 2

            # Redis back on the same port: A resubscribes and wakes its sockets, so the
            # follower that never reconnected gets the missed event, then live ones again.
            with own_redis(port):
                await until(lambda: follower.seqs == [1, 2], timeout=20)
                await asyncio.sleep(1.5)  # B retries publishing after its pause
                await asyncio.to_thread(register, b.url, phones[2])
                await until(lambda: follower.seqs == [1, 2, 3], timeout=10)
            assert follower.connections == 1
        finally:
            await follower.stop()
