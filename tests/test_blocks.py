"""Blocks (the caller's own) and pairs (backend only), and what they forbid or hide."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from contactsync.errors import Blocked, Restricted
from contactsync.server.services import policy, profiles
from tests.conftest import Api


async def test_block_and_unblock_are_idempotent(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob = await api.create_user("+14155550101")
    cat = await api.create_user("+14155550102")
    a, b, c = ann["user_id"], bob["user_id"], cat["user_id"]
    for target in (b, b, c):
        assert (await api.client.put(f"/v1/blocks/{target}", headers=ah)).status_code == 204
    r = await api.client.get("/v1/blocks", params={"limit": 1}, headers=ah)
    first = r.json()
    assert first["blocked"] == [b] and first["next_cursor"]
    r = await api.client.get("/v1/blocks", params={"cursor": first["next_cursor"]}, headers=ah)
    assert r.json() == {"blocked": [c], "next_cursor": None}
    async with api.ctx.read() as tx:
        assert await policy.blocked_ids(tx, a) == {b, c}
        assert await policy.blocked_ids(tx, b) == {a}
    for _ in range(2):
        assert (await api.client.delete(f"/v1/blocks/{b}", headers=ah)).status_code == 204
    async with api.ctx.read() as tx:
        assert await policy.blocked_ids(tx, a) == {c}


async def test_bad_blocks(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    r = await api.client.put(f"/v1/blocks/{ann['user_id']}", headers=ah)
    assert r.status_code == 422 and r.json()["error"]["code"] == "self_relation"
    r = await api.client.put("/v1/blocks/999999", headers=ah)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.client.put("/v1/blocks/abc", headers=ah)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = await api.client.get("/v1/blocks", params={"cursor": "x"}, headers=ah)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_cursor"
    assert (await api.client.put("/v1/blocks/1")).status_code == 401
    async with api.ctx.read() as tx:
        assert await tx.conn.scalar(sa.text("SELECT count(*) FROM blocks")) == 0


async def test_blocks_forbid_messages_and_hide_profiles_either_way(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob, bh = await api.user_with_token("+14155550101")
    cat, _ = await api.user_with_token("+14155550102")
    a, b, c = ann["user_id"], bob["user_id"], cat["user_id"]
    for h in (ah, bh):
        await api.client.patch(
            "/v1/me/profile", json={"fields": {"name": {"value": "x"}}}, headers=h
        )
    await api.client.put(f"/v1/blocks/{a}", headers=bh)
    async with api.ctx.read() as tx:
        for sender, recipient in ((a, b), (b, a)):
            with pytest.raises(Blocked):
                await policy.check_can_communicate(tx, sender, recipient)
        await policy.check_can_communicate(tx, a, c)
        # The bulk profile read that discovery listings use leaves blocked users out.
        assert await profiles.visible_profiles(tx, a, [b, c]) == {c: {}}
        assert await profiles.visible_profiles(tx, b, [a, c]) == {c: {}}
        assert await profiles.visible_profiles(tx, c, [a, b]) == {
            a: {"name": "x"},
            b: {"name": "x"},
        }
    for viewer, target in ((ah, b), (bh, a)):
        r = await api.client.get(f"/v1/users/{target}/profile", headers=viewer)
        assert r.status_code == 404


async def test_pairs_are_backend_only_and_let_restricted_users_talk(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob = await api.create_user("+14155550101")
    cat = await api.create_user("+14155550102")
    a, b, c = ann["user_id"], bob["user_id"], cat["user_id"]
    r = await api.client.put("/v1/admin/pairs", json={"a": a, "b": b}, headers=ah)
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
    await api.client.patch(f"/v1/admin/users/{a}", json={"restricted": True}, headers=api.admin)
    async with api.ctx.read() as tx:
        with pytest.raises(Restricted):
            await policy.check_can_communicate(tx, a, b)
    for body in ({"a": b, "b": a}, {"a": a, "b": b}):  # either order, idempotent
        r = await api.client.put("/v1/admin/pairs", json=body, headers=api.admin)
        assert r.status_code == 200 and r.json()["paired"] is True
    r = await api.client.get(f"/v1/admin/pairs/{b}", headers=api.admin)
    assert r.json() == {"user_id": b, "paired_with": [a]}
    async with api.ctx.read() as tx:
        await policy.check_can_communicate(tx, a, b)
        await policy.check_can_communicate(tx, b, a)
        with pytest.raises(Restricted):
            await policy.check_can_communicate(tx, c, a)
        # Unrestricted users need no pair.
        await policy.check_can_communicate(tx, b, c)
    for _ in range(2):
        r = await api.client.request(
            "DELETE", "/v1/admin/pairs", json={"a": a, "b": b}, headers=api.admin
        )
        assert r.status_code == 200 and r.json()["paired"] is False
    async with api.ctx.read() as tx:
        with pytest.raises(Restricted):
            await policy.check_can_communicate(tx, a, b)
    # A block wins over a pair.
    await api.client.put("/v1/admin/pairs", json={"a": a, "b": b}, headers=api.admin)
    await api.client.put(f"/v1/blocks/{b}", headers=ah)
    async with api.ctx.read() as tx:
        with pytest.raises(Blocked):
            await policy.check_can_communicate(tx, b, a)


async def test_bad_pairs(api: Api) -> None:
    ann = await api.create_user("+14155550100")
    a = ann["user_id"]
    cases = [
        ({"a": a, "b": a}, 422, "self_relation"),
        ({"a": a, "b": 999999}, 404, "not_found"),
        ({"a": a}, 422, "invalid_request"),
        ({"a": a, "b": "x"}, 422, "invalid_request"),
        ({"a": a, "b": 2, "c": 3}, 422, "invalid_request"),
    ]
    for body, status, code in cases:
        r = await api.client.put("/v1/admin/pairs", json=body, headers=api.admin)
        assert r.status_code == status, body
        assert r.json()["error"]["code"] == code, body
    r = await api.client.get("/v1/admin/pairs/999999", headers=api.admin)
    assert r.status_code == 404
    async with api.ctx.read() as tx:
        assert await tx.conn.scalar(sa.text("SELECT count(*) FROM pairs")) == 0


async def test_blocks_hide_each_from_the_others_discovery(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob, bh = await api.user_with_token("+14155550101")
    cat = await api.create_user("+14155550102")
    a, b = ann["user_id"], bob["user_id"]

    async def found(headers: dict[str, str], numbers: list[str]) -> set[int]:
        r = await api.client.post(
            "/v1/addressbook",
            json={"contacts": [{"phone": n} for n in numbers], "force": True},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        listed = await api.client.get("/v1/addressbook/registered", headers=headers)
        uploaded = {u["user_id"] for u in r.json()["registered"]}
        assert uploaded == {u["user_id"] for u in listed.json()["users"]}
        return uploaded

    assert await found(ah, ["+14155550101", "+14155550102"]) == {b, cat["user_id"]}
    assert await found(bh, ["+14155550100"]) == {a}
    await api.client.put(f"/v1/blocks/{b}", headers=ah)
    assert await found(ah, ["+14155550101", "+14155550102"]) == {cat["user_id"]}
    assert await found(bh, ["+14155550100"]) == set()
    await api.client.delete(f"/v1/blocks/{b}", headers=ah)
    assert await found(bh, ["+14155550100"]) == {a}
