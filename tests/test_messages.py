"""Messages: server order, idempotent retries, size limits, policy refusals, who is told."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from contactsync.server.services import app_settings
from contactsync.server.store.tables import events, messages
from tests.conftest import Api
from tests.test_conversations import (
    add_book_entry,
    block,
    count,
    dm,
    error,
    group,
    pair,
    person,
    restrict,
    send,
    types,
)


async def test_messages_are_ordered_and_paged_by_server_seq(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    d = await dm(api, ha, b)
    sent = []
    for i in range(7):
        headers = ha if i % 2 == 0 else hb
        sent.append(await send(api, headers, d["id"], f"m{i}", f"c{i}"))
    assert [m["seq"] for m in sent] == list(range(1, 8))
    assert sent[1]["sender_id"] == b and sent[1]["kind"] == "text"
    got, after = [], 0
    while True:
        r = await api.client.get(
            f"/v1/conversations/{d['id']}/messages?after={after}&limit=3", headers=hb
        )
        page = r.json()
        if not page["messages"]:
            assert page["next_after"] == after
            break
        got += page["messages"]
        after = page["next_after"]
    assert [m["body"] for m in got] == [f"m{i}" for i in range(7)]
    assert set(got[0]) >= {"seq", "sender_id", "body", "sent_at", "client_msg_id"}
    r = await api.client.get(f"/v1/conversations/{d['id']}/messages?after=5&limit=1000", headers=ha)
    assert [m["seq"] for m in r.json()["messages"]] == [6, 7]
    for query in ("after=-1", "limit=0", "limit=1001", "after=x"):
        r = await api.client.get(f"/v1/conversations/{d['id']}/messages?{query}", headers=ha)
        assert (r.status_code, error(r)) == (422, "invalid_request"), query


async def test_a_retried_send_returns_the_first_message_and_no_second_event(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    d = await dm(api, ha, b)
    body = {"body": "hello", "client_msg_id": "uuid-1"}
    first = await api.client.post(f"/v1/conversations/{d['id']}/messages", json=body, headers=ha)
    assert first.status_code == 201
    # A retry, even with a changed body, is the same message.
    for retry_body in (body, {"body": "hello again", "client_msg_id": "uuid-1"}):
        again = await api.client.post(
            f"/v1/conversations/{d['id']}/messages", json=retry_body, headers=ha
        )
        assert again.status_code == 200 and again.json() == first.json()
    assert await count(api, messages) == 1
    assert await types(api, hb) == ["conversation.created", "message.created"]
    # The same client_msg_id from the other member is that member's own message.
    other = await send(api, hb, d["id"], "hi", "uuid-1")
    assert other["seq"] == 2


async def test_concurrent_sends_get_gap_free_seqs_and_retries_stay_single(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    d = await dm(api, ha, b)
    results = await asyncio.gather(
        *[send(api, ha if i % 2 else hb, d["id"], f"m{i}", f"c{i}") for i in range(12)],
        *[send(api, ha, d["id"], "dup", "same") for _ in range(6)],
    )
    seqs = sorted(r["seq"] for r in results[:12])
    dup_seqs = {r["seq"] for r in results[12:]}
    assert len(dup_seqs) == 1
    assert sorted([*seqs, *dup_seqs]) == list(range(1, 14))
    assert await count(api, messages) == 13
    created = [e for e in await api.events(hb) if e["type"] == "message.created"]
    assert sorted(e["data"]["seq"] for e in created) == list(range(1, 14))


async def test_empty_oversize_and_malformed_messages_are_refused(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    d = await dm(api, ha, b)
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"max_message_bytes": 10})
    url = f"/v1/conversations/{d['id']}/messages"
    cases = [
        ({"body": "", "client_msg_id": "a"}, 422, "empty_message"),
        ({"body": "  \n\t", "client_msg_id": "a"}, 422, "empty_message"),
        ({"body": "x" * 11, "client_msg_id": "a"}, 413, "message_too_large"),
        ({"body": "éééééé", "client_msg_id": "a"}, 413, "message_too_large"),  # 12 bytes
        ({"body": "hi"}, 422, "invalid_request"),
        ({"client_msg_id": "a"}, 422, "invalid_request"),
        ({"body": "hi", "client_msg_id": ""}, 422, "invalid_request"),
        ({"body": "hi", "client_msg_id": "x" * 65}, 422, "invalid_request"),
        ({"body": "hi", "client_msg_id": "has space"}, 422, "invalid_request"),
        ({"body": 5, "client_msg_id": "a"}, 422, "invalid_request"),
        ({"body": "hi", "client_msg_id": "a", "to": 3}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        r = await api.client.post(url, json=body, headers=ha)
        assert (r.status_code, error(r)) == (status, code), body
    r = await api.client.post(url, json={"body": "x" * 11, "client_msg_id": "a"}, headers=ha)
    assert r.json()["error"]["details"]["max_bytes"] == 10
    r = await api.client.post(url, content=b"{not json", headers=ha)
    assert r.status_code == 422
    assert await count(api, messages) == 0
    assert await types(api, hb) == ["conversation.created"]
    assert (await send(api, ha, d["id"], "x" * 10, "ok"))["seq"] == 1


async def test_blocked_dm_sends_are_refused_and_store_nothing(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    d = await dm(api, ha, b)
    await send(api, ha, d["id"], "before", "m1")
    await block(api, a, b)
    for headers in (ha, hb):
        r = await api.client.post(
            f"/v1/conversations/{d['id']}/messages",
            json={"body": "after", "client_msg_id": "m2"},
            headers=headers,
        )
        assert (r.status_code, error(r)) == (403, "blocked")
    assert await count(api, messages) == 1
    async with api.ctx.read() as tx:
        n = await tx.conn.scalar(
            sa.select(sa.func.count()).select_from(events).where(events.c.type == "message.created")
        )
    assert n == 2  # the first message, to each of them


async def test_restricted_senders_post_only_where_every_member_is_paired(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, hc = await person(api, 3)
    r_id, hr = await person(api, 4)
    g = await group(api, ha, [b, c])
    g2 = await group(api, ha, [b])
    await pair(api, r_id, a)
    await pair(api, r_id, b)
    assert (
        await api.client.post(
            f"/v1/conversations/{g2['id']}/members", json={"user_ids": [r_id]}, headers=ha
        )
    ).status_code == 200
    # r joins g while unrestricted, then the backend restricts r.
    await api.client.post(
        f"/v1/conversations/{g['id']}/members", json={"user_ids": [r_id]}, headers=ha
    )
    await restrict(api, r_id)
    before = await count(api, messages)
    r = await api.client.post(
        f"/v1/conversations/{g['id']}/messages",
        json={"body": "hi", "client_msg_id": "r1"},
        headers=hr,
    )
    assert (r.status_code, error(r)) == (403, "restricted")
    # Nor may the unpaired c post where r would read it.
    r = await api.client.post(
        f"/v1/conversations/{g['id']}/messages",
        json={"body": "hi", "client_msg_id": "c1"},
        headers=hc,
    )
    assert (r.status_code, error(r)) == (403, "restricted")
    assert await count(api, messages) == before
    # In g2 everyone is paired with r: r may post.
    assert (await send(api, hr, g2["id"], "hello", "r2"))["sender_id"] == r_id
    await pair(api, r_id, c)
    assert (await send(api, hr, g["id"], "now ok", "r3"))["kind"] == "text"


async def test_in_a_group_a_block_hides_messages_instead_of_refusing_them(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, hc = await person(api, 3)
    g = await group(api, ha, [b, c])
    await block(api, c, b)
    m = await send(api, hb, g["id"], "from b", "b1")
    assert m["seq"] == 1
    got_a = [e for e in await api.events(ha) if e["type"] == "message.created"]
    got_c = [e for e in await api.events(hc) if e["type"] == "message.created"]
    assert [e["data"]["body"] for e in got_a] == ["from b"] and got_c == []
    await send(api, ha, g["id"], "from a", "a1")
    seen_c = (await api.client.get(f"/v1/conversations/{g['id']}/messages", headers=hc)).json()
    assert [x["body"] for x in seen_c["messages"]] == ["from a"]
    # b does not see c's messages either (blocks work both ways).
    await send(api, hc, g["id"], "from c", "c1")
    seen_b = (await api.client.get(f"/v1/conversations/{g['id']}/messages", headers=hb)).json()
    assert [x["body"] for x in seen_b["messages"]] == ["from b", "from a"]
    assert seen_b["next_after"] == 3  # the cursor moves past what b may not see


async def test_denied_members_get_no_live_events_but_can_read(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, hc = await person(api, 3)
    await add_book_entry(api, b, "+14155550001")  # b knows a: a's group messages reach b
    g = await group(api, ha, [b, c])
    await api.client.put(
        f"/v1/conversations/{g['id']}/consent", json={"state": "denied"}, headers=hc
    )
    await send(api, ha, g["id"], "hi", "a1")
    await api.client.patch(f"/v1/conversations/{g['id']}", json={"name": "n"}, headers=ha)
    assert await types(api, hc) == ["conversation.created", "consent.updated"]
    assert "message.created" in await types(api, hb)
    r = await api.client.get(f"/v1/conversations/{g['id']}/messages", headers=hc)
    assert [m["body"] for m in r.json()["messages"]] == ["hi", None]


async def test_sending_is_consent_and_reaches_the_senders_other_devices(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    hb_laptop = await api.token(b, "laptop")
    d = await dm(api, ha, b)
    assert (await api.client.get(f"/v1/conversations/{d['id']}", headers=hb)).json()[
        "consent"
    ] == "unknown"
    await send(api, hb, d["id"], "reply", "b1")
    assert (await api.client.get(f"/v1/conversations/{d['id']}", headers=hb)).json()[
        "consent"
    ] == "allowed"
    log = await api.events(hb_laptop)
    assert [e["type"] for e in log] == [
        "conversation.created",
        "consent.updated",
        "message.created",
    ]
    assert log[2]["data"]["device_id"] == "phone-1"
    assert log[2]["data"]["client_msg_id"] == "b1"


async def test_nothing_from_a_removed_member_lands_after_the_removal(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, hc = await person(api, 3)
    g = await group(api, ha, [b, c])
    url = f"/v1/conversations/{g['id']}"

    async def b_sends(i: int) -> int:
        r = await api.client.post(
            url + "/messages", json={"body": f"b{i}", "client_msg_id": f"b{i}"}, headers=hb
        )
        return r.status_code

    async def b_renames() -> int:
        return (await api.client.patch(url, json={"name": "b was here"}, headers=hb)).status_code

    async def a_removes_b() -> int:
        return (await api.client.delete(url + f"/members/{b}", headers=ha)).status_code

    results = await asyncio.gather(
        *[b_sends(i) for i in range(6)],
        b_renames(),
        a_removes_b(),
        *[b_sends(i) for i in range(6, 12)],
    )
    assert results[7] == 204
    assert set(results) <= {200, 201, 204, 404}
    timeline = (await api.client.get(url + "/messages?limit=100", headers=hc)).json()["messages"]
    removal = next(
        m["seq"] for m in timeline if (m["data"] or {}).get("change") == "member_removed"
    )
    assert all(m["seq"] < removal for m in timeline if m["sender_id"] == b)
    assert [m["seq"] for m in timeline] == list(range(1, len(timeline) + 1))
    accepted = sum(1 for status in results[:7] + results[8:] if status in (200, 201))
    assert accepted == sum(1 for m in timeline if m["sender_id"] == b)
