"""Push webhooks for offline users: signed, retried with backoff, given up and kept, durable
across restarts, never for users with a live socket, and a receiver that never answers holds
up nothing else. The receiver is a real HTTP server on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from contactsync.server.clock import SystemClock
from contactsync.server.config import Settings
from contactsync.server.services import push
from tests.live import Live, emit, eventually, on_loopback, recv, recv_events, serve
from tests.workers import redis_url

SECRET = "webhook-secret-0123456789"


class Receiver:
    """A webhook receiver that answers each request with the next scripted behaviour:
    an HTTP status, or "hang" (never answers). After the script, 200."""

    def __init__(self, script: list[int | str] | None = None) -> None:
        self.script = list(script or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.url = ""
        self._release = asyncio.Event()

        async def hook(request: Request) -> Response:
            body = await request.body()
            self.requests.append((dict(request.headers), body))
            step = self.script.pop(0) if self.script else 200
            if step == "hang":
                await self._release.wait()
                step = 200
            return Response(status_code=int(step))

        self.app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def deliveries(self) -> list[dict[str, Any]]:
        return [d for _, body in self.requests for d in json.loads(body)["deliveries"]]

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        async with on_loopback(self.app, lifespan="off") as url:
            self.url = f"{url}/hook"
            try:
                yield self
            finally:
                self._release.set()  # hung requests answer, so the server can stop


def valid_signature(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-contactsync-signature", ""), expected)


@pytest.fixture
def fast(settings: Settings) -> Settings:
    settings.push_retry_base_seconds = 0.1
    settings.push_retry_max_seconds = 0.5
    settings.push_timeout_seconds = 0.5
    return settings


async def configure(live: Live, url: str, **more: Any) -> None:
    response = await live.api.client.put(
        "/v1/admin/settings",
        json={"push_webhook_url": url, "push_webhook_secret": SECRET, **more},
        headers=live.api.admin,
    )
    assert response.status_code == 200, response.text


async def outbox(live: Live, state: str = "pending") -> dict[str, Any]:
    response = await live.api.client.get(
        f"/v1/admin/push/outbox?state={state}", headers=live.api.admin
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def empty_outbox(live: Live) -> bool:
    return (await outbox(live))["counts"] == {"pending": 0, "failed": 0}


async def test_fails_twice_then_delivered_exactly_once_more(fast: Settings) -> None:
    async with Receiver([500, 503]).running() as receiver, serve(fast, SystemClock()) as live:
        await configure(live, receiver.url)
        uid = (await live.api.create_user("+14155550130"))["user_id"]
        [seq] = await emit(live.ctx, uid, 1, type="sync.requested")
        await eventually(lambda: empty_outbox(live))
        await asyncio.sleep(0.5)  # nothing more comes
        assert len(receiver.requests) == 3
        for headers, body in receiver.requests:
            assert valid_signature(headers, body)
            assert headers["content-type"] == "application/json"
        deliveries = receiver.deliveries()
        assert len({d["id"] for d in deliveries}) == 1
        assert [d["attempt"] for d in deliveries] == [1, 2, 3]
        assert deliveries[-1]["user_id"] == uid
        assert deliveries[-1]["event"]["seq"] == seq
        assert deliveries[-1]["event"]["type"] == "sync.requested"
        assert deliveries[-1]["event"]["data"] == {"n": 0}
        assert live.ctx.services.push.delivered == 1


async def test_a_forged_signature_would_not_match(fast: Settings) -> None:
    async with Receiver().running() as receiver, serve(fast, SystemClock()) as live:
        await configure(live, receiver.url)
        uid = (await live.api.create_user("+14155550131"))["user_id"]
        await emit(live.ctx, uid, 1)
        await eventually(lambda: receiver.requests)
        headers, body = receiver.requests[0]
        assert valid_signature(headers, body)
        assert not valid_signature(headers, body.replace(b'"n":0', b'"n":1'))


async def test_online_users_get_the_socket_not_a_push(fast: Settings) -> None:
    async with Receiver().running() as receiver, serve(fast, SystemClock()) as live:
        await configure(live, receiver.url)
        online, headers = await live.api.user_with_token("+14155550132")
        offline = (await live.api.create_user("+14155550133"))["user_id"]
        async with live.connect(headers) as ws:
            await recv(ws)
            async with live.ctx.tx() as tx:
                from contactsync.server.services import events

                await events.append(
                    tx,
                    [
                        events.NewEvent(online["user_id"], "sync.requested", {}),
                        events.NewEvent(offline, "sync.requested", {}),
                    ],
                )
            assert [e["seq"] for e in await recv_events(ws, 1)] == [1]
            await eventually(lambda: empty_outbox(live))
        # Not even queued for the online user: a push later would repeat what it saw.
        assert [d["user_id"] for d in receiver.deliveries()] == [offline]


async def test_a_user_who_comes_online_before_delivery_is_not_pushed(fast: Settings) -> None:
    async with Receiver().running() as receiver, serve(fast, SystemClock()) as live:
        await configure(live, receiver.url)
        created, headers = await live.api.user_with_token("+14155550129")
        worker = live.ctx.services.push
        await worker.stop()
        await emit(live.ctx, created["user_id"], 1)  # offline: queued
        assert len((await outbox(live))["items"]) == 1
        async with live.connect(headers) as ws:
            await recv(ws)
            assert [e["seq"] for e in await recv_events(ws, 1)] == [1]
            await worker.start()
            await eventually(lambda: empty_outbox(live))
        assert worker.skipped_online == 1 and receiver.requests == []


async def test_gives_up_keeps_for_inspection_and_retries_on_request(fast: Settings) -> None:
    async with Receiver([500, 500, 500]).running() as receiver, serve(fast, SystemClock()) as live:
        await configure(live, receiver.url, push_max_attempts=3)
        uid = (await live.api.create_user("+14155550134"))["user_id"]
        await emit(live.ctx, uid, 1)
        failed = await eventually(lambda: _failed(live), timeout=10)
        assert len(receiver.requests) == 3
        [row] = failed["items"]
        assert row["user_id"] == uid and row["attempts"] == 3
        assert row["last_error"] == "HTTP 500" and row["state"] == "failed"
        await asyncio.sleep(0.6)
        assert len(receiver.requests) == 3  # given up means no more tries
        retry = await live.api.client.post(
            "/v1/admin/push/outbox/retry", json={}, headers=live.api.admin
        )
        assert retry.json() == {"requeued": 1}
        await eventually(lambda: empty_outbox(live))
        assert len(receiver.requests) == 4


async def _failed(live: Live) -> dict[str, Any] | None:
    listing = await outbox(live, "failed")
    return listing if listing["items"] else None


async def test_a_receiver_that_never_answers_blocks_nothing_else(fast: Settings) -> None:
    # Anything that waited on the hung receiver would finish only after its push timed out:
    # the work below takes well under a second even on a loaded machine.
    fast.push_timeout_seconds = 3.0
    hang = Receiver(["hang"] * 100)
    async with hang.running(), Receiver().running() as good, serve(fast, SystemClock()) as live:
        await configure(live, hang.url)
        online, headers = await live.api.user_with_token("+14155550135")
        offline = (await live.api.create_user("+14155550136"))["user_id"]
        await emit(live.ctx, offline, 1)
        await eventually(lambda: hang.requests)
        async with live.connect(headers) as ws:
            await recv(ws)
            # The API answers and sockets deliver while pushes hang.
            for i in range(5):
                await live.api.create_user(f"+1415555014{i}")
                await emit(live.ctx, online["user_id"], 1)
            assert [e["seq"] for e in await recv_events(ws, 5)] == [1, 2, 3, 4, 5]
            assert not await _errored(live)  # all of it while the first push still hangs
        rows = (await outbox(live))["items"]
        assert rows and rows[0]["user_id"] == offline
        await eventually(lambda: _errored(live))
        # Point the webhook elsewhere: the queued push goes out there.
        await configure(live, good.url)
        # (The online user's rows may go too: presence is judged at delivery time, and the
        # socket is closed by then.)
        await eventually(lambda: offline in [d["user_id"] for d in good.deliveries()], timeout=15)


async def _errored(live: Live) -> bool:
    rows = (await outbox(live))["items"]
    return bool(rows) and rows[0]["last_error"] == "timeout"


async def test_the_outbox_survives_a_restart(fast: Settings) -> None:
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    dead_url = f"http://127.0.0.1:{refused.getsockname()[1]}/hook"
    async with serve(fast, SystemClock()) as live:
        # Pending across the restart however often the dead receiver is tried meanwhile: the
        # default 8 tries take ~3 s here, which a loaded machine's wait below can outlast, and
        # a row out of tries is `failed`, which no restart retries.
        await configure(live, dead_url, push_max_attempts=50)
        uid = (await live.api.create_user("+14155550137"))["user_id"]
        await emit(live.ctx, uid, 2)
        # refused at once, or timed out on a loaded machine: either way it failed and stays
        await eventually(lambda: _failed_delivery(live), timeout=20)
    refused.close()
    async with Receiver().running() as receiver, serve(fast, SystemClock()) as live:
        await configure(live, receiver.url)
        await eventually(lambda: empty_outbox(live), timeout=10)
        assert sorted(d["event"]["seq"] for d in receiver.deliveries()) == [1, 2]


async def test_a_stop_mid_delivery_gives_the_rows_back_to_the_next_process(
    fast: Settings,
) -> None:
    # A delivery in flight holds its rows leased for the push timeout + 30 s. A stop that cut
    # it short gives them back (due at once, that try not counted), so the process started
    # next delivers them at once instead of after the lease.
    fast.push_timeout_seconds = 5.0
    hang = Receiver(["hang"])
    async with hang.running():
        async with serve(fast, SystemClock()) as live:
            await configure(live, hang.url)
            uid = (await live.api.create_user("+14155550160"))["user_id"]
            await emit(live.ctx, uid, 1)
            await eventually(lambda: hang.requests)  # in flight: the receiver holds it
            [row] = (await outbox(live))["items"]
            assert row["attempts"] == 1
        async with Receiver().running() as good, serve(fast, SystemClock()) as live:
            await configure(live, good.url)
            # well within the 35 s lease the cut-short try took
            await eventually(lambda: empty_outbox(live), timeout=10)
        # (this process may have tried the hung receiver's URL before the new one was set:
        # it answers now)
        [delivery] = hang.deliveries()[1:] + good.deliveries()
        assert delivery["user_id"] == uid and delivery["event"]["seq"] == 1
        assert delivery["attempt"] == 1  # the cut-short try is not counted


async def _failed_delivery(live: Live) -> bool:
    rows = (await outbox(live))["items"]
    return len(rows) == 2 and all(
        r["last_error"] in ("ConnectError", "ConnectTimeout", "PoolTimeout") for r in rows
    )


async def test_only_configured_types_and_only_with_a_webhook(fast: Settings) -> None:
    async with serve(fast, SystemClock()) as live:
        uid = (await live.api.create_user("+14155550138"))["user_id"]
        await emit(live.ctx, uid, 1)
        assert (await outbox(live))["counts"] == {"pending": 0, "failed": 0}
        await live.ctx.services.push.stop()  # keep rows where we can see them
        await configure(live, "http://127.0.0.1:9/hook", push_event_types=["contact.joined"])
        await emit(live.ctx, uid, 1, type="sync.requested")
        await emit(live.ctx, uid, 1, type="contact.joined")
        rows = (await outbox(live))["items"]
        assert [(r["user_id"], r["seq"]) for r in rows] == [(uid, 3)]
        # A transaction that fails queues nothing.
        with pytest.raises(RuntimeError):
            async with live.ctx.tx() as tx:
                from contactsync.server.services import events

                await events.append(tx, [events.NewEvent(uid, "contact.joined", {})])
                raise RuntimeError("rolled back")
        assert len((await outbox(live))["items"]) == 1


async def test_a_registration_pushes_contact_joined_to_offline_holders(fast: Settings) -> None:
    async with Receiver().running() as receiver, serve(fast, SystemClock()) as live:
        await configure(live, receiver.url)
        holder, headers = await live.api.user_with_token("+14155550139")
        await live.api.client.post(
            "/v1/addressbook",
            json={"contacts": [{"phone": "+14155550150", "name": "Nnamdi"}]},
            headers=headers,
        )
        joined = await live.api.create_user("+14155550150")
        await eventually(lambda: receiver.deliveries())
        [delivery] = receiver.deliveries()
        assert delivery["user_id"] == holder["user_id"]
        assert delivery["event"]["type"] == "contact.joined"
        assert delivery["event"]["data"]["user_id"] == joined["user_id"]
        assert delivery["event"]["data"]["name"] == "Nnamdi"


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    import random

    rng = random.Random(1)
    delays = [push.backoff_seconds(n, 2.0, 60.0, rng) for n in range(1, 8)]
    assert 1.6 <= delays[0] <= 2.4 and 3.2 <= delays[1] <= 4.8 and 6.4 <= delays[2] <= 9.6
    assert all(d <= 60.0 for d in delays) and delays[-1] >= 48.0


async def test_two_processes_share_the_outbox_and_deliver_each_once(fast: Settings) -> None:
    fast.push_batch_size = 5
    # Several processes are one service through Redis: it tells b at once that a changed the
    # webhook setting (each process caches the settings).
    fast.redis_url = redis_url()
    async with (
        Receiver().running() as receiver,
        serve(fast, SystemClock()) as a,
        serve(fast, SystemClock()) as b,
    ):
        await configure(a, receiver.url)
        users = [(await a.api.create_user(f"+1415555{4000 + i:04d}"))["user_id"] for i in range(10)]
        for round_ in range(4):
            for uid in users:
                await emit((a if round_ % 2 else b).ctx, uid, 1)
        await eventually(lambda: empty_outbox(a), timeout=20)
        ids = [d["id"] for d in receiver.deliveries()]
        assert len(ids) == 40 and len(set(ids)) == 40
        workers = [live.ctx.services.push for live in (a, b)]
        assert sum(w.delivered for w in workers) == 40
        assert all(valid_signature(h, body) for h, body in receiver.requests)


async def test_outbox_admin_calls_check_their_input(fast: Settings) -> None:
    async with serve(fast, SystemClock()) as live:
        admin = live.api.admin
        bad_state = await live.api.client.get("/v1/admin/push/outbox?state=lost", headers=admin)
        assert bad_state.status_code == 422
        assert bad_state.json()["error"]["code"] == "invalid_request"
        bad_ids = await live.api.client.post(
            "/v1/admin/push/outbox/retry", json={"ids": "all"}, headers=admin
        )
        assert bad_ids.status_code == 422
        _, user = await live.api.user_with_token("+14155550190")
        forbidden = await live.api.client.get("/v1/admin/push/outbox", headers=user)
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "admin_required"
