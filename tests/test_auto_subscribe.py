"""Receiving a message subscribes the recipient to the sender's profile (mesibo's automatic
contact sync): issue 5's auto-subscribe, driven by issue 6's messages. Both databases."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from contactsync.server.services import app_settings
from contactsync.server.store.tables import relations
from tests.conftest import Api
from tests.test_conversations import add_book_entry, block, dm, group, person, send

H = dict[str, str]


async def relation(api: Api, headers: H, other: int) -> dict[str, Any]:
    r = await api.client.get(f"/v1/relations/{other}", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def subscribed(rel: dict[str, Any]) -> bool:
    return bool(rel["subscribe"])


async def profile_events(api: Api, headers: H) -> list[dict[str, Any]]:
    return [e["data"] for e in await api.events(headers) if e["type"] == "profile.updated"]


async def test_a_group_message_subscribes_every_recipient_once(api: Api) -> None:
    ann, ann_h = await person(api, 101)
    bob, bob_h = await person(api, 102)
    cy, cy_h = await person(api, 103)
    for member in (bob, cy):  # they know ann, so her group's messages reach them
        await add_book_entry(api, member, "+14155550101")
    g = await group(api, ann_h, [bob, cy])
    await send(api, ann_h, g["id"], "hello", "m1")
    for headers in (bob_h, cy_h):
        rel = await relation(api, headers, ann)
        assert rel["subscribe"] is True and rel["contact"] is False
    assert not subscribed(await relation(api, ann_h, bob))  # the sender subscribes to nobody
    await send(api, ann_h, g["id"], "again", "m2")  # nothing new to do the second time
    # Subscribed, they now hear the sender's public profile changes.
    await api.client.patch(
        "/v1/me/profile", headers=ann_h, json={"fields": {"status": {"value": "busy", "level": 0}}}
    )
    for headers in (bob_h, cy_h):
        assert [d["fields"] for d in await profile_events(api, headers)] == [{"status": "busy"}]


async def test_existing_contacts_keep_their_levels(api: Api) -> None:
    ann, ann_h = await person(api, 101)
    bob, bob_h = await person(api, 102)
    r = await api.client.put(
        f"/v1/relations/{ann}",
        headers=bob_h,
        json={"contact": True, "subscribe": False, "access_levels": [3]},
    )
    assert r.status_code == 200, r.text
    c = await dm(api, ann_h, bob)
    await send(api, ann_h, c["id"], "hi", "m1")
    rel = await relation(api, bob_h, ann)
    assert (rel["contact"], rel["subscribe"], rel["access_levels"]) == (True, True, [3])


async def test_not_across_a_block_and_not_when_turned_off(api: Api) -> None:
    ann, ann_h = await person(api, 101)
    bob, bob_h = await person(api, 102)
    cy, cy_h = await person(api, 103)
    for member in (bob, cy):
        await add_book_entry(api, member, "+14155550101")
    g = await group(api, ann_h, [bob, cy])
    await block(api, bob, ann)
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"auto_subscribe_on_message": True})
    await send(api, ann_h, g["id"], "hello", "m1")
    async with api.ctx.read() as tx:  # bob cannot even look ann up now (policy.learnable)
        found = await tx.conn.scalar(sa.select(sa.func.count()).where(relations.c.owner_id == bob))
    assert found == 0
    assert subscribed(await relation(api, cy_h, ann))
    dan, dan_h = await person(api, 104)
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"auto_subscribe_on_message": False})
    c = await dm(api, ann_h, dan)
    await send(api, ann_h, c["id"], "hi", "m2")
    assert not subscribed(await relation(api, dan_h, ann))
