"""A blocked user cannot tell that the blocker is registered, nor learn their user id
(issue 13 item 2): on every path that could tell, the blocker answers exactly as a number, or
an id, nobody registered. All of them ask `policy.learnable`. A user hidden by their own
`discoverable_by` (issue 19) looks the same."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api

BLOCKER = "+14155550100"
BLOCKED = "+14155550101"
NOBODY = "+14155550199"  # never registered
NO_ID = 999_999


@pytest.fixture(
    params=[
        "blocker blocked me",
        "I blocked them",
        # the same for a user's own choice (issue 19: discoverable_by)
        "they are discoverable by nobody",
        "they are discoverable by contacts, and I am none",
    ]
)
async def hidden(api: Api, request: pytest.FixtureRequest) -> tuple[int, dict[str, str]]:
    """(the hidden user's id, the headers of the user they must stay hidden from)."""
    blocker, bh = await api.user_with_token(BLOCKER)
    blocked, me = await api.user_with_token(BLOCKED)
    if request.param == "blocker blocked me":
        r = await api.client.put(f"/v1/blocks/{blocked['user_id']}", headers=bh)
    elif request.param == "I blocked them":
        r = await api.client.put(f"/v1/blocks/{blocker['user_id']}", headers=me)
    else:
        level = "nobody" if "nobody" in request.param else "contacts"
        r = await api.client.put("/v1/me/preferences", json={"discoverable_by": level}, headers=bh)
        assert r.status_code == 200, r.text
        return int(blocker["user_id"]), me
    assert r.status_code == 204
    return int(blocker["user_id"]), me


def same(a: Any, b: Any, *swaps: tuple[Any, Any]) -> None:
    """`a` equals `b` once the hidden user's number/id in `a` reads as the unused one."""
    text = repr(a)
    for old, new in swaps:
        text = text.replace(repr(old), repr(new))
    assert text == repr(b)


async def test_relation_by_number(api: Api, hidden: tuple[int, dict[str, str]]) -> None:
    _, me = hidden
    swap = (BLOCKER, NOBODY)
    got = await api.client.get(f"/v1/relations/{BLOCKER}", headers=me)
    want = await api.client.get(f"/v1/relations/{NOBODY}", headers=me)
    assert got.status_code == want.status_code == 200
    same(got.json(), want.json(), swap)
    assert got.json()["user_id"] is None and got.json()["pending"] is True
    got = await api.client.put(f"/v1/relations/{BLOCKER}", json={"subscribe": True}, headers=me)
    want = await api.client.put(f"/v1/relations/{NOBODY}", json={"subscribe": True}, headers=me)
    assert got.status_code == want.status_code == 200
    same(got.json(), want.json(), swap)
    # and the relations listing shows both as pending numbers
    listed = (await api.client.get("/v1/relations", headers=me)).json()["relations"]
    assert [(r["user_id"], r["pending"]) for r in listed] == [(None, True), (None, True)]


async def test_relation_sync_pending_count(api: Api, hidden: tuple[int, dict[str, str]]) -> None:
    _, me = hidden
    r = await api.client.post(
        "/v1/relations/sync",
        headers=me,
        json={"phones": [BLOCKER, NOBODY], "subscribe": True, "access_levels": [], "mode": "merge"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["pending"] == 2 and r.json()["created"] == 2


async def test_relation_and_profile_by_id(api: Api, hidden: tuple[int, dict[str, str]]) -> None:
    uid, me = hidden
    for url in ("/v1/relations/{}", "/v1/users/{}/profile"):
        got = await api.client.get(url.format(uid), headers=me)
        want = await api.client.get(url.format(NO_ID), headers=me)
        assert got.status_code == want.status_code == 404
        same(got.json(), want.json(), (uid, NO_ID))
    got = await api.client.put(f"/v1/relations/{uid}", json={"subscribe": True}, headers=me)
    want = await api.client.put(f"/v1/relations/{NO_ID}", json={"subscribe": True}, headers=me)
    assert got.status_code == want.status_code == 404
    same(got.json(), want.json(), (uid, NO_ID))


async def test_uploads_and_registered_listing(api: Api, hidden: tuple[int, dict[str, str]]) -> None:
    _, me = hidden
    r = await api.client.post(
        "/v1/addressbook",
        headers=me,
        json={"contacts": [{"phone": BLOCKER, "name": "B"}, {"phone": NOBODY, "name": "N"}]},
    )
    assert r.status_code == 200 and r.json()["registered"] == []
    r = await api.client.get("/v1/addressbook/registered", headers=me)
    assert r.status_code == 200
    assert r.json()["users"] == []
    events = await api.events(me)
    assert not [e for e in events if e["type"] == "contacts.registered"]


async def test_conversations_by_id(api: Api, hidden: tuple[int, dict[str, str]]) -> None:
    uid, me = hidden
    for kind in ("dm", "group"):
        got = await api.client.post(
            "/v1/conversations", json={"kind": kind, "members": [uid]}, headers=me
        )
        want = await api.client.post(
            "/v1/conversations", json={"kind": kind, "members": [NO_ID]}, headers=me
        )
        assert got.status_code == want.status_code == 422
        same(got.json(), want.json(), (uid, NO_ID))
    other, _ = await api.user_with_token("+14155550102")
    r = await api.client.post(
        "/v1/conversations", json={"kind": "group", "members": [other["user_id"]]}, headers=me
    )
    assert r.status_code == 201
    gid = r.json()["id"]
    got = await api.client.post(
        f"/v1/conversations/{gid}/members", json={"user_ids": [uid]}, headers=me
    )
    want = await api.client.post(
        f"/v1/conversations/{gid}/members", json={"user_ids": [NO_ID]}, headers=me
    )
    assert got.status_code == want.status_code == 422
    same(got.json(), want.json(), (uid, NO_ID))


async def test_after_an_unblock_the_pending_relation_attaches(api: Api) -> None:
    blocker, bh = await api.user_with_token(BLOCKER)
    blocked, me = await api.user_with_token(BLOCKED)
    r = await api.client.put(f"/v1/blocks/{blocked['user_id']}", headers=bh)
    r = await api.client.put(f"/v1/relations/{BLOCKER}", json={"contact": True}, headers=me)
    assert r.json()["pending"] is True
    r = await api.client.delete(f"/v1/blocks/{blocked['user_id']}", headers=bh)
    assert r.status_code == 204
    r = await api.client.get(f"/v1/relations/{blocker['user_id']}", headers=me)
    assert r.status_code == 200
    assert (r.json()["user_id"], r.json()["pending"], r.json()["contact"]) == (
        blocker["user_id"],
        False,
        True,
    )
