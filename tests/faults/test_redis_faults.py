"""Redis black-holed under two servers sharing a database: writes do not wait for it, an event
written through one still reaches a socket on the other within 3 s (each polls its sockets'
logs while the bus is down), and fan-out through Redis resumes by itself when it answers."""

from __future__ import annotations

import asyncio
import time

import pytest

from contactsync.server.bus.redis import RedisBus
from contactsync.server.clock import SystemClock
from contactsync.server.config import Settings
from tests.faults.proxy import Proxy
from tests.live import Live, eventually, recv, recv_events, serve


def bus(live: Live) -> RedisBus:
    assert isinstance(live.ctx.bus, RedisBus)
    return live.ctx.bus


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_redis_black_holed_costs_writes_nothing_and_delivery_stays_within_3s(
    settings: Settings, redis_proxy: Proxy
) -> None:
    settings.redis_url = f"redis://127.0.0.1:{redis_proxy.port}/0"
    async with serve(settings, SystemClock()) as a, serve(settings, SystemClock()) as b:
        for live in (a, b):
            await asyncio.wait_for(bus(live).subscribed.wait(), 10)
        created, headers = await a.api.user_with_token("+14155550160")
        async with a.connect(headers) as ws:
            assert (await recv(ws))["op"] == "ready"
            redis_proxy.set("pause")
            last = 0
            for _ in range(3):
                started = time.monotonic()
                r = await b.api.client.post("/v1/devices/sync-request", headers=headers)
                assert r.status_code == 202, r.text
                # a write that waited for Redis would take its 1 s socket timeout at least
                assert time.monotonic() - started < 1.0
                [event] = await recv_events(ws, last + 1, timeout=3.0)
                assert time.monotonic() - started < 3.0
                last = event["seq"]
            assert bus(a).down and bus(a).polls > 0

            redis_proxy.set("pass")
            await eventually(lambda: not bus(a).down and not bus(b).down, timeout=15)
            polls = bus(a).polls
            r = await b.api.client.post("/v1/devices/sync-request", headers=headers)
            [event] = await recv_events(ws, last + 1, timeout=3.0)
            assert event["seq"] == last + 1
            assert bus(a).polls == polls  # woken through Redis again, not by polling
