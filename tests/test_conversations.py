"""Conversations: one DM per pair, groups and their members, consent defaults, policy, 404s."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from contactsync.server.store.tables import (
    blocks,
    conversation_members,
    conversations,
    events,
    messages,
    pairs,
)
from tests.conftest import Api

H = dict[str, str]


# --- helpers shared by the conversation, message and sync tests ----------------------------


async def person(api: Api, n: int, device_id: str = "phone-1") -> tuple[int, H]:
    user, headers = await api.user_with_token(f"+1415555{n:04d}", device_id=device_id)
    return int(user["user_id"]), headers


async def add_book_entry(api: Api, owner: int, phone: str, book: str = "") -> None:
    """Put `phone` in the owner's global book, or in the book of device `book`, through the
    address-book API (a token for a separate device, so the test's own tokens stay valid)."""
    headers = await api.token(owner, "book-writer")
    body: dict[str, Any] = {"contacts": [{"phone": phone, "name": "x"}]}
    if book:
        body["device_id"] = book
    r = await api.client.post("/v1/addressbook", json=body, headers=headers)
    assert r.status_code == 200, r.text


async def block(api: Api, blocker: int, blocked: int) -> None:
    async with api.ctx.tx() as tx:
        await tx.conn.execute(
            sa.insert(blocks).values(blocker_id=blocker, blocked_id=blocked, created_at=tx.now)
        )


async def pair(api: Api, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    async with api.ctx.tx() as tx:
        await tx.conn.execute(sa.insert(pairs).values(a_id=lo, b_id=hi, created_at=tx.now))


async def restrict(api: Api, user_id: int) -> None:
    r = await api.client.patch(
        f"/v1/admin/users/{user_id}", json={"restricted": True}, headers=api.admin
    )
    assert r.status_code == 200, r.text


async def dm(api: Api, headers: H, other: int) -> dict[str, Any]:
    r = await api.client.post(
        "/v1/conversations", json={"kind": "dm", "members": [other]}, headers=headers
    )
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


async def group(api: Api, headers: H, members: list[int], name: str = "g") -> dict[str, Any]:
    r = await api.client.post(
        "/v1/conversations",
        json={"kind": "group", "members": members, "name": name},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def send(
    api: Api, headers: H, conversation_id: int, body: str, client_msg_id: str
) -> dict[str, Any]:
    r = await api.client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"body": body, "client_msg_id": client_msg_id},
        headers=headers,
    )
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


async def types(api: Api, headers: H) -> list[str]:
    return [e["type"] for e in await api.events(headers)]


async def count(api: Api, table: sa.Table) -> int:
    async with api.ctx.read() as tx:
        return int(await tx.conn.scalar(sa.select(sa.func.count()).select_from(table)) or 0)


def error(r: Any) -> str:
    return str(r.json()["error"]["code"])


# --- DMs ------------------------------------------------------------------------------------


async def test_a_pair_has_exactly_one_dm_whoever_creates_it(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    r = await api.client.post("/v1/conversations", json={"kind": "dm", "members": [b]}, headers=ha)
    assert r.status_code == 201
    first = r.json()
    assert first["kind"] == "dm" and first["id"] > 0
    assert [m["user_id"] for m in first["members"]] == sorted([a, b])
    assert first["consent"] == "allowed"  # the creator's own view
    again = await api.client.post(
        "/v1/conversations", json={"kind": "dm", "members": [a]}, headers=hb
    )
    assert again.status_code == 200 and again.json()["id"] == first["id"]
    # Listing the creator too makes no difference.
    same = await dm(api, ha, b)
    assert same["id"] == first["id"]
    assert await count(api, conversations) == 1
    # Only the first create told anyone.
    assert await types(api, ha) == ["conversation.created"]
    events_b = await api.events(hb)
    assert [e["type"] for e in events_b] == ["conversation.created"]
    assert events_b[0]["data"]["conversation"]["id"] == first["id"]
    assert events_b[0]["data"]["conversation"]["consent"] == "unknown"


async def test_concurrent_creates_of_the_same_dm_make_one(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    results = await asyncio.gather(
        *[dm(api, ha, b) for _ in range(4)], *[dm(api, hb, a) for _ in range(4)]
    )
    assert len({r["id"] for r in results}) == 1
    assert await count(api, conversations) == 1
    assert await count(api, conversation_members) == 2


async def test_consent_starts_allowed_for_a_member_whose_book_holds_the_creator(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, hc = await person(api, 3)
    # b has a's number in a per-device book; c has it nowhere (only someone else's number).
    await add_book_entry(api, b, "+14155550001", book="phone-1")
    await add_book_entry(api, c, "+14155559999")
    g = await group(api, ha, [b, c])
    view_b = (await api.client.get(f"/v1/conversations/{g['id']}", headers=hb)).json()
    view_c = (await api.client.get(f"/v1/conversations/{g['id']}", headers=hc)).json()
    assert (g["consent"], view_b["consent"], view_c["consent"]) == ("allowed", "allowed", "unknown")
    # The book of the *creator* is what counts: c starting a DM with a gives a unknown.
    d = await dm(api, hc, a)
    view_a = (await api.client.get(f"/v1/conversations/{d['id']}", headers=ha)).json()
    assert view_a["consent"] == "unknown" and d["consent"] == "allowed"


async def test_a_member_who_denies_strangers_gets_no_event(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    r = await api.client.put(
        "/v1/me/preferences", json={"consent_from_others": "denied"}, headers=hb
    )
    assert r.status_code == 200
    d = await dm(api, ha, b)
    assert await types(api, hb) == ["preferences.updated"]
    view = (await api.client.get(f"/v1/conversations/{d['id']}", headers=hb)).json()
    assert view["consent"] == "denied"


async def test_bad_dm_requests_are_refused_and_store_nothing(api: Api) -> None:
    a, ha = await person(api, 1)
    b, _ = await person(api, 2)
    c, _ = await person(api, 3)
    cases = [
        ({"kind": "dm", "members": [b, c]}, 422, "invalid_request"),
        ({"kind": "dm", "members": []}, 422, "invalid_request"),
        ({"kind": "dm", "members": [a]}, 422, "invalid_request"),
        ({"kind": "dm", "members": [b], "name": "x"}, 422, "not_a_group"),
        ({"kind": "dm", "members": [9999]}, 422, "unknown_users"),
        ({"kind": "dm", "members": [0]}, 422, "invalid_request"),
        ({"kind": "dm", "members": [2**63]}, 422, "invalid_request"),
        ({"kind": "dm", "members": ["x"]}, 422, "invalid_request"),
        ({"kind": "chat", "members": [b]}, 422, "invalid_request"),
        ({"kind": "dm", "members": [b], "extra": 1}, 422, "invalid_request"),
        ({"kind": "group", "members": [b], "name": "x" * 201}, 422, "invalid_request"),
        ({"kind": "group", "members": [b, 12345]}, 422, "unknown_users"),
    ]
    for body, status, code in cases:
        r = await api.client.post("/v1/conversations", json=body, headers=ha)
        assert (r.status_code, error(r)) == (status, code), body
    unknown = await api.client.post(
        "/v1/conversations", json={"kind": "dm", "members": [9999]}, headers=ha
    )
    assert unknown.json()["error"]["details"] == {"user_ids": [9999]}
    assert (await api.client.post("/v1/conversations", json={"kind": "dm"})).status_code == 401
    assert await count(api, conversations) == 0
    assert await count(api, events) == 0


async def test_blocked_pairs_cannot_dm_either_way(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    await block(api, b, a)
    for headers, other in ((ha, b), (hb, a)):
        r = await api.client.post(
            "/v1/conversations", json={"kind": "dm", "members": [other]}, headers=headers
        )
        # to each other they look like ids nobody has (policy.learnable)
        assert (r.status_code, error(r)) == (422, "unknown_users")
        assert r.json()["error"]["details"] == {"user_ids": [other]}
    assert await count(api, conversations) == 0 and await count(api, events) == 0


async def test_a_restricted_user_only_dms_paired_users(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, _ = await person(api, 3)
    await restrict(api, a)
    await pair(api, a, b)
    r = await api.client.post("/v1/conversations", json={"kind": "dm", "members": [c]}, headers=ha)
    assert (r.status_code, error(r)) == (403, "restricted")
    # Nor can anyone unpaired start one with the restricted user.
    _, hc = await person(api, 4)
    r = await api.client.post("/v1/conversations", json={"kind": "dm", "members": [a]}, headers=hc)
    assert (r.status_code, error(r)) == (403, "restricted")
    assert await count(api, conversations) == 0
    assert (await dm(api, ha, b))["kind"] == "dm"


# --- groups ---------------------------------------------------------------------------------


async def test_group_lifecycle_name_members_and_events(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, hc = await person(api, 3)
    r = await api.client.post(
        "/v1/conversations",
        json={"kind": "group", "members": [b, a], "name": " Trip ", "description": "June"},
        headers=ha,
    )
    assert r.status_code == 201
    g = r.json()
    assert (g["name"], g["description"], g["role"]) == ("Trip", "June", "admin")
    assert {m["user_id"]: m["role"] for m in g["members"]} == {a: "admin", b: "member"}
    await send(api, ha, g["id"], "before c", "m1")

    r = await api.client.patch(
        f"/v1/conversations/{g['id']}", json={"name": "Trip 2026"}, headers=hb
    )
    assert r.status_code == 200 and r.json()["name"] == "Trip 2026"
    assert r.json()["description"] == "June"
    r = await api.client.post(
        f"/v1/conversations/{g['id']}/members", json={"user_ids": [c, b]}, headers=hb
    )
    assert r.status_code == 200
    assert sorted(m["user_id"] for m in r.json()["members"]) == sorted([a, b, c])

    # c sees the conversation from the message that added them on, not the earlier message.
    seen = (await api.client.get(f"/v1/conversations/{g['id']}/messages", headers=hc)).json()
    assert [(m["kind"], m["data"]["change"]) for m in seen["messages"]] == [
        ("system", "members_added")
    ]
    assert seen["messages"][0]["data"]["user_ids"] == [c]
    created = [e for e in await api.events(hc) if e["type"] == "conversation.created"]
    assert created[0]["data"]["conversation"]["name"] == "Trip 2026"

    # a's timeline: message, rename, add; a's log: created, message, updated twice.
    timeline = (await api.client.get(f"/v1/conversations/{g['id']}/messages", headers=ha)).json()
    assert [m["seq"] for m in timeline["messages"]] == [1, 2, 3]
    assert timeline["messages"][1]["data"] == {"change": "updated", "by": b, "name": "Trip 2026"}
    log_a = await api.events(ha)
    assert [e["type"] for e in log_a] == [
        "conversation.created",
        "message.created",
        "conversation.updated",
        "conversation.updated",
    ]
    assert log_a[3]["data"]["change"] == "members_added"

    # A plain member may not remove others; anyone may leave; the admin removes.
    r = await api.client.delete(f"/v1/conversations/{g['id']}/members/{a}", headers=hc)
    assert (r.status_code, error(r)) == (403, "not_group_admin")
    assert (
        await api.client.delete(f"/v1/conversations/{g['id']}/members/{c}", headers=hc)
    ).status_code == 204
    assert (
        await api.client.delete(f"/v1/conversations/{g['id']}/members/{b}", headers=ha)
    ).status_code == 204
    # The removed members learnt it, then lost access.
    removed = [e for e in await api.events(hb) if e["type"] == "conversation.updated"]
    assert removed[-1]["data"]["change"] == "member_removed"
    assert removed[-1]["data"]["user_ids"] == [b]
    r = await api.client.get(f"/v1/conversations/{g['id']}", headers=hb)
    assert (r.status_code, error(r)) == (404, "conversation_not_found")
    final = (await api.client.get(f"/v1/conversations/{g['id']}", headers=ha)).json()
    assert [m["user_id"] for m in final["members"]] == [a]
    # A retried removal changes nothing and tells no one.
    before = len(await api.events(ha))
    r = await api.client.delete(f"/v1/conversations/{g['id']}/members/{b}", headers=ha)
    assert r.status_code == 204
    assert len(await api.events(ha)) == before


async def test_group_adds_respect_blocks_and_restrictions(api: Api) -> None:
    a, ha = await person(api, 1)
    b, _ = await person(api, 2)
    c, _ = await person(api, 3)
    d, _ = await person(api, 4)
    await block(api, c, a)
    r = await api.client.post(
        "/v1/conversations", json={"kind": "group", "members": [b, c]}, headers=ha
    )
    assert (r.status_code, error(r)) == (422, "unknown_users")  # as an id nobody has
    assert await count(api, conversations) == 0
    g = await group(api, ha, [b])
    r = await api.client.post(
        f"/v1/conversations/{g['id']}/members", json={"user_ids": [c]}, headers=ha
    )
    assert (r.status_code, error(r)) == (422, "unknown_users")
    # A restricted user may join only if paired with every member.
    await restrict(api, d)
    await pair(api, d, a)
    r = await api.client.post(
        f"/v1/conversations/{g['id']}/members", json={"user_ids": [d]}, headers=ha
    )
    assert (r.status_code, error(r)) == (403, "restricted")
    assert await count(api, conversation_members) == 2
    assert await count(api, messages) == 0
    await pair(api, d, b)
    r = await api.client.post(
        f"/v1/conversations/{g['id']}/members", json={"user_ids": [d]}, headers=ha
    )
    assert r.status_code == 200


async def test_dm_has_no_name_or_member_changes(api: Api) -> None:
    a, ha = await person(api, 1)
    b, _ = await person(api, 2)
    c, _ = await person(api, 3)
    d = await dm(api, ha, b)
    for method, path, body in (
        ("PATCH", f"/v1/conversations/{d['id']}", {"name": "x"}),
        ("POST", f"/v1/conversations/{d['id']}/members", {"user_ids": [c]}),
        ("DELETE", f"/v1/conversations/{d['id']}/members/{b}", None),
    ):
        r = await api.client.request(method, path, json=body, headers=ha)
        assert (r.status_code, error(r)) == (422, "not_a_group"), path


async def test_non_members_and_bad_ids_learn_nothing(api: Api) -> None:
    a, ha = await person(api, 1)
    b, _ = await person(api, 2)
    _, hx = await person(api, 3)
    d = await dm(api, ha, b)
    await send(api, ha, d["id"], "secret", "m1")
    missing = d["id"] + 1000
    for conversation_id in (d["id"], missing):
        base = f"/v1/conversations/{conversation_id}"
        for method, path, body in (
            ("GET", base, None),
            ("PATCH", base, {"name": "x"}),
            ("GET", base + "/messages", None),
            ("POST", base + "/messages", {"body": "hi", "client_msg_id": "x1"}),
            ("PUT", base + "/consent", {"state": "allowed"}),
            ("POST", base + "/members", {"user_ids": [b]}),
            ("DELETE", base + f"/members/{b}", None),
        ):
            r = await api.client.request(method, path, json=body, headers=hx)
            assert r.status_code == 404, (method, path)
            assert r.json()["error"] == {
                "code": "conversation_not_found",
                "message": "No such conversation.",
                "details": {"conversation_id": conversation_id},
            }
    for bad in ("abc", "0", "-1", str(2**63), "1.5"):
        r = await api.client.get(f"/v1/conversations/{bad}", headers=ha)
        assert (r.status_code, error(r)) == (422, "invalid_request"), bad
    assert await count(api, messages) == 1


async def test_consent_changes_are_the_members_own_and_reach_their_devices(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    hb2 = await api.token(b, "laptop")
    d = await dm(api, ha, b)
    r = await api.client.put(
        f"/v1/conversations/{d['id']}/consent", json={"state": "denied"}, headers=hb
    )
    assert r.status_code == 200 and r.json()["consent"] == "denied"
    # Both of b's devices read the same log; the event names the device that changed it.
    last = (await api.events(hb2))[-1]
    assert last["type"] == "consent.updated"
    assert last["data"] == {"conversation_id": d["id"], "state": "denied", "device_id": "phone-1"}
    # a's view is unchanged and a was not told.
    assert (await api.client.get(f"/v1/conversations/{d['id']}", headers=ha)).json()[
        "consent"
    ] == "allowed"
    assert await types(api, ha) == ["conversation.created"]
    # Setting the same state again tells no one.
    await api.client.put(
        f"/v1/conversations/{d['id']}/consent", json={"state": "denied"}, headers=hb
    )
    assert len(await api.events(hb)) == 2
    r = await api.client.put(
        f"/v1/conversations/{d['id']}/consent", json={"state": "maybe"}, headers=hb
    )
    assert (r.status_code, error(r)) == (422, "invalid_request")


async def test_list_filters_by_consent_and_pages_by_change(api: Api, clock: Any) -> None:
    a, ha = await person(api, 1)
    ids = []
    for n in range(2, 7):
        other, _ = await person(api, n)
        await add_book_entry(api, other, "+14155550001")
        ids.append((await dm(api, ha, other))["id"])
        clock.advance(1)
    # A stranger's DM with a is "unknown" for a.
    _, hs = await person(api, 50)
    stranger = await dm(api, hs, a)
    r = await api.client.get("/v1/conversations?consent=allowed", headers=ha)
    assert [c["id"] for c in r.json()["conversations"]] == ids
    r = await api.client.get("/v1/conversations", headers=ha)  # default allowed,unknown
    assert [c["id"] for c in r.json()["conversations"]] == [*ids, stranger["id"]]

    seen: list[int] = []
    cursor = None
    while True:
        url = "/v1/conversations?limit=2&consent=allowed,unknown"
        if cursor:
            url += f"&cursor={cursor}"
        page = (await api.client.get(url, headers=ha)).json()
        seen += [c["id"] for c in page["conversations"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [*ids, stranger["id"]]

    # A message moves a conversation to the end; updated_after returns only what changed.
    mark = max(c["updated_at"] for c in r.json()["conversations"])
    clock.advance(10)
    await send(api, ha, ids[0], "hi", "m1")
    r = await api.client.get(f"/v1/conversations?updated_after={mark}", headers=ha)
    assert [c["id"] for c in r.json()["conversations"]] == [ids[0]]
    assert r.json()["conversations"][0]["last_seq"] == 1
    for query, code in (
        ("consent=bogus", "invalid_request"),
        ("consent=", "invalid_request"),
        ("cursor=not-a-cursor", "invalid_cursor"),
        ("updated_after=-1", "invalid_request"),
        ("limit=0", "invalid_request"),
    ):
        r = await api.client.get(f"/v1/conversations?{query}", headers=ha)
        assert (r.status_code, error(r)) == (422, code), query


async def test_deleting_a_user_deletes_their_messages_and_membership(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    c, _ = await person(api, 3)
    d = await dm(api, ha, b)
    g = await group(api, hb, [a, c])
    await send(api, ha, d["id"], "from a", "a1")
    await send(api, hb, d["id"], "from b", "b1")
    await send(api, hb, g["id"], "group b", "b2")
    assert (await api.client.delete(f"/v1/admin/users/{b}", headers=api.admin)).status_code == 204
    r = await api.client.get(f"/v1/conversations/{d['id']}/messages", headers=ha)
    assert [m["body"] for m in r.json()["messages"]] == ["from a"]
    view = (await api.client.get(f"/v1/conversations/{g['id']}", headers=ha)).json()
    assert sorted(m["user_id"] for m in view["members"]) == sorted([a, c])
    assert view["created_by"] is None
    # The pair's DM stays unique even though b is gone: a new b is a new user.
    b2, _ = await person(api, 2)
    assert b2 != b and (await dm(api, ha, b2))["id"] != d["id"]
    async with api.ctx.read() as tx:
        left = await tx.conn.scalar(
            sa.select(sa.func.count()).select_from(messages).where(messages.c.sender_id == b)
        )
    assert left == 0


async def test_big_groups_events_carry_the_count_not_the_member_list(api: Api) -> None:
    a, ha = await person(api, 1)
    others = [int((await api.create_user(f"+1415556{n:04d}"))["user_id"]) for n in range(101)]
    g = await group(api, ha, others)
    assert g["member_count"] == 102 and len(g["members"]) == 102
    hb = await api.token(others[0])
    created = (await api.events(hb))[0]["data"]["conversation"]
    assert created["member_count"] == 102 and "members" not in created
    small = await group(api, ha, others[:3])
    created = (await api.events(hb))[-1]["data"]["conversation"]
    assert created["id"] == small["id"] and len(created["members"]) == 4
    r = await api.client.post(
        "/v1/conversations",
        json={"kind": "group", "members": list(range(1, 1002))},
        headers=ha,
    )
    assert (r.status_code, error(r)) == (422, "invalid_request")


async def test_a_change_waiting_on_a_removal_sees_that_the_actor_is_gone(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    g = await group(api, ha, [b])
    async with api.ctx.tx() as tx:
        # What a removal does: lock the conversation, delete the membership...
        await tx.conn.execute(
            sa.select(conversations.c.id).where(conversations.c.id == g["id"]).with_for_update()
        )
        await tx.conn.execute(
            sa.delete(conversation_members).where(
                conversation_members.c.conversation_id == g["id"],
                conversation_members.c.user_id == b,
            )
        )
        # ...while b's rename and send queue on the lock.
        rename = asyncio.create_task(
            api.client.patch(f"/v1/conversations/{g['id']}", json={"name": "x"}, headers=hb)
        )
        post = asyncio.create_task(
            api.client.post(
                f"/v1/conversations/{g['id']}/messages",
                json={"body": "x", "client_msg_id": "late"},
                headers=hb,
            )
        )
        await asyncio.sleep(0.3)
    assert (await rename).status_code == 404
    assert (await post).status_code == 404
    view = (await api.client.get(f"/v1/conversations/{g['id']}", headers=ha)).json()
    assert view["name"] == "g" and view["last_seq"] == 0


async def test_a_group_create_retried_with_an_idempotency_key_makes_one_group(api: Api) -> None:
    a, ha = await person(api, 1)
    b, hb = await person(api, 2)
    body = {"kind": "group", "members": [b], "name": "once"}
    keyed = {**ha, "Idempotency-Key": "create-1"}
    first = await api.client.post("/v1/conversations", json=body, headers=keyed)
    assert first.status_code == 201
    retries = await asyncio.gather(
        *[api.client.post("/v1/conversations", json=body, headers=keyed) for _ in range(4)]
    )
    assert {(r.status_code, r.json()["id"]) for r in retries} == {(200, first.json()["id"])}
    # Another key, or no key, is another group; b's key is b's own.
    other = await api.client.post(
        "/v1/conversations", json=body, headers={**ha, "Idempotency-Key": "create-2"}
    )
    plain = await api.client.post("/v1/conversations", json=body, headers=ha)
    theirs = await api.client.post(
        "/v1/conversations",
        json={"kind": "group", "members": [a]},
        headers={**hb, "Idempotency-Key": "create-1"},
    )
    ids = {first.json()["id"], other.json()["id"], plain.json()["id"], theirs.json()["id"]}
    assert len(ids) == 4 and await count(api, conversations) == 4
    assert [e["type"] for e in await api.events(hb)].count("conversation.created") == 4
    for bad in ("", "has space", "x" * 65):
        r = await api.client.post(
            "/v1/conversations", json=body, headers={**ha, "Idempotency-Key": bad}
        )
        assert (r.status_code, error(r)) == (422, "invalid_request"), bad
    assert await count(api, conversations) == 4
