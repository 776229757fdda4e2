"""Group fan-out amplification and per-sender limits (issue 13 item 5).

Someone added to a group by a user they have no relation with gets the invitation
(`conversation.created`, consent `unknown`), not the group's message bodies, until they allow
it; members who know the adder, or allowed the group, get messages as before. Every sender is
limited in messages and bytes per minute.
"""

from __future__ import annotations

from contactsync.server.clock import ManualClock
from contactsync.server.services import app_settings
from tests.conftest import Api
from tests.test_conversations import add_book_entry, group, person, send


async def message_bodies(api: Api, headers: dict[str, str]) -> list[str]:
    return [e["data"]["body"] for e in await api.events(headers) if e["type"] == "message.created"]


async def test_a_strangers_group_puts_no_bodies_in_my_log(api: Api) -> None:
    spammer, hs = await person(api, 1)
    stranger, hx = await person(api, 2)
    friend, hf = await person(api, 3)
    contact, hc = await person(api, 4)
    await add_book_entry(api, friend, "+14155550001")  # the friend's book holds the spammer
    r = await api.client.put(f"/v1/relations/{spammer}", json={"contact": True}, headers=hc)
    assert r.status_code == 200  # the contact holds the spammer as a contact
    g = await group(api, hs, [stranger, friend, contact])
    await send(api, hs, g["id"], "x" * 1000, "m1")

    invitation = [e for e in await api.events(hx) if e["type"] == "conversation.created"]
    assert invitation and invitation[0]["data"]["conversation"]["consent"] == "unknown"
    assert await message_bodies(api, hx) == []
    # members with a relation get messages as before
    assert await message_bodies(api, hf) == ["x" * 1000]
    assert await message_bodies(api, hc) == ["x" * 1000]
    # the stranger can still read the group when asking, and no auto-subscription was made
    r = await api.client.get(f"/v1/conversations/{g['id']}/messages", headers=hx)
    assert [m["body"] for m in r.json()["messages"] if m["kind"] == "text"] == ["x" * 1000]
    r = await api.client.get("/v1/relations", headers=hx)
    assert r.json()["relations"] == []

    # once allowed, messages arrive in the log
    r = await api.client.put(
        f"/v1/conversations/{g['id']}/consent", json={"state": "allowed"}, headers=hx
    )
    assert r.status_code == 200
    await send(api, hs, g["id"], "now you", "m2")
    assert await message_bodies(api, hx) == ["now you"]


async def test_a_dm_from_a_stranger_is_still_delivered(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    r = await api.client.post("/v1/conversations", json={"kind": "dm", "members": [b]}, headers=ha)
    await send(api, ha, r.json()["id"], "hello", "m1")
    assert await message_bodies(api, hb) == ["hello"]


async def test_messages_per_minute(api: Api, clock: ManualClock) -> None:
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"send_messages_per_minute": 3})
    a, ha = await person(api, 1)
    b, _ = await person(api, 2)
    g = await group(api, ha, [b])
    for i in range(3):
        await send(api, ha, g["id"], f"m{i}", f"c{i}")
    r = await api.client.post(
        f"/v1/conversations/{g['id']}/messages",
        json={"body": "over", "client_msg_id": "c9"},
        headers=ha,
    )
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "send_rate_limited"
    assert error["details"]["setting"] == "send_messages_per_minute"
    assert r.headers["retry-after"] == "20" == str(error["details"]["retry_after"])
    # a retry of a message already sent is not a new send
    r = await api.client.post(
        f"/v1/conversations/{g['id']}/messages",
        json={"body": "m0", "client_msg_id": "c0"},
        headers=ha,
    )
    assert r.status_code == 200
    r = await api.client.get(f"/v1/conversations/{g['id']}/messages", headers=ha)
    assert [m["body"] for m in r.json()["messages"] if m["kind"] == "text"] == ["m0", "m1", "m2"]
    clock.advance(20)
    await send(api, ha, g["id"], "later", "c10")


async def test_bytes_per_minute(api: Api, clock: ManualClock) -> None:
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"send_bytes_per_minute": 6000})
    a, ha = await person(api, 1)
    b, _ = await person(api, 2)
    g = await group(api, ha, [b])
    await send(api, ha, g["id"], "x" * 5000, "c1")
    r = await api.client.post(
        f"/v1/conversations/{g['id']}/messages",
        json={"body": "y" * 2000, "client_msg_id": "c2"},
        headers=ha,
    )
    assert r.status_code == 429 and r.json()["error"]["details"]["setting"] == (
        "send_bytes_per_minute"
    )
    assert r.json()["error"]["details"]["retry_after"] == 10  # 1000 bytes at 100 a second
    clock.advance(10)
    await send(api, ha, g["id"], "y" * 2000, "c2")
