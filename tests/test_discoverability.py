"""Who can find me (`discoverable_by`) and who hears that I joined (`announce_join_to`), in
stored mode on both databases. Every path that reveals registration is covered by
tests/test_blocker_hidden.py, whose hidden user is also one hidden by their own choice; here:
who still finds a `contacts` user, what keeps working for a `nobody` user, the app default,
and the join notices."""

from __future__ import annotations

from typing import Any

from contactsync.server.clock import ManualClock
from tests.conftest import Api

ME, THEM, OTHER = "+14155550100", "+14155550101", "+14155550102"


async def upload(api: Api, headers: dict[str, str], *phones: str) -> list[int]:
    r = await api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": p, "name": p[-4:]} for p in phones]},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return [u["user_id"] for u in r.json()["registered"]]


async def prefs(api: Api, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    r = await api.client.put("/v1/me/preferences", json=changes, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_a_contacts_user_is_found_by_the_users_it_holds_only(api: Api) -> None:
    me, mh = await api.user_with_token(ME)
    them, th = await api.user_with_token(THEM)
    _, oh = await api.user_with_token(OTHER)
    assert (await prefs(api, th, discoverable_by="contacts"))["discoverable_by"] == "contacts"
    assert await upload(api, mh, THEM) == []
    await upload(api, th, ME)  # they hold my number now
    assert await upload(api, mh, THEM) == [them["user_id"]]
    assert await upload(api, oh, THEM) == []
    r = await api.client.get("/v1/addressbook/registered?compact=true", headers=mh)
    assert [u["user_id"] for u in r.json()["users"]] == [them["user_id"]]
    r = await api.client.get("/v1/addressbook/registered?compact=true", headers=oh)
    assert r.json()["users"] == []
    assert me["user_id"] != them["user_id"]


async def test_a_nobody_user_stays_reachable_where_a_conversation_exists(api: Api) -> None:
    me, mh = await api.user_with_token(ME)
    them, th = await api.user_with_token(THEM)
    _, oh = await api.user_with_token(OTHER)
    r = await api.client.post(
        "/v1/conversations", json={"kind": "dm", "members": [them["user_id"]]}, headers=mh
    )
    assert r.status_code == 201, r.text
    chat = r.json()["id"]
    await prefs(api, th, discoverable_by="nobody")
    # strangers cannot tell them from a number nobody registered...
    assert await upload(api, oh, THEM) == []
    r = await api.client.get(f"/v1/users/{them['user_id']}/profile", headers=oh)
    assert r.status_code == 404
    # ...but the chat goes on, and its member is still a user to me
    r = await api.client.post(
        f"/v1/conversations/{chat}/messages",
        json={"body": "still there?", "client_msg_id": "m1"},
        headers=mh,
    )
    assert r.status_code in (200, 201), r.text
    r = await api.client.get(f"/v1/users/{them['user_id']}/profile", headers=mh)
    assert r.status_code == 200
    assert await upload(api, mh, THEM) == [them["user_id"]]


async def test_the_app_default_applies_to_users_who_did_not_choose(api: Api) -> None:
    _, mh = await api.user_with_token(ME)
    them, th = await api.user_with_token(THEM)
    other = await api.create_user(OTHER)
    r = await api.client.put(
        "/v1/admin/settings", json={"discoverable_by_default": "nobody"}, headers=api.admin
    )
    assert r.status_code == 200 and r.json()["discoverable_by_default"] == "nobody"
    assert (await prefs(api, th))["discoverable_by"] is None  # follows the default
    assert await upload(api, mh, THEM, OTHER) == []
    await prefs(api, th, discoverable_by="everybody")
    assert await upload(api, mh, THEM, OTHER) == [them["user_id"]]
    assert other["user_id"] not in await upload(api, mh, OTHER)
    r = await api.client.put(
        "/v1/admin/settings", json={"discoverable_by_default": "sometimes"}, headers=api.admin
    )
    assert r.status_code == 422
    r = await api.client.put("/v1/me/preferences", json={"discoverable_by": "all"}, headers=mh)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


async def joined(api: Api, headers: dict[str, str]) -> list[int]:
    return [
        e["data"]["user_id"] for e in await api.events(headers) if e["type"] == "contact.joined"
    ]


async def test_announce_join_to_chooses_who_hears_x_joined(api: Api) -> None:
    me, mh = await api.user_with_token(ME)
    _, oh = await api.user_with_token(OTHER)
    for who in (mh, oh):
        await upload(api, who, "+14155550111", "+14155550112", "+14155550113", "+14155550114")
    r = await api.client.post("/v1/admin/users", json={"phone": "+14155550111"}, headers=api.admin)
    everybody = r.json()["user_id"]
    r = await api.client.post(
        "/v1/admin/users",
        json={"phone": "+14155550112", "announce_join_to": "nobody"},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    nobody = r.json()["user_id"]
    # "contacts": mutual; a brand-new user holds no one, unless a relation says so first
    r = await api.client.post(
        "/v1/admin/users",
        json={"phone": "+14155550113", "announce_join_to": "contacts"},
        headers=api.admin,
    )
    contacts = r.json()["user_id"]
    r = await api.client.post(
        "/v1/admin/users",
        json={"phone": "+14155550114", "discoverable_by": "nobody"},
        headers=api.admin,
    )
    hidden = r.json()["user_id"]
    for who in (mh, oh):
        assert await joined(api, who) == [everybody]
    r = await api.client.get("/v1/me/preferences", headers=await api.token(nobody))
    assert r.json()["announce_join_to"] == "nobody"
    assert {contacts, hidden}.isdisjoint(await joined(api, mh))
    assert me["user_id"] not in (everybody, nobody)
    r = await api.client.post(
        "/v1/admin/users",
        json={"phone": "+14155550115", "announce_join_to": "some"},
        headers=api.admin,
    )
    assert r.status_code == 422


async def test_announce_join_to_contacts_tells_mutual_contacts_only(api: Api) -> None:
    # ME and OTHER hold the newcomer's number; the newcomer, once its book arrives, holds ME
    # only: ME is a mutual contact and hears "X joined", OTHER (not held back) does not
    me, mh = await api.user_with_token(ME)
    other, oh = await api.user_with_token(OTHER)
    for who in (mh, oh):
        await upload(api, who, THEM)
    r = await api.client.post(
        "/v1/admin/users",
        json={"phone": THEM, "announce_join_to": "contacts"},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    them = r.json()["user_id"]
    # a brand-new user holds nobody: nobody is mutual yet
    assert await joined(api, mh) == [] and await joined(api, oh) == []
    th = await api.token(them)
    assert await upload(api, th, ME) == [me["user_id"]]
    assert await joined(api, mh) == [them]
    assert await joined(api, oh) == []
    # once: the same holder kept in the book, renamed, or in a second book tells no more
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": ME, "name": "Me again"}]}, headers=th
    )
    assert r.status_code == 200, r.text
    await upload(api, th, ME, OTHER)
    assert await joined(api, mh) == [them]
    # OTHER became mutual with this upload: it hears now, a day has not passed yet
    assert await joined(api, oh) == [them]
    assert other["user_id"] != me["user_id"]


async def test_a_contacts_announcement_waits_a_day_at_most(api: Api, clock: ManualClock) -> None:
    _, mh = await api.user_with_token(ME)
    await upload(api, mh, THEM)
    them = (await api.create_user(THEM, announce_join_to="contacts"))["user_id"]
    clock.advance(24 * 3600 + 1)
    await upload(api, await api.token(them), ME)
    assert await joined(api, mh) == []  # a day later it is no join any more


async def test_a_contacts_announcement_follows_a_contact_relation_too_once(api: Api) -> None:
    me, mh = await api.user_with_token(ME)
    await upload(api, mh, THEM)
    them = (await api.create_user(THEM, announce_join_to="contacts"))["user_id"]
    th = await api.token(them)
    r = await api.client.put(f"/v1/relations/{me['user_id']}", json={"contact": True}, headers=th)
    assert r.status_code == 200, r.text
    assert await joined(api, mh) == [them]
    # the book holding me too, or the relation set again, tells me no more
    await upload(api, th, ME)
    r = await api.client.put(f"/v1/relations/{me['user_id']}", json={"contact": True}, headers=th)
    assert r.status_code == 200, r.text
    assert await joined(api, mh) == [them]
