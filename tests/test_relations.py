"""Relations by user id or number, replace versus merge, bulk sync, joins, relation.changed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.server.clock import ManualClock
from contactsync.server.services import app_settings, joins, preferences, relations, users
from contactsync.server.store.tables import relations as relations_table
from tests.conftest import Api

H = dict[str, str]


async def put(api: Api, headers: H, target: int | str, **body: Any) -> Any:
    return await api.client.put(f"/v1/relations/{target}", json=body, headers=headers)


async def sync(api: Api, headers: H, **body: Any) -> Any:
    return await api.client.post("/v1/relations/sync", json=body, headers=headers)


async def listing(api: Api, headers: H) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = await api.client.get("/v1/relations", params=params, headers=headers)
        assert r.status_code == 200, r.text
        out.extend(r.json()["relations"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return out


def of_type(evs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e["data"] for e in evs if e["type"] == kind]


async def row_count(api: Api) -> int:
    async with api.ctx.read() as tx:
        return int(await tx.conn.scalar(sa.text("SELECT count(*) FROM relations")) or 0)


async def test_replace_overwrites_levels_and_merge_only_adds(api: Api) -> None:
    _, ah = await api.user_with_token("+14155550100")
    bob = await api.create_user("+14155550101")
    b = bob["user_id"]
    r = await put(api, ah, b, access_levels=[3, 1, 3])
    assert r.status_code == 200
    assert r.json() == {
        "user_id": b,
        "phone": None,
        "pending": False,
        "contact": True,
        "subscribe": False,
        "access_levels": [1, 3],
        "updated_at": r.json()["updated_at"],
    }
    r = await put(api, ah, b, access_levels=[2], mode="merge")
    assert r.json()["access_levels"] == [1, 2, 3]
    r = await put(api, ah, b, access_levels=[63])
    assert r.json()["access_levels"] == [63]
    r = await put(api, ah, b, access_levels=[], mode="merge")
    assert r.json()["access_levels"] == [63]
    r = await put(api, ah, b, access_levels=[])
    assert r.json()["access_levels"] == []
    # Leaving a part out keeps it.
    await put(api, ah, b, access_levels=[4])
    r = await put(api, ah, b, subscribe=True)
    assert r.json()["access_levels"] == [4] and r.json()["contact"] and r.json()["subscribe"]
    # A relation that is neither contact nor subscription is gone.
    r = await put(api, ah, b, contact=False, subscribe=False)
    assert r.status_code == 200 and r.json()["contact"] is False
    assert await listing(api, ah) == [] and await row_count(api) == 0
    r = await api.client.get(f"/v1/relations/{b}", headers=ah)
    assert r.json()["contact"] is False and r.json()["access_levels"] == []


async def test_a_subscription_alone_is_not_a_contact(api: Api) -> None:
    _, ah = await api.user_with_token("+14155550100")
    bob = await api.create_user("+14155550101")
    r = await put(api, ah, bob["user_id"], contact=False, subscribe=True)
    assert (r.json()["contact"], r.json()["subscribe"]) == (False, True)


@pytest.mark.parametrize("levels", [[0], [64], [-1], [10**20], ["2"], [1.0], [True], [None], 5])
async def test_bad_access_levels(api: Api, levels: Any) -> None:
    _, ah = await api.user_with_token("+14155550100")
    bob = await api.create_user("+14155550101")
    await put(api, ah, bob["user_id"], access_levels=[1])
    r = await put(api, ah, bob["user_id"], access_levels=levels, subscribe=True)
    assert r.status_code == 422, r.text
    expected = "invalid_request" if levels == 5 else "invalid_level"
    assert r.json()["error"]["code"] == expected
    r = await sync(api, ah, phones=["+14155550101"], access_levels=levels)
    assert r.status_code == 422 and r.json()["error"]["code"] == expected
    [only] = await listing(api, ah)
    assert only["access_levels"] == [1] and only["subscribe"] is False


async def test_bad_targets(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    cases = [
        (ann["user_id"], 422, "self_relation"),
        ("+14155550100", 422, "self_relation"),
        ("+1 415 555 0100", 422, "self_relation"),
        (999999, 404, "not_found"),
        ("9" * 40, 404, "not_found"),
        ("abc", 422, "invalid_request"),
        ("0042", 422, "invalid_request"),
        ("-5", 422, "invalid_request"),
        ("+1234", 422, "invalid_phone"),
        ("+999123456", 422, "invalid_phone"),
    ]
    for target, status, code in cases:
        r = await put(api, ah, target, subscribe=True)
        assert r.status_code == status, (target, r.text)
        assert r.json()["error"]["code"] == code, target
        r = await api.client.delete(f"/v1/relations/{target}", headers=ah)
        assert r.status_code == status, target
    r = await put(api, ah, "+14155550101", mode="sometimes")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = await put(api, ah, "+14155550101", contact="yes please")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert await row_count(api) == 0


async def test_relation_by_number_attaches_when_the_number_joins(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    r = await put(api, ah, "+14155550199", access_levels=[2], subscribe=True)
    assert r.status_code == 200
    assert r.json()["pending"] is True and r.json()["phone"] == "+14155550199"
    assert r.json()["user_id"] is None
    # The same number written another way addresses the same pending relation.
    r = await put(api, ah, "+1 (415) 555-0199", access_levels=[3], mode="merge")
    assert r.json()["access_levels"] == [2, 3]
    assert len(await listing(api, ah)) == 1
    zed, zh = await api.user_with_token("+14155550199")
    [rel] = await listing(api, ah)
    assert rel["user_id"] == zed["user_id"] and rel["pending"] is False and rel["phone"] is None
    assert rel["access_levels"] == [2, 3] and rel["subscribe"] is True
    joined = of_type(await api.events(ah), "contact.joined")
    assert joined == [{"user_id": zed["user_id"], "phone": "+14155550199", "name": None}]
    changed = of_type(await api.events(zh), "relation.changed")
    assert changed == [
        {"user_id": ann["user_id"], "contact": True, "subscribe": True, "access_levels": [2, 3]}
    ]
    # Now the relation is by id: addressing the number reaches the same row.
    r = await put(api, ah, "+14155550199", access_levels=[1])
    assert r.json()["user_id"] == zed["user_id"] and r.json()["access_levels"] == [1]
    assert len(await listing(api, ah)) == 1
    # Registering again (idempotent) notifies nobody twice.
    await api.create_user("+14155550199")
    assert len(of_type(await api.events(ah), "contact.joined")) == 1


async def test_an_owner_reached_by_book_and_relation_hears_once(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob, bh = await api.user_with_token("+14155550101")
    await put(api, ah, "+14155550199")
    await put(api, bh, "+14155550199")
    r = await api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": "+14155550199", "name": "Zed"}]},
        headers=ah,
    )
    assert r.status_code == 200, r.text
    zed = await api.create_user("+14155550199")
    z = zed["user_id"]
    # Ann holds the number in her book and by relation: one notice, her book's name.
    assert of_type(await api.events(ah), "contact.joined") == [
        {"user_id": z, "phone": "+14155550199", "name": "Zed"}
    ]
    # Bob only related to the number: one notice, no name.
    assert of_type(await api.events(bh), "contact.joined") == [
        {"user_id": z, "phone": "+14155550199", "name": None}
    ]
    await api.create_user("+14155550199")
    assert len(of_type(await api.events(ah), "contact.joined")) == 1
    assert len(of_type(await api.events(bh), "contact.joined")) == 1


async def test_bulk_sync(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob = await api.create_user("+14155550101")
    cat = await api.create_user("+14155550102")
    phones = [
        "+14155550101",  # registered
        "(415) 555-0102",  # registered, read in the caller's region
        "+14155550150",  # not registered
        "not a number",
        "+14155550100",  # the caller
        "+1 415 555 0101",  # duplicate of the first
        12345,
        "+44 20 7946 0958",  # not registered
    ]
    r = await sync(api, ah, phones=phones, access_levels=[1, 2], subscribe=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] == 4 and body["pending"] == 2
    assert (body["updated"], body["unchanged"], body["removed"]) == (0, 0, 0)
    assert body["invalid"] == [
        {"index": 3, "phone": "not a number", "reason": "not_a_number"},
        {"index": 4, "phone": "+14155550100", "reason": "self"},
        {"index": 6, "phone": None, "reason": "not_a_number"},
    ]
    rels = await listing(api, ah)
    assert sorted(r["user_id"] for r in rels if r["user_id"]) == sorted(
        [bob["user_id"], cat["user_id"]]
    )
    assert sorted(r["phone"] for r in rels if r["pending"]) == ["+14155550150", "+442079460958"]
    assert all(r["access_levels"] == [1, 2] and r["subscribe"] and r["contact"] for r in rels)
    # Merge adds; replace overwrites; nothing else moves.
    r = await sync(
        api, ah, phones=["+14155550101", "+14155550150"], access_levels=[5], mode="merge"
    )
    assert r.json()["updated"] == 2
    r = await sync(
        api, ah, phones=["+14155550101", "+14155550150"], access_levels=[5], mode="merge"
    )
    assert r.json()["unchanged"] == 2 and r.json()["updated"] == 0
    levels = {(r["user_id"] or r["phone"]): r["access_levels"] for r in await listing(api, ah)}
    assert levels[bob["user_id"]] == [1, 2, 5] and levels["+14155550150"] == [1, 2, 5]
    assert levels[cat["user_id"]] == [1, 2]
    r = await sync(api, ah, phones=["+14155550101"], access_levels=[7])
    levels = {(r["user_id"] or r["phone"]): r["access_levels"] for r in await listing(api, ah)}
    assert levels[bob["user_id"]] == [7] and levels[cat["user_id"]] == [1, 2]
    # A sync that ends every part of a relation removes it.
    r = await sync(api, ah, phones=["+14155550102"], contact=False, subscribe=False)
    assert r.json()["removed"] == 1
    assert cat["user_id"] not in {r["user_id"] for r in await listing(api, ah)}
    # region, when given, is used for numbers without a country code.
    r = await sync(api, ah, phones=["020 7946 0958"], region="GB", access_levels=[9], mode="merge")
    assert r.json()["updated"] == 1 and r.json()["invalid"] == []
    r = await sync(api, ah, phones=["x"], region="ZZ")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_region"
    assert ann["user_id"]


async def test_bulk_sync_bounds(api: Api) -> None:
    _, ah = await api.user_with_token("+14155550100")
    r = await sync(api, ah, phones=[f"+1415555{i:04d}" for i in range(20_001)])
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_contacts"
    r = await sync(api, ah, phones="+14155550101")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = await sync(api, ah, phones=[])
    assert r.status_code == 200 and r.json()["created"] == 0
    assert await row_count(api) == 0


async def test_relation_changed_events(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob, bh = await api.user_with_token("+14155550101")
    a, b = ann["user_id"], bob["user_id"]
    await put(api, ah, b, access_levels=[1])
    await put(api, ah, b, access_levels=[1])  # no change: no event
    await put(api, ah, b, subscribe=True)
    await api.client.delete(f"/v1/relations/{b}", headers=ah)
    assert of_type(await api.events(bh), "relation.changed") == [
        {"user_id": a, "contact": True, "subscribe": False, "access_levels": [1]},
        {"user_id": a, "contact": True, "subscribe": True, "access_levels": [1]},
        {"user_id": a, "contact": False, "subscribe": False, "access_levels": []},
    ]
    assert of_type(await api.events(ah), "relation.changed") == []
    # Not across a block, either way.
    await api.client.put(f"/v1/blocks/{a}", headers=bh)
    await put(api, ah, b, access_levels=[2])
    await api.client.delete(f"/v1/blocks/{a}", headers=bh)
    assert len(of_type(await api.events(bh), "relation.changed")) == 3
    # Not when the app turns them off.
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"relation_changed_events": False})
    await put(api, ah, b, access_levels=[3])
    assert len(of_type(await api.events(bh), "relation.changed")) == 3


async def test_listing_pages_and_bad_cursors(api: Api) -> None:
    _, ah = await api.user_with_token("+14155550100")
    numbers = [f"+1415555{i:04d}" for i in range(200, 207)]
    await sync(api, ah, phones=numbers)
    assert [r["phone"] for r in await listing(api, ah)] == numbers
    for cursor in ("!!!", "cjEy=x", "eDE", "r" * 200):
        r = await api.client.get("/v1/relations", params={"cursor": cursor}, headers=ah)
        assert r.status_code == 422, cursor
        assert r.json()["error"]["code"] == "invalid_cursor"
    r = await api.client.get("/v1/relations", params={"limit": 0}, headers=ah)
    assert r.status_code == 422
    # Another user's listing is their own.
    _, bh = await api.user_with_token("+14155550101")
    assert await listing(api, bh) == []


async def test_auto_subscribe(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob, bh = await api.user_with_token("+14155550101")
    a, b = ann["user_id"], bob["user_id"]
    async with api.ctx.tx() as tx:
        assert await relations.auto_subscribe(tx, a, b) is True
        assert await relations.auto_subscribe(tx, a, b) is False  # already subscribed
        assert await relations.auto_subscribe(tx, a, a) is False
    [rel] = await listing(api, ah)
    assert (rel["user_id"], rel["contact"], rel["subscribe"]) == (b, False, True)
    # Keeps an existing contact's levels.
    await put(api, bh, a, access_levels=[4])
    async with api.ctx.tx() as tx:
        assert await relations.auto_subscribe(tx, b, a) is True
    [rel] = await listing(api, bh)
    assert (rel["contact"], rel["subscribe"], rel["access_levels"]) == (True, True, [4])
    # Never across a block, and not when the app turns it off.
    cat, ch = await api.user_with_token("+14155550102")
    await api.client.put(f"/v1/blocks/{a}", headers=ch)
    async with api.ctx.tx() as tx:
        assert await relations.auto_subscribe(tx, a, cat["user_id"]) is False
        assert await relations.auto_subscribe(tx, cat["user_id"], a) is False
        await app_settings.update(tx, {"auto_subscribe_on_message": False})
    dan = await api.create_user("+14155550103")
    async with api.ctx.tx() as tx:
        assert await relations.auto_subscribe(tx, a, dan["user_id"]) is False
    assert len(await listing(api, ah)) == 1


async def test_deleting_a_user_deletes_their_relations(api: Api) -> None:
    _, ah = await api.user_with_token("+14155550100")
    bob, bh = await api.user_with_token("+14155550101")
    await put(api, ah, bob["user_id"], subscribe=True)
    await put(api, bh, "+14155550100")
    await put(api, bh, "+14155550177")
    assert await row_count(api) == 3
    await api.client.delete(f"/v1/admin/users/{bob['user_id']}", headers=api.admin)
    assert await row_count(api) == 0


async def test_a_big_sync_matches_existing_relations(api: Api) -> None:
    # Past relations.WHOLE_READ keys the existing rows are read in one sweep: same outcome.
    _, ah = await api.user_with_token("+14155550100")
    numbers = [f"+1415555{i:04d}" for i in range(2000, 2000 + relations.WHOLE_READ + 100)]
    bob = await api.create_user(numbers[7])
    r = await sync(api, ah, phones=numbers, access_levels=[1])
    assert r.json()["created"] == len(numbers) and r.json()["pending"] == len(numbers) - 1
    r = await sync(api, ah, phones=numbers, access_levels=[2], mode="merge")
    assert r.json()["updated"] == len(numbers) and r.json()["created"] == 0
    r = await sync(api, ah, phones=numbers[:10], access_levels=[2], mode="merge")
    assert r.json()["unchanged"] == 10
    zed = await api.create_user(numbers[-1])
    rels = {(x["user_id"] or x["phone"]): x["access_levels"] for x in await listing(api, ah)}
    assert len(rels) == len(numbers)
    assert rels[bob["user_id"]] == [1, 2] and rels[zed["user_id"]] == [1, 2]


async def test_join_notices_from_books_and_relations_reach_each_owner_once(
    api: Api, clock: ManualClock
) -> None:
    _, ah = await api.user_with_token("+14155550101")  # book entry and relation
    _, bh = await api.user_with_token("+14155550102")  # relation only
    cat, ch = await api.user_with_token("+14155550103")  # relation only, muted notices
    joiner = "+14155550199"
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": joiner, "name": "Zed"}]}, headers=ah
    )
    assert r.status_code == 200, r.text
    for h in (ah, bh, ch):
        assert (await put(api, h, joiner)).status_code == 200
    async with api.ctx.tx() as tx:
        await preferences.update(
            tx, cat["user_id"], {"notify_contact_joined": False}, device_id=None
        )
    zed = await api.create_user(joiner)
    z = zed["user_id"]
    assert of_type(await api.events(ah), "contact.joined") == [
        {"user_id": z, "phone": joiner, "name": "Zed"}
    ]
    assert of_type(await api.events(bh), "contact.joined") == [
        {"user_id": z, "phone": joiner, "name": None}
    ]
    assert of_type(await api.events(ch), "contact.joined") == []
    # The muted owner's relation attaches all the same.
    [rel] = await listing(api, ch)
    assert rel["user_id"] == z and not rel["pending"]
    # Leaving removes the relations to the leaver; a re-join within a day attaches the new
    # pending relation but sends no second notice.
    await api.client.delete(f"/v1/admin/users/{z}", headers=api.admin)
    assert await listing(api, bh) == []
    await put(api, bh, joiner)
    clock.advance(3600)
    again = await api.create_user(joiner)
    [rel] = await listing(api, bh)
    assert rel["user_id"] == again["user_id"]
    # the first notice left with the deleted user's data; the re-join sent no second one
    assert of_type(await api.events(bh), "contact.joined") == []


async def test_relations_made_while_their_numbers_register_all_attach(api: Api) -> None:
    """A relation by number and that number's registration at the same moment: whichever
    commits first, the relation ends attached (never pending on a registered number)."""
    _, owner = await api.user_with_token("+14155550100")
    _, other = await api.user_with_token("+14155550199")
    numbers = [f"+1415555{2000 + i:04d}" for i in range(40)]

    async def relate(number: str) -> None:
        r = await api.client.put(f"/v1/relations/{number}", json={"subscribe": True}, headers=owner)
        assert r.status_code == 200, r.text

    async def bulk() -> None:
        r = await api.client.post(
            "/v1/relations/sync", json={"phones": numbers, "contact": True}, headers=other
        )
        assert r.status_code == 200, r.text

    await asyncio.gather(
        bulk(), *(relate(n) for n in numbers), *(api.create_user(n) for n in numbers)
    )
    for headers in (owner, other):
        listed = await listing(api, headers)
        assert len(listed) == len(numbers)
        assert [r["phone"] for r in listed if r["pending"]] == []
        # an owner hears "X joined" at most once per number, however the race went (not at
        # all where the number had joined before the relation was made)
        joined = [
            e["data"]["phone"] for e in await api.events(headers) if e["type"] == "contact.joined"
        ]
        assert len(joined) == len(set(joined)) and set(joined) <= set(numbers)


async def test_a_relation_left_pending_by_the_race_attaches_and_its_owner_hears(
    api: Api,
) -> None:
    """The state the race above leaves without the follow-up: a relation pending on a number
    that has registered. The follow-up attaches it and tells the owner once; an owner whose
    book holds the number heard at the join and is not told twice."""
    owner, oh = await api.user_with_token("+14155550100")
    holder, hh = await api.user_with_token("+14155550101")
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": "+14155550142"}]}, headers=hh
    )
    assert r.status_code == 200, r.text
    joiner = await api.create_user("+14155550142", "Joiner")
    async with api.ctx.tx() as tx:
        for owner_id in (owner["user_id"], holder["user_id"]):
            await tx.conn.execute(
                sa.insert(relations_table).values(
                    owner_id=owner_id,
                    phone="+14155550142",
                    contact=True,
                    subscribe=True,
                    levels=0,
                    created_at=tx.now,
                    updated_at=tx.now,
                )
            )
    async with api.ctx.tx() as tx:
        user = await users.get(tx, joiner["user_id"])
        await joins.attach_late(tx, [user])
    for headers in (oh, hh):
        [relation] = await listing(api, headers)
        assert relation["pending"] is False and relation["user_id"] == joiner["user_id"]

    def joined_ids(events: list[dict[str, Any]]) -> list[int]:
        return [e["data"]["user_id"] for e in events if e["type"] == "contact.joined"]

    assert joined_ids(await api.events(oh)) == [joiner["user_id"]]
    assert joined_ids(await api.events(hh)) == [joiner["user_id"]]  # from the join itself only
