"""The WebSocket event stream: replay then live, in order, no gap, no duplicate; auth, bad
input, heartbeats, slow clients, several devices. A real server on a loopback socket, on
SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from contactsync.server.config import Settings
from contactsync.server.services import private_discovery
from contactsync.server.ws import Connection, ConnState, IllegalTransition, parse_after
from tests.live import Live, emit, eventually, recv, recv_events, serve


@pytest.fixture
async def live(settings: Settings) -> AsyncIterator[Live]:
    settings.ws_auth_timeout_seconds = 1.0
    async with serve(settings) as server:
        yield server


async def user(live: Live, phone: str, device: str = "phone-1") -> tuple[int, dict[str, str]]:
    created, headers = await live.api.user_with_token(phone, device_id=device)
    return int(created["user_id"]), headers


async def closed_with(ws: Any) -> tuple[dict[str, Any] | None, int | None, str]:
    """Read to the end: the error frame (if any), the close code and reason."""
    error = None
    try:
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["op"] == "error":
                error = frame["error"]
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        return error, (rcvd.code if rcvd else None), (rcvd.reason if rcvd else "")


async def test_replays_then_pushes_live_in_order(live: Live) -> None:
    uid, headers = await user(live, "+14155550101")
    await emit(live.ctx, uid, 3)
    async with live.connect(headers, after=0) as ws:
        ready = await recv(ws)
        assert ready == {
            "op": "ready",
            "user_id": uid,
            "after": 0,
            "last_seq": 3,
            "heartbeat": 25.0,
            # the private-discovery filter as it stands (two users joined: versions 1 and 2)
            "discovery": {"version": 2, "key_version": 1},
        }
        replay = await recv_events(ws, 3)
        assert [e["seq"] for e in replay] == [1, 2, 3]
        assert replay[0]["type"] == "sync.requested" and replay[0]["data"] == {"n": 0}
        assert replay[0]["at"].endswith("Z")
        await emit(live.ctx, uid, 2)
        assert [e["seq"] for e in await recv_events(ws, 5)] == [4, 5]
    # The same events as GET /v1/events, field for field.
    listed = await live.api.events(headers)
    assert [{k: e[k] for k in ("seq", "type", "at", "data")} for e in replay] == listed[:3]


async def test_a_join_pushes_discovery_changed_to_every_socket(live: Live) -> None:
    _, first = await user(live, "+14155550103")
    _, second = await user(live, "+14155550104")
    async with live.connect(first) as one, live.connect(second) as two:
        version = (await recv(one))["discovery"]["version"]
        await recv(two)
        await live.api.create_user("+14155550105")
        for ws in (one, two):
            assert await recv(ws) == {
                "op": "discovery.changed",
                "version": version + 1,
                "key_version": 1,
            }
    # With no socket open the server does not follow the filter, and the next socket's
    # `ready` is as current all the same.
    await live.api.create_user("+14155550106")
    async with live.connect(first) as again:
        assert (await recv(again))["discovery"] == {"version": version + 2, "key_version": 1}


async def test_resumes_after_the_given_seq(live: Live) -> None:
    uid, headers = await user(live, "+14155550102")
    await emit(live.ctx, uid, 5)
    async with live.connect(headers, after=3) as ws:
        assert (await recv(ws))["last_seq"] == 5
        assert [e["seq"] for e in await recv_events(ws, 5)] == [4, 5]
    async with live.connect(headers, after=5) as ws:
        await recv(ws)
        await emit(live.ctx, uid, 1)
        assert [e["seq"] for e in await recv_events(ws, 6)] == [6]


async def test_token_in_first_frame(live: Live) -> None:
    uid, headers = await user(live, "+14155550103")
    token = headers["Authorization"].split(" ", 1)[1]
    await emit(live.ctx, uid, 1)
    async with live.connect(None, after=None) as ws:
        await ws.send(json.dumps({"op": "auth", "token": token}))
        assert (await recv(ws))["op"] == "ready"
        assert [e["seq"] for e in await recv_events(ws, 1)] == [1]


async def test_no_gap_and_no_duplicate_while_events_arrive_during_replay(live: Live) -> None:
    uid, headers = await user(live, "+14155550104")
    await emit(live.ctx, uid, 600)

    async def writer() -> None:
        for _ in range(60):
            await emit(live.ctx, uid, 5)
            await asyncio.sleep(0)

    async with live.connect(headers, after=0) as ws:
        writing = asyncio.create_task(writer())
        got = await recv_events(ws, 900, timeout=60)
        await writing
    assert [e["seq"] for e in got] == list(range(1, 901))


async def test_sockets_and_deliveries_are_counted(live: Live) -> None:
    metrics = live.ctx.services.metrics

    def delivered() -> float:
        return metrics.events_delivered.labels("ws")._value.get()

    uid, headers = await user(live, "+14155550109")
    before = delivered()
    await emit(live.ctx, uid, 2)
    async with live.connect(headers, after=0) as ws:
        await recv(ws)
        await recv_events(ws, 2)
        assert metrics.live_sockets._value.get() == 1
        assert delivered() - before == 2
    await eventually(lambda: metrics.live_sockets._value.get() == 0)


async def test_every_device_of_a_user_gets_every_event(live: Live) -> None:
    uid, phone = await user(live, "+14155550105")
    laptop = await live.api.token(uid, "laptop")
    async with live.connect(phone) as a, live.connect(laptop) as b:
        await recv(a)
        await recv(b)
        for _ in range(3):
            await emit(live.ctx, uid, 2)
        assert [e["seq"] for e in await recv_events(a, 6)] == [1, 2, 3, 4, 5, 6]
        assert [e["seq"] for e in await recv_events(b, 6)] == [1, 2, 3, 4, 5, 6]
        assert await live.ctx.bus.online([uid, uid + 1000]) == {uid}
    await eventually(lambda: len(live.ctx.services.ws) == 0)
    assert await live.ctx.bus.online([uid]) == set()


async def test_a_registration_reaches_the_holders_socket(live: Live) -> None:
    holder, headers = await user(live, "+14155550106")
    response = await live.api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": "+14155550199", "name": "Zoë"}]},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    async with live.connect(headers) as ws:
        await recv(ws)
        joined = await live.api.create_user("+14155550199")
        [event] = await recv_events(ws, 1)
    assert event["type"] == "contact.joined"
    assert event["data"] == {"user_id": joined["user_id"], "phone": "+14155550199", "name": "Zoë"}


async def test_one_read_for_many_sockets_woken_together(live: Live) -> None:
    users = [await user(live, f"+1415555{1100 + i:04d}") for i in range(20)]
    sockets = [await live.connect(h).__aenter__() for _, h in users]
    try:
        for ws in sockets:
            await recv(ws)
        hub = live.ctx.services.ws
        await eventually(
            lambda: len(hub) == 20 and all(c.state is ConnState.LIVE for c in hub.connections)
        )
        before = hub.feed.statements
        async with live.ctx.tx() as tx:
            from contactsync.server.services import events

            await events.append(tx, [events.NewEvent(u, "sync.requested", {}) for u, _ in users])
        for ws in sockets:
            assert [e["seq"] for e in await recv_events(ws, 1)] == [1]
        # 20 sockets woken by one commit: their reads share a statement or two, not 20.
        assert hub.feed.statements - before <= 3
    finally:
        for ws in sockets:
            await ws.close()


async def test_heartbeat_and_client_ping(settings: Settings) -> None:
    settings.ws_heartbeat_seconds = 0.2
    async with serve(settings) as live:
        _, headers = await user(live, "+14155550107")
        async with live.connect(headers) as ws:
            assert (await recv(ws))["heartbeat"] == 0.2
            assert await recv(ws, timeout=2) == {"op": "ping"}
            await ws.send(json.dumps({"op": "ping"}))
            frame = await recv(ws)
            while frame == {"op": "ping"}:
                frame = await recv(ws)
            assert frame == {"op": "pong"}


async def test_a_lost_wake_up_only_delays_an_event(settings: Settings) -> None:
    settings.ws_heartbeat_seconds = 0.1
    settings.ws_reauth_seconds = 0.3
    async with serve(settings) as live:
        uid, headers = await user(live, "+14155550114")
        async with live.connect(headers) as ws:
            await recv(ws)
            # Written without telling the bus, as if the writer died before publishing.
            async with live.ctx.db.write() as conn:
                from contactsync.server.context import Tx
                from contactsync.server.services import events

                await events.append(
                    Tx(conn, live.ctx.db.dialect, 1), [events.NewEvent(uid, "sync.requested", {})]
                )
            assert [e["seq"] for e in await recv_events(ws, 1, timeout=5)] == [1]


async def test_sockets_per_user_are_capped(settings: Settings) -> None:
    settings.ws_max_sockets_per_user = 2
    async with serve(settings) as live:
        _, headers = await user(live, "+14155550113")
        async with live.connect(headers) as one, live.connect(headers) as two:
            await recv(one)
            await recv(two)
            async with live.connect(headers) as three:
                error, code, _ = await closed_with(three)
            assert code == 4429 and error is not None
            assert error["code"] == "too_many_connections" and error["details"] == {"max": 2}
        await eventually(lambda: not live.ctx.services.ws.per_user)
        async with live.connect(headers) as again:
            assert (await recv(again))["op"] == "ready"


async def test_a_revoked_token_ends_the_socket(settings: Settings) -> None:
    settings.ws_heartbeat_seconds = 0.1
    settings.ws_reauth_seconds = 0.2
    async with serve(settings) as live:
        _, headers = await user(live, "+14155550112")
        async with live.connect(headers) as ws:
            await recv(ws)
            assert (
                await live.api.client.delete("/v1/me/session", headers=headers)
            ).status_code == 204
            error, code, _ = await closed_with(ws)
        assert code == 4401 and error is not None and error["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("headers", "first_frame", "reason"),
    [
        ({"Authorization": "Bearer cs_not-a-real-token"}, None, "invalid_token"),
        ({"Authorization": "Basic abc"}, None, None),
        (None, {"op": "auth", "token": "cs_wrong"}, "invalid_token"),
        (None, {"op": "auth"}, None),
        (None, {"op": "ping"}, None),
        (None, None, None),  # says nothing: timed out
    ],
)
async def test_bad_credentials_close_with_4401(
    live: Live,
    headers: dict[str, str] | None,
    first_frame: dict[str, Any] | None,
    reason: str | None,
) -> None:
    async with live.connect(headers, after=None) as ws:
        if first_frame is not None:
            await ws.send(json.dumps(first_frame))
        error, code, close_reason = await closed_with(ws)
    assert code == 4401 and close_reason == "unauthorized"
    assert error is not None and error["code"] == "unauthorized"
    if reason:
        assert error["details"]["reason"] == reason
    assert len(live.ctx.services.ws) == 0


@pytest.mark.parametrize(
    "frame",
    [b"\x00binary", "not json", "[1, 2]", '{"no": "op"}', '{"op": "dance"}', '{"op": 7}'],
)
async def test_malformed_client_frames_close_with_4400(live: Live, frame: str | bytes) -> None:
    _, headers = await user(live, "+14155550108")
    async with live.connect(headers) as ws:
        await recv(ws)
        await ws.send(frame)
        error, code, reason = await closed_with(ws)
    assert (code, reason) == (4400, "invalid_frame")
    assert error is not None and error["code"] == "invalid_frame"


async def test_a_malformed_first_frame_is_refused(live: Live) -> None:
    async with live.connect(None, after=None) as ws:
        await ws.send("{{{")
        error, code, _ = await closed_with(ws)
    assert code == 4400 and error is not None and error["code"] == "invalid_frame"


@pytest.mark.parametrize("after", ["-1", "abc", "1.5", "99999999999999999999"])
async def test_bad_after_closes_with_4422(live: Live, after: str) -> None:
    _, headers = await user(live, "+14155550109")
    async with live.connect(headers, after=after) as ws:
        error, code, reason = await closed_with(ws)
    assert (code, reason) == (4422, "invalid_request")
    assert error is not None and error["details"]["field"] == "after"


async def test_after_beyond_the_end_closes_with_4409(live: Live) -> None:
    uid, headers = await user(live, "+14155550110")
    await emit(live.ctx, uid, 2)
    async with live.connect(headers, after=3) as ws:
        error, code, reason = await closed_with(ws)
    assert (code, reason) == (4409, "after_beyond_end")
    assert error is not None and error["details"] == {"after": 3, "last_seq": 2}


async def test_a_client_that_stops_reading_is_dropped_and_resumes(settings: Settings) -> None:
    settings.ws_send_timeout_seconds = 0.5
    async with serve(settings) as live:
        uid, headers = await user(live, "+14155550111")
        total = 400
        sock = socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        # max_queue=1: the client library stops reading the socket once one frame is waiting.
        ws = await live.connect(headers, sock=sock, max_queue=1).__aenter__()
        try:
            assert (await recv(ws))["op"] == "ready"
            # 16 MB: well past what the kernel buffers on both sides can hold (tcp_wmem's
            # usual maximum is 4 MB), so the server's send must block.
            for _ in range(total // 50):
                await emit(live.ctx, uid, 50, blob="x" * 40_000)
            # The server gives up on it instead of buffering megabytes for it.
            await eventually(lambda: len(live.ctx.services.ws) == 0, timeout=30)
            # only the hub's own watch on the discovery channel is left
            assert live.ctx.bus.watched_users() == {private_discovery.WAKE}
            got: list[int] = []
            try:
                while True:
                    frame = await recv(ws)
                    if frame["op"] == "event":
                        got.append(frame["seq"])
            except ConnectionClosed:
                pass
        finally:
            await ws.close()
        assert got == list(range(1, len(got) + 1)) and len(got) < total
        async with live.connect(headers, after=got[-1] if got else 0) as again:
            await recv(again)
            rest = [e["seq"] for e in await recv_events(again, total, timeout=30)]
        assert got + rest == list(range(1, total + 1))


def test_connection_states_only_move_forward() -> None:
    conn = Connection.__new__(Connection)
    conn.state = ConnState.CONNECTING
    conn.move(ConnState.AUTHENTICATING)
    with pytest.raises(IllegalTransition):
        conn.move(ConnState.LIVE)
    conn.move(ConnState.REPLAYING)
    conn.move(ConnState.LIVE)
    conn.move(ConnState.CLOSING)
    conn.move(ConnState.CLOSED)
    with pytest.raises(IllegalTransition):
        conn.move(ConnState.CLOSING)


def test_parse_after() -> None:
    assert parse_after(None) == 0 and parse_after("") == 0 and parse_after("42") == 42
