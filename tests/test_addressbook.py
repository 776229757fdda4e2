"""Address-book upload semantics, listing, limits, quota and idempotency, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from contactsync.server import cursors
from contactsync.server.clock import ManualClock
from contactsync.server.services import addressbook, app_settings
from contactsync.server.store.tables import metadata
from tests.conftest import Api

A, B, C, D = "+14155550101", "+14155550102", "+14155550103", "+14155550104"


async def upload(
    api: Api,
    headers: dict[str, str],
    contacts: list[dict[str, Any]],
    status: int = 200,
    **options: Any,
) -> dict[str, Any]:
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": contacts, **options}, headers=headers
    )
    assert r.status_code == status, r.text
    return dict(r.json())


async def book(api: Api, headers: dict[str, str], device_id: str | None = None) -> dict[str, Any]:
    url = "/v1/addressbook?limit=5000" + (f"&device_id={device_id}" if device_id else "")
    r = await api.client.get(url, headers=headers)
    assert r.status_code == 200
    return {c["phone"]: c["name"] for c in r.json()["contacts"]}


async def count_rows(api: Api, table: str) -> int:
    async with api.ctx.read() as tx:
        return int(await tx.conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)


async def test_add_rename_destroy(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    r = await upload(api, me, [{"phone": A, "name": "Ann"}, {"phone": B, "name": " Bob "}])
    assert (r["created"], r["updated"], r["deleted"], r["unchanged"]) == (2, 0, 0, 0)
    assert await book(api, me) == {A: "Ann", B: "Bob"}
    r = await upload(
        api,
        me,
        [
            {"phone": A, "name": "Annie"},
            {"phone": B, "name": "Bob"},
            {"phone": C, "destroy": True},
            {"phone": D, "name": "Dee"},
        ],
    )
    assert (r["created"], r["updated"], r["deleted"], r["unchanged"]) == (1, 1, 0, 2)
    r = await upload(api, me, [{"phone": B, "destroy": True}, {"phone": A}])
    assert (r["created"], r["updated"], r["deleted"], r["unchanged"]) == (0, 0, 1, 1)
    assert await book(api, me) == {A: "Annie", D: "Dee"}


@pytest.mark.parametrize("renamed", [3, 150])  # keyed updates, and one UPDATE ... FROM
async def test_renames_change_those_entries_only(
    api: Api, clock: ManualClock, renamed: int
) -> None:
    _, me = await api.user_with_token("+14155550100")
    numbers = [f"+1415556{i:04d}" for i in range(200)]
    await upload(api, me, [{"phone": n, "name": f"n{i}"} for i, n in enumerate(numbers)])
    clock.advance(1000)
    edits = [{"phone": n, "name": f"new {i}"} for i, n in enumerate(numbers[:renamed])]
    r = await upload(api, me, edits + [{"phone": numbers[-1], "name": "n199"}])
    assert (r["created"], r["updated"], r["unchanged"]) == (0, renamed, 1)
    expected = {n: (f"new {i}" if i < renamed else f"n{i}") for i, n in enumerate(numbers)}
    assert await book(api, me) == expected
    async with api.ctx.read() as tx:
        stamps = dict(
            (await tx.conn.execute(sa.text("SELECT phone, updated_at FROM book_entries"))).all()
        )
    later = {n for n, at in stamps.items() if at > min(stamps.values())}
    assert later == set(numbers[:renamed])


async def test_last_occurrence_wins_and_forms_are_normalised(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    r = await upload(
        api,
        me,
        [
            {"phone": "(415) 555-0101", "name": "first"},
            {"phone": "+1 415 555 0101", "name": "second"},
            {"phone": "001 415 555 0102", "name": "Bob"},
            {"phone": "0044 20 7946 0958", "name": "London"},
            {"phone": "030 1234567", "name": "Berlin"},
        ],
        region="US",
    )
    assert r["created"] == 3 and len(r["invalid"]) == 1
    assert r["invalid"][0] == {"index": 4, "phone": "030 1234567", "reason": "invalid_number"}
    assert await book(api, me) == {A: "second", B: "Bob", "+442079460958": "London"}
    r = await upload(api, me, [{"phone": "030 1234567", "name": "Berlin"}], region="DE")
    assert r["created"] == 1 and r["invalid"] == []


async def test_a_stored_number_in_another_form_is_the_same_contact(api: Api) -> None:
    # What the book holds is looked up as written before anything is parsed: the same
    # number written otherwise, in the same request, still counts once, the last one winning.
    _, me = await api.user_with_token("+14155550100")
    await upload(api, me, [{"phone": A, "name": "Ann"}, {"phone": B, "name": "Bob"}])
    r = await upload(
        api,
        me,
        [
            {"phone": "(415) 555-0101", "name": "Annie"},
            {"phone": A, "name": "Ann"},
            {"phone": B, "name": "Bob"},
            {"phone": "+1 415 555 0102", "name": "Bobby"},
            {"phone": "+1415555010", "name": "short"},
            {"phone": " " + C, "name": "Cy"},
        ],
        region="US",
    )
    assert (r["created"], r["updated"], r["deleted"], r["unchanged"]) == (1, 1, 0, 1)
    assert [e["index"] for e in r["invalid"]] == [4]
    assert await book(api, me) == {A: "Ann", B: "Bobby", C: "Cy"}
    r = await upload(api, me, [{"phone": "+1 (415) 555-0103", "destroy": True}, {"phone": B}])
    assert (r["created"], r["updated"], r["deleted"], r["unchanged"]) == (0, 0, 1, 1)
    assert await book(api, me) == {A: "Ann", B: "Bobby"}


async def test_caller_region_is_the_fallback(api: Api) -> None:
    _, me = await api.user_with_token("+49 151 23456789")
    r = await upload(api, me, [{"phone": "030 1234567", "name": "Berlin"}])
    assert r["created"] == 1
    assert await book(api, me) == {"+49301234567": "Berlin"}


async def test_garbage_is_reported_by_index_and_never_stored(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    junk = ["ask Bob", "n/a", "0", "+", "12", "call me", "+999 123", "tel:", "555", "++4930", ""]
    contacts = [{"phone": j, "name": f"junk {i}"} for i, j in enumerate(junk)]
    contacts.insert(3, {"phone": A, "name": "Ann"})
    r = await upload(api, me, contacts, region="US")
    assert r["created"] == 1
    assert [i["index"] for i in r["invalid"]] == [i for i in range(len(contacts)) if i != 3]
    assert all(
        i["reason"]
        in ("not_a_number", "invalid_country_code", "too_short", "too_long", "invalid_number")
        for i in r["invalid"]
    )
    assert await book(api, me) == {A: "Ann"}


async def test_empty_upload(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    r = await upload(api, me, [])
    assert (r["created"], r["updated"], r["deleted"], r["unchanged"]) == (0, 0, 0, 0)
    assert r["invalid"] == [] and r["registered"] == []
    await upload(api, me, [{"phone": A, "name": "Ann"}, {"phone": B, "name": "Bob"}])
    r = await upload(api, me, [], force=True)  # an empty force upload empties the book
    assert (r["created"], r["updated"], r["deleted"], r["unchanged"]) == (0, 0, 2, 0)
    listed = await api.client.get("/v1/addressbook", headers=me)
    assert listed.status_code == 200 and listed.json()["contacts"] == []


async def test_force_replaces_the_whole_book(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    await upload(api, me, [{"phone": A, "name": "Ann"}, {"phone": B, "name": "Bob"}])
    r = await upload(
        api, me, [{"phone": B, "name": "Robert"}, {"phone": C, "name": "Cy"}], force=True
    )
    assert (r["created"], r["updated"], r["deleted"], r["unchanged"]) == (1, 1, 1, 0)
    assert await book(api, me) == {B: "Robert", C: "Cy"}


async def test_force_across_batches_applies_only_at_the_final_part(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    await upload(api, me, [{"phone": A, "name": "Ann"}, {"phone": D, "name": "Dee"}])
    numbers = [f"+1415555{2000 + i:04d}" for i in range(30)]
    parts = [numbers[0:10], numbers[10:20], numbers[20:30]]
    for i, part in enumerate(parts[:2]):
        r = await upload(
            api,
            me,
            [{"phone": p, "name": p[-4:]} for p in part],
            force=True,
            batch_id="full-1",
            final=False,
        )
        assert r["final"] is False and r["staged"] == 10 * (i + 1)
        # Nobody sees a half-replaced book.
        assert await book(api, me) == {A: "Ann", D: "Dee"}
    r = await upload(
        api,
        me,
        [{"phone": p, "name": p[-4:]} for p in parts[2]] + [{"phone": A, "name": "Ann"}],
        force=True,
        batch_id="full-1",
    )
    assert r["final"] is True
    assert (r["created"], r["deleted"], r["unchanged"]) == (30, 1, 1)
    assert set(await book(api, me)) == set(numbers) | {A}
    assert await count_rows(api, "staged_contacts") == 0
    # The final answer is what a retry of any part now gets.
    again = await upload(api, me, [], force=True, batch_id="full-1")
    assert again == r


async def test_multi_part_force_needs_a_batch_id(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    r = await upload(api, me, [{"phone": A}], 422, force=True, final=False)
    assert r["error"]["code"] == "invalid_request"


async def test_open_batch_id_cannot_be_reused_for_another_book(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    await upload(api, me, [{"phone": A}], force=True, batch_id="b1", final=False)
    r = await upload(api, me, [{"phone": B}], 409, batch_id="b1")
    assert r["error"]["code"] == "conflict"
    r = await upload(api, me, [{"phone": B}], 409, batch_id="b1", force=True, device_id="ipad")
    assert r["error"]["code"] == "conflict"


async def test_per_device_books_are_separate(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    await upload(api, me, [{"phone": A, "name": "Ann"}])
    await upload(api, me, [{"phone": B, "name": "Bob"}], device_id="ipad-1")
    await upload(api, me, [{"phone": C, "name": "Cy"}], device_id="ipad-1", force=True)
    assert await book(api, me) == {A: "Ann"}
    assert await book(api, me, "ipad-1") == {C: "Cy"}
    r = await api.client.delete("/v1/addressbook?device_id=ipad-1", headers=me)
    assert r.json() == {"deleted": 1}
    assert await book(api, me, "ipad-1") == {}
    assert await book(api, me) == {A: "Ann"}
    r = await api.client.delete("/v1/addressbook", headers=me)
    assert r.json() == {"deleted": 1}
    assert await book(api, me) == {}


async def test_retry_with_the_same_batch_id_changes_nothing_more(api: Api) -> None:
    friend = await api.create_user(B, "Bob")
    _, me = await api.user_with_token("+14155550100")
    contacts = [{"phone": A, "name": "Ann"}, {"phone": B, "name": "Bob"}]
    first = await upload(api, me, contacts, batch_id="retry-1")
    assert first["created"] == 2 and first["registered"][0]["user_id"] == friend["user_id"]
    await upload(api, me, [{"phone": A, "destroy": True}])
    again = await upload(api, me, contacts, batch_id="retry-1")
    assert again == first
    assert await book(api, me) == {B: "Bob"}  # the retry did not re-add A
    events = await api.events(me)
    assert [e["type"] for e in events] == ["contacts.registered"]


async def test_registered_lists_users_never_the_caller(api: Api) -> None:
    ann = await api.create_user(A, "Ann A.")
    me_user, me = await api.user_with_token("+14155550100")
    r = await upload(
        api,
        me,
        [{"phone": A, "name": "Annie"}, {"phone": "+14155550100"}, {"phone": C, "name": "Cy"}],
    )
    assert r["registered"] == [{"user_id": ann["user_id"], "phone": A, "name": "Annie"}]
    ann_headers = await api.token(ann["user_id"])
    await api.client.patch(
        "/v1/me/profile",
        headers=ann_headers,
        json={
            "fields": {
                "status": {"value": "hi", "level": 0},
                "email": {"value": "a@x.org", "level": 2},
            }
        },
    )
    full = await api.client.get("/v1/addressbook/registered", headers=me)
    assert full.json()["users"] == [
        {"user_id": ann["user_id"], "phone": A, "name": "Annie", "profile": {"status": "hi"}}
    ]
    # Granting level 2 lets the caller see the email too.
    await api.client.put(
        f"/v1/relations/{me_user['user_id']}",
        headers=ann_headers,
        json={"contact": True, "access_levels": [2]},
    )
    full = await api.client.get("/v1/addressbook/registered", headers=me)
    assert full.json()["users"][0]["profile"] == {"status": "hi", "email": "a@x.org"}
    compact = await api.client.get("/v1/addressbook/registered?compact=true", headers=me)
    assert compact.json()["users"] == [{"user_id": ann["user_id"], "phone": A}]
    assert me_user["user_id"] not in [u["user_id"] for u in full.json()["users"]]


async def test_blocks_hide_registered_contacts_both_ways(api: Api) -> None:
    ann = await api.create_user(A)
    me_user, me = await api.user_with_token("+14155550100")
    async with api.ctx.tx() as tx:
        await tx.conn.execute(
            sa.text("INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (:a, :b, 0)"),
            {"a": ann["user_id"], "b": me_user["user_id"]},
        )
    r = await upload(api, me, [{"phone": A}])
    assert r["registered"] == []
    assert (await api.client.get("/v1/addressbook/registered", headers=me)).json()["users"] == []


async def test_too_many_contacts_is_refused_whole(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    contacts = [{"phone": f"+1415555{i:04d}"} for i in range(5001)]
    r = await upload(api, me, contacts, 413)
    assert r["error"]["code"] == "too_many_contacts"
    assert r["error"]["details"] == {"max": 5000, "got": 5001}
    assert await count_rows(api, "book_entries") == 0
    r = await upload(api, me, contacts[:5000])
    assert r["created"] + len(r["invalid"]) == 5000
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"max_contacts_per_request": 10})
    r = await upload(api, me, contacts[:11], 413)
    assert r["error"]["details"]["max"] == 10


async def test_discovery_quota(api: Api, clock: ManualClock) -> None:
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"discovery_quota": 5})
    _, me = await api.user_with_token("+14155550100")
    first = [{"phone": f"+1415555{3000 + i:04d}"} for i in range(4)]
    await upload(api, me, first)
    # Numbers already in the book do not count again.
    await upload(api, me, first)
    r = await api.client.post(
        "/v1/addressbook",
        headers=me,
        json={"contacts": first + [{"phone": "+14155553100"}, {"phone": "+14155553101"}]},
    )
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "discovery_quota_exceeded"
    assert 1 <= int(r.headers["retry-after"]) <= 24 * 3600
    assert len(await book(api, me)) == 4  # nothing of the refused request was applied
    await upload(api, me, [{"phone": "+14155553100"}])  # exactly the fifth is fine
    # Clearing the book does not give the quota back.
    await api.client.delete("/v1/addressbook", headers=me)
    r = await api.client.post(
        "/v1/addressbook", headers=me, json={"contacts": [{"phone": "+14155553102"}]}
    )
    assert r.status_code == 429
    clock.advance(24 * 3600 + 1)
    await upload(api, me, [{"phone": "+14155553102"}])


async def test_numbers_held_in_another_book_are_not_new_and_are_matched(api: Api) -> None:
    """A number the caller holds in a device book costs no quota in the global book, and is
    entered there with its own name; its user is reported (the entry's stored user), whether
    the number is written as stored or in another form."""
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"discovery_quota": 2})
    friend = await api.create_user(B, "Bob")
    _, me = await api.user_with_token("+14155550100")
    await upload(
        api, me, [{"phone": A, "name": "Ann"}, {"phone": B, "name": "Bob"}], device_id="ipad"
    )
    # the quota is spent: only numbers held already can still be uploaded
    national = "(415) 555-" + B[-4:]
    r = await upload(
        api, me, [{"phone": A, "name": "Ann G."}, {"phone": national, "name": "B."}], region="US"
    )
    assert (r["created"], r["updated"], r["unchanged"]) == (2, 0, 0)
    assert [(u["user_id"], u["phone"], u["name"]) for u in r["registered"]] == [
        (friend["user_id"], B, "B.")
    ]
    assert await book(api, me) == {A: "Ann G.", B: "B."}
    assert await book(api, me, "ipad") == {A: "Ann", B: "Bob"}
    again = await upload(api, me, [{"phone": A}, {"phone": B, "name": "B."}])
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 2)
    assert [u["user_id"] for u in again["registered"]] == [friend["user_id"]]
    r = await api.client.post("/v1/addressbook", headers=me, json={"contacts": [{"phone": C}]})
    assert r.json()["error"]["code"] == "discovery_quota_exceeded"


async def test_list_pages_with_a_cursor(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    numbers = sorted(f"+1415555{4000 + i:04d}" for i in range(25))
    await upload(api, me, [{"phone": p} for p in numbers])
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/addressbook?limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.client.get(url, headers=me)).json()
        seen += [c["phone"] for c in page["contacts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == numbers


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_request"),
        ({"contacts": "A"}, "invalid_request"),
        ({"contacts": [{"name": "x"}]}, "invalid_request"),
        ({"contacts": [{"phone": 4155550101}]}, "invalid_request"),
        ({"contacts": [{"phone": A, "colour": "red"}]}, "invalid_request"),
        ({"contacts": [{"phone": A, "name": "x" * 201}]}, "invalid_request"),
        ({"contacts": [{"phone": A, "destroy": "yes please"}]}, "invalid_request"),
        ({"contacts": [{"phone": A}], "region": "Germany"}, "invalid_request"),
        ({"contacts": [{"phone": A}], "region": "ZZ"}, "invalid_region"),
        ({"contacts": [{"phone": A}], "device_id": "bad id"}, "invalid_request"),
        ({"contacts": [{"phone": A}], "batch_id": "has space"}, "invalid_request"),
        ({"contacts": [{"phone": A}], "force": "sometimes"}, "invalid_request"),
    ],
)
async def test_bad_uploads_change_nothing(api: Api, body: dict[str, Any], code: str) -> None:
    _, me = await api.user_with_token("+14155550100")
    r = await api.client.post("/v1/addressbook", json=body, headers=me)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    assert await count_rows(api, "book_entries") == 0
    assert await count_rows(api, "discovery_checks") == 0


async def test_bad_list_queries(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    for query in ("limit=0", "limit=5001", "device_id=bad%20id"):
        r = await api.client.get(f"/v1/addressbook?{query}", headers=me)
        assert r.status_code == 422, query
    # a cursor this list did not make: garbage, another list's cursor, a cursor naming no number
    for cursor in ("%25%25%25", cursors.encode(id=5), cursors.encode(p="not a phone"), "e30"):
        r = await api.client.get(f"/v1/addressbook?cursor={cursor}", headers=me)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_cursor", cursor
    assert (await api.client.get("/v1/addressbook")).status_code == 401


async def test_replacing_or_staging_does_not_refill_the_quota(api: Api) -> None:
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"discovery_quota": 5})
    _, me = await api.user_with_token("+14155550100")
    first = [{"phone": f"+1415555{5000 + i:04d}"} for i in range(5)]
    other = [{"phone": f"+1415555{6000 + i:04d}"} for i in range(5)]
    await upload(api, me, first, force=True)
    r = await upload(api, me, other, 429, force=True)  # the first five still count today
    assert r["error"]["code"] == "discovery_quota_exceeded"
    assert r["error"]["details"]["used"] == 5
    assert set(await book(api, me)) == {c["phone"] for c in first}
    # Staged parts of a force upload that never finishes count too.
    _, you = await api.user_with_token("+14155550109")
    await upload(api, you, first[:3], force=True, batch_id="never-final", final=False)
    r = await upload(api, you, other[:3], 429)
    assert r["error"]["details"]["used"] == 3
    await upload(api, you, other[:2])  # 3 staged + 2 = 5: allowed


async def test_numbers_checked_today_are_not_new_however_many_the_day_holds(api: Api) -> None:
    """The day's checks are found whether they are more than the request's new numbers (looked
    up by number) or fewer (read whole): either way a number checked today counts once."""
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"discovery_quota": 10})
    _, me = await api.user_with_token("+14155550100")
    staged = [{"phone": f"+1415555{7000 + i:04d}"} for i in range(4)]
    fresh = [{"phone": f"+1415555{8000 + i:04d}"} for i in range(7)]
    await upload(api, me, staged, force=True, batch_id="never-final", final=False)  # 4 used
    # 2 numbers to ask about, 4 checks today: one of them was checked, one is new
    await upload(api, me, [staged[3], fresh[0]])
    # 8 to ask about, 4 checks today: three of them were checked, five are new: 10 in all
    await upload(api, me, staged[:3] + fresh[1:6])
    r = await upload(api, me, [fresh[6]], 429)
    assert r["error"]["details"]["used"] == 10
    assert set(await book(api, me)) == {c["phone"] for c in staged + fresh[:6]}


async def test_relations_by_number_count_against_the_same_quota(api: Api) -> None:
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"discovery_quota": 5})
    _, me = await api.user_with_token("+14155550100")
    numbers = [f"+1415555{7000 + i:04d}" for i in range(4)]
    await upload(api, me, [{"phone": p} for p in numbers[:2]])
    # Two already in the book are free; two new ones count: 4 of 5 used.
    r = await api.client.post(
        "/v1/relations/sync",
        headers=me,
        json={"phones": numbers, "subscribe": True, "access_levels": [], "mode": "merge"},
    )
    assert r.status_code == 200, r.text
    r = await api.client.post(
        "/v1/relations/sync",
        headers=me,
        json={
            "phones": ["+14155557100", "+14155557101"],
            "subscribe": True,
            "access_levels": [],
            "mode": "merge",
        },
    )
    assert r.status_code == 429 and r.json()["error"]["code"] == "discovery_quota_exceeded"
    r = await api.client.put("/v1/relations/+14155557100", headers=me, json={"subscribe": True})
    assert r.status_code == 200  # the fifth
    r = await api.client.put("/v1/relations/+14155557101", headers=me, json={"subscribe": True})
    assert r.status_code == 429
    r = await api.client.put("/v1/relations/+14155557100", headers=me, json={"subscribe": False})
    assert r.status_code == 200  # checked today already: free


async def _every_row(api: Api) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: what 'nothing written' is checked against."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with api.ctx.read() as tx:
        for table in metadata.sorted_tables:
            rows = await tx.conn.execute(sa.select(table))
            out[table.name] = sorted((tuple(map(repr, row)) for row in rows), key=repr)
    return out


async def test_a_recheck_of_what_the_book_holds_writes_nothing(api: Api) -> None:
    friend = await api.create_user(B, "Bob")
    await api.create_user(C, "Cy")
    _, me = await api.user_with_token("+14155550100")
    contacts = [
        {"phone": A, "name": "Ann"},
        {"phone": B, "name": "Bob"},
        {"phone": C, "name": "Cy"},
        {"phone": D, "name": "Dee"},
    ]
    await upload(api, me, contacts)
    before = await _every_row(api)
    assert before["book_entries"] and before["events"]  # the snapshot covers what can change
    for again in (contacts, [{"phone": c["phone"]} for c in contacts]):  # names kept, too
        r = await upload(api, me, again)
        assert (r["created"], r["updated"], r["deleted"], r["unchanged"]) == (0, 0, 0, 4)
        assert [u["user_id"] for u in r["registered"]] == [friend["user_id"], friend["user_id"] + 1]
        assert await _every_row(api) == before  # row counts, updated_at, everything
    # A rename is news for the other devices: only the renamed registered contact.
    await upload(api, me, [{"phone": B, "name": "Bobby"}, {"phone": C, "name": "Cy"}])
    last = (await api.events(me))[-1]
    assert last["type"] == "contacts.registered"
    assert [u["phone"] for u in last["data"]["users"]] == [B]


async def test_a_recheck_answers_who_is_registered_now(api: Api) -> None:
    """A re-check finds the users of the numbers the book holds in the same read as the book:
    it still answers with who is registered, blocked, discoverable and matched by a variant
    at the time of the re-check, not of the first upload."""
    zed_written, zed_own = "+541123456789", "+5491123456789"  # Argentina, without / with the 9
    ann = await api.create_user(A, "Ann")
    owner, me = await api.user_with_token("+14155550100")
    contacts = [{"phone": n, "name": n} for n in (A, B, C, D, zed_written)]
    first = await upload(api, me, contacts)
    assert [u["user_id"] for u in first["registered"]] == [ann["user_id"]]

    bob, bh = await api.user_with_token(B)  # registers after the first upload
    cy, ch = await api.user_with_token(C)
    zed = await api.create_user(zed_own, "Zed")  # held under the variant the book holds
    r = await upload(api, me, contacts)
    assert r["created"] == 0 and r["unchanged"] == 5
    assert {u["phone"]: u["user_id"] for u in r["registered"]} == {
        A: ann["user_id"],
        B: bob["user_id"],
        C: cy["user_id"],
        zed_written: zed["user_id"],
    }

    assert (await api.client.put(f"/v1/blocks/{owner['user_id']}", headers=bh)).status_code == 204
    r = await api.client.put("/v1/me/preferences", json={"discoverable_by": "nobody"}, headers=ch)
    assert r.status_code == 200, r.text
    r = await upload(api, me, contacts)
    assert {u["phone"] for u in r["registered"]} == {A, zed_written}


@given(st.sets(st.text(max_size=6)))
def test_the_numbers_written_as_e164_are_those_starting_with_a_plus(numbers: set[str]) -> None:
    assert addressbook._e164_like(set(numbers)) == {n for n in numbers if n.startswith("+")}
    plus = {"+" + n for n in numbers}
    assert addressbook._e164_like(set(plus)) == plus
