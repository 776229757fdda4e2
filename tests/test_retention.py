"""Event-log retention and a deleted user's data in others' logs (issue 13 item 12).

Time moves only with the injected ManualClock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator

import pytest

from contactsync.server.clock import ManualClock
from contactsync.server.config import Settings
from contactsync.server.services import retention
from tests.conftest import Api
from tests.live import Live, emit, eventually, serve
from tests.test_conversations import group, send
from tests.test_ws import closed_with

DAY = 24 * 3600


async def trim(api_or_ctx: object) -> int:
    ctx = api_or_ctx.ctx  # type: ignore[attr-defined]
    async with ctx.tx() as tx:
        return await retention.trim(tx)


async def test_old_events_are_trimmed_and_a_replay_from_before_says_so(
    api: Api, clock: ManualClock
) -> None:
    user, headers = await api.user_with_token("+14155550100")
    await emit(api.ctx, user["user_id"], 3)
    clock.advance(31 * DAY)
    await emit(api.ctx, user["user_id"], 2)
    assert await trim(api) == 3
    r = await api.client.get("/v1/events?after=0", headers=headers)
    assert r.status_code == 410, r.text
    error = r.json()["error"]
    assert error["code"] == "events_trimmed"
    assert error["details"] == {"after": 0, "trimmed_seq": 3, "last_seq": 5}
    r = await api.client.get("/v1/events?after=2", headers=headers)
    assert r.status_code == 410
    r = await api.client.get("/v1/events?after=3", headers=headers)
    assert r.status_code == 200 and [e["seq"] for e in r.json()["events"]] == [4, 5]
    # the retention period is a setting
    r = await api.client.put(
        "/v1/admin/settings", json={"event_retention_days": 60}, headers=api.admin
    )
    assert r.status_code == 200 and r.json()["event_retention_days"] == 60
    clock.advance(40 * DAY)
    assert await trim(api) == 0
    clock.advance(21 * DAY)
    assert await trim(api) == 2


async def test_a_round_with_nothing_to_trim_takes_no_write_lock(
    api: Api, clock: ManualClock, db_url: str
) -> None:
    # The trimmer's rounds (one at every start, then every interval) mostly find nothing past
    # retention: that is learnt in a read, so no writer waits for it. Here another writer holds
    # SQLite's write lock throughout (PostgreSQL's reads and writes do not exclude each other:
    # there only the answers are checked).
    user, _ = await api.user_with_token("+14155550100")
    await emit(api.ctx, user["user_id"], 2)
    trimmer = api.ctx.services.trimmer
    assert trimmer is not None
    holder = None
    if db_url.startswith("sqlite"):
        holder = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    try:
        assert await asyncio.wait_for(trimmer.round(), timeout=5) == 0
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
    clock.advance(31 * DAY)
    assert await trimmer.round() == 2  # and a round with events past retention trims them


async def test_trimmed_in_the_background(api: Api, clock: ManualClock) -> None:
    user, headers = await api.user_with_token("+14155550100")
    await emit(api.ctx, user["user_id"], 2)
    clock.advance(31 * DAY)
    assert api.ctx.services.trimmer is not None  # the app runs one
    trimmer = retention.Trimmer(api.ctx, interval=0.01)
    await trimmer.start()
    try:
        await eventually(lambda: trimmer.runs >= 1)
    finally:
        await trimmer.stop()
    r = await api.client.get("/v1/events?after=0", headers=headers)
    assert r.status_code == 410


@pytest.fixture
async def live(settings: Settings, clock: ManualClock) -> AsyncIterator[Live]:
    async with serve(settings, clock) as server:
        yield server


async def test_the_websocket_closes_with_4410(live: Live, clock: ManualClock) -> None:
    user, headers = await live.api.user_with_token("+14155550100")
    await emit(live.ctx, user["user_id"], 2)
    clock.advance(31 * DAY)
    await emit(live.ctx, user["user_id"], 1)
    await trim(live)
    async with live.connect(headers, after=1) as ws:
        error, code, reason = await closed_with(ws)
    assert (code, reason) == (4410, "events_trimmed")
    assert error is not None and error["details"]["last_seq"] == 3


async def test_a_deleted_users_data_leaves_other_logs(api: Api) -> None:
    gone_phone, keep_phone = "+14155550100", "+14155550101"
    keep, hk = await api.user_with_token(keep_phone)
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": gone_phone, "name": "Zed"}]}, headers=hk
    )
    assert r.status_code == 200
    gone, hg = await api.user_with_token(gone_phone)  # keep hears "Zed joined"
    r = await api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": gone_phone, "name": "Zed Again"}], "device_id": "tablet"},
        headers=hk,
    )  # contacts.registered with gone
    assert r.json()["registered"]
    dm = await api.client.post(
        "/v1/conversations", json={"kind": "dm", "members": [keep["user_id"]]}, headers=hg
    )
    await send(api, hg, dm.json()["id"], "a secret body", "m1")
    g = await group(api, hg, [keep["user_id"]], name="Secret plan")
    r = await api.client.patch(
        f"/v1/conversations/{g['id']}", json={"description": "Zed's party"}, headers=hg
    )
    assert r.status_code == 200
    before = json.dumps(await api.events(hk))
    for secret in (gone_phone, "Zed", "a secret body", "Secret plan"):
        assert secret in before

    r = await api.client.delete(f"/v1/admin/users/{gone['user_id']}", headers=api.admin)
    assert r.status_code == 204
    log = await api.events(hk)
    after = json.dumps(log)
    for secret in (gone_phone, "Zed", "a secret body", "Secret plan"):
        assert secret not in after, secret
    types = [e["type"] for e in log]
    assert "contact.joined" not in types and "message.created" not in types
    assert types.count("conversation.created") == 2  # kept, without the names
