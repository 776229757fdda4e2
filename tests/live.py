"""A real server in the test's own event loop: uvicorn on a loopback socket, with the app's
context at hand, plus a WebSocket client and helpers to cause events.

In-process, so tests can reach `ctx` (the hub, the bus, the push worker), yet every byte goes
over a real socket, exactly as for a deployed server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from contactsync.server.app import create_app
from contactsync.server.bus.redis import RedisBus
from contactsync.server.clock import Clock, SystemClock
from contactsync.server.config import Settings
from contactsync.server.context import Context
from contactsync.server.services import events
from contactsync.server.services.otp_senders import MemorySender
from tests.conftest import Api
from tests.workers import redis_url


class Live:
    def __init__(self, app: Any, url: str, client: httpx.AsyncClient) -> None:
        self.app = app
        self.url = url
        self.ws_url = url.replace("http://", "ws://") + "/v1/events/ws"
        self.api = Api(client, app)

    @property
    def ctx(self) -> Context:
        ctx: Context = self.app.state.ctx
        return ctx

    def connect(
        self, headers: dict[str, str] | None = None, after: int | str | None = 0, **kwargs: Any
    ) -> Any:
        """A websockets client connection (use with `async with`)."""
        url = self.ws_url if after is None else f"{self.ws_url}?after={after}"
        kwargs.setdefault("compression", None)
        return connect(url, additional_headers=headers, proxy=None, open_timeout=10, **kwargs)


@contextlib.asynccontextmanager
async def serve(settings: Settings, clock: Clock | None = None) -> AsyncIterator[Live]:
    app = create_app(settings, clock=clock, otp_sender=MemorySender())
    async with on_loopback(app, lifespan="on", ws_ping_interval=20, proxy_headers=False) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield Live(app, url, client)


@contextlib.asynccontextmanager
async def on_loopback(app: Any, **config: Any) -> AsyncIterator[str]:
    """uvicorn serving `app` on a free loopback port in this event loop (`config`: uvicorn's
    options); yields the base URL, and stops the server as soon as the block ends."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = _Server(uvicorn.Config(app, log_level="warning", **config))
    # Signal handlers belong to pytest here, not to this embedded server.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        server.stopping.set()
        await asyncio.wait_for(task, 15)
        sock.close()


class _Server(uvicorn.Server):
    """uvicorn's server, stopped as soon as the test is done with it: uvicorn's own main
    loop looks at `should_exit` every 0.1 s, a wait every test with a live server paid."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopping = asyncio.Event()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):  # (the same ticks, 0.1 s apart)
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.1)


REDIS = redis_url()


@contextlib.asynccontextmanager
async def pair(settings: Settings) -> AsyncIterator[tuple[Live, Live]]:
    """Two servers (two processes' worth of apps) sharing the database and a real Redis."""
    settings.redis_url = REDIS
    async with serve(settings, SystemClock()) as a, serve(settings, SystemClock()) as b:
        for live in (a, b):
            assert isinstance(live.ctx.bus, RedisBus)
            await asyncio.wait_for(live.ctx.bus.subscribed.wait(), 10)
        yield a, b


@contextlib.asynccontextmanager
async def dead_redis(settings: Settings) -> AsyncIterator[tuple[Live, Live]]:
    """Two servers sharing the database, configured for a Redis that is not there (a bound
    port nothing listens on, like a stopped Redis): each must go on alone."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    settings.redis_url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
    try:
        async with serve(settings, SystemClock()) as a, serve(settings, SystemClock()) as b:
            yield a, b
    finally:
        closed.close()


async def emit(
    ctx: Context, user_id: int, count: int = 1, type: str = "sync.requested", **data: Any
) -> list[int]:
    """Append `count` events to a user's log in one transaction; their seqs."""
    async with ctx.tx() as tx:
        written = await events.append(
            tx, [events.NewEvent(user_id, type, {"n": i, **data}) for i in range(count)]
        )
    return [seq for _, seq in written]


async def recv(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def recv_events(
    ws: ClientConnection, until_seq: int, timeout: float = 20
) -> list[dict[str, Any]]:
    """Event frames up to and including `until_seq` (control frames skipped)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not got or got[-1]["seq"] < until_seq:
            frame = await recv(ws, timeout)
            if frame["op"] == "event":
                got.append(frame)
    return got


async def eventually(check: Any, timeout: float = 10, every: float = 0.05) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(every)
