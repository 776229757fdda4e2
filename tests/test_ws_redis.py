"""Two server processes' worth of apps sharing one database and one Redis behave as one
service: wake-ups and presence cross between them; a dead Redis costs only cross-process
wake-ups, never an event. (Real Redis on 127.0.0.1:6379; each test's database has its own
instance id, hence its own Redis namespace.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from contactsync.server.config import Settings
from contactsync.server.services import push
from tests.live import Live, dead_redis, emit, eventually, pair, recv, recv_events


async def test_an_event_caused_through_b_reaches_a_socket_on_a(settings: Settings) -> None:
    async with pair(settings) as (a, b):
        assert a.ctx.bus.namespace == b.ctx.bus.namespace  # type: ignore[attr-defined]
        assert a.ctx.bus.namespace.startswith("contactsync:")  # type: ignore[attr-defined]
        created, headers = await a.api.user_with_token("+14155550160")
        uid = created["user_id"]
        async with a.connect(headers) as ws:
            await recv(ws)
            await emit(b.ctx, uid, 2)
            assert [e["seq"] for e in await recv_events(ws, 2, timeout=5)] == [1, 2]
            # Presence crosses too: B knows the user is online (on A).
            await eventually(lambda: b.ctx.bus.online([uid]))
            assert await b.ctx.bus.online([uid, uid + 999]) == {uid}
        await eventually(lambda: _offline(b, uid))


async def _offline(live: Live, uid: int) -> bool:
    return await live.ctx.bus.online([uid]) == set()


async def test_a_registration_through_b_reaches_holders_on_a(settings: Settings) -> None:
    async with pair(settings) as (a, b):
        holder, headers = await a.api.user_with_token("+14155550161")
        await a.api.client.post(
            "/v1/addressbook",
            json={"contacts": [{"phone": "+14155550162", "name": "Olga"}]},
            headers=headers,
        )
        async with a.connect(headers) as ws:
            await recv(ws)
            await b.api.create_user("+14155550162")
            [event] = await recv_events(ws, 1, timeout=5)
        assert event["type"] == "contact.joined" and event["data"]["name"] == "Olga"


async def test_without_redis_events_stay_durable_and_the_api_answers(
    settings: Settings,
) -> None:
    async with dead_redis(settings) as (a, b):
        created, headers = await a.api.user_with_token("+14155550163")
        uid = created["user_id"]
        async with a.connect(headers) as ws, b.connect(headers) as on_b:
            await recv(ws)
            await recv(on_b)
            started = time.monotonic()
            await emit(b.ctx, uid, 3)
            assert time.monotonic() - started < 1.5
            # Sockets on the process that wrote still get it at once.
            assert [e["seq"] for e in await recv_events(on_b, 3)] == [1, 2, 3]
            # Presence falls back to this process alone.
            assert await b.ctx.bus.online([uid]) == {uid}
        # Durable: a reconnect to A, or GET /v1/events on A, has everything.
        assert [e["seq"] for e in await a.api.events(headers)] == [1, 2, 3]
        async with a.connect(headers, after=1) as again:
            await recv(again)
            assert [e["seq"] for e in await recv_events(again, 3)] == [2, 3]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_push_skips_a_user_online_on_another_process(settings: Settings) -> None:
    settings.push_retry_base_seconds = 0.1
    async with pair(settings) as (a, b):
        response = await a.api.client.put(
            "/v1/admin/settings",
            json={
                "push_webhook_url": "http://127.0.0.1:9/hook",
                "push_webhook_secret": "0123456789abcdef0123",
            },
            headers=a.api.admin,
        )
        assert response.status_code == 200
        created, headers = await a.api.user_with_token("+14155550164")
        uid = created["user_id"]
        # Only B's worker may deliver: it must see the user online on A.
        await a.ctx.services.push.stop()
        worker = b.ctx.services.push
        await worker.stop()
        await emit(b.ctx, uid, 1)  # offline everywhere: queued
        async with a.connect(headers) as ws:
            await recv(ws)
            await eventually(lambda: b.ctx.bus.online([uid]))
            # Written through B while the user is online on A: not even queued.
            await emit(b.ctx, uid, 1)
            assert [e["seq"] for e in await recv_events(ws, 2)] == [1, 2]
            async with b.ctx.read() as tx:
                assert [r["seq"] for r in await push.listing(tx, "pending", 0, 10)] == [1]
            # And the queued one is dropped at delivery: the user is online (on A) now.
            await worker.start()
            await eventually(lambda: worker.skipped_online == 1)


async def test_concurrent_writes_through_both_stay_in_order_on_both(settings: Settings) -> None:
    async with pair(settings) as (a, b):
        created, headers = await a.api.user_with_token("+14155550165")
        uid = created["user_id"]
        async with a.connect(headers) as on_a, b.connect(headers) as on_b:
            await recv(on_a)
            await recv(on_b)
            writes = [emit((a if i % 2 else b).ctx, uid, 5) for i in range(20)]
            await asyncio.gather(*writes)
            expected = list(range(1, 101))
            assert [e["seq"] for e in await recv_events(on_a, 100)] == expected
            assert [e["seq"] for e in await recv_events(on_b, 100)] == expected
