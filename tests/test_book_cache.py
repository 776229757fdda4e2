"""The books big uploads keep in the process (`BookCache`): never trusted past the book's
version, so a change made through another process is seen at once; forgotten with the book."""

from __future__ import annotations

from typing import Any

from contactsync.server.cache import BookCache
from contactsync.server.services import users
from contactsync.server.services.addressbook import WHOLE_BOOK_FROM
from tests.conftest import Api, OpenApp
from tests.test_addressbook import book, upload

BIG = [
    {"phone": f"+1415555{1000 + i:04d}", "name": f"Name {i}"} for i in range(WHOLE_BOOK_FROM + 50)
]


def counts(answer: dict[str, Any]) -> tuple[int, int, int, int]:
    return answer["created"], answer["updated"], answer["deleted"], answer["unchanged"]


async def test_a_big_re_check_sees_what_another_process_changed_meanwhile(
    open_app: OpenApp,
) -> None:
    one, other = await open_app(), await open_app()  # two processes' apps, one database
    friend = await one.create_user(BIG[5]["phone"], "Friend")
    _, me = await one.user_with_token("+14155550100")
    assert counts(await upload(one, me, BIG)) == (len(BIG), 0, 0, 0)
    again = await upload(one, me, BIG)
    assert counts(again) == (0, 0, 0, len(BIG))
    assert [u["user_id"] for u in again["registered"]] == [friend["user_id"]]
    assert len(one.ctx.caches.books) == len(BIG)  # `one` keeps the book now
    # through the other process: a rename, a removal, and a new entry
    changed = [
        {"phone": BIG[0]["phone"], "name": "Renamed"},
        {"phone": BIG[1]["phone"], "destroy": True},
        {"phone": "+14155559999", "name": "New"},
    ]
    assert counts(await upload(other, me, changed)) == (1, 1, 1, 0)
    # `one` sees the book as it is now, not as it kept it
    after = await upload(one, me, BIG)
    assert counts(after) == (1, 1, 0, len(BIG) - 2)
    assert [u["user_id"] for u in after["registered"]] == [friend["user_id"]]
    expected = {c["phone"]: c["name"] for c in BIG} | {"+14155559999": "New"}
    assert await book(one, me) == expected
    # and its own changes keep its copy right: a rename through `one`, then a re-check there
    renamed = [{**c, "name": "Again"} if i == 2 else c for i, c in enumerate(BIG)]
    assert counts(await upload(one, me, renamed)) == (0, 1, 0, len(BIG) - 1)
    assert counts(await upload(one, me, renamed)) == (0, 0, 0, len(BIG))
    assert (await book(one, me))[BIG[2]["phone"]] == "Again"


async def test_a_cleared_book_and_a_deleted_user_are_forgotten(api: Api) -> None:
    me_user, me = await api.user_with_token("+14155550100")
    await upload(api, me, BIG)
    await upload(api, me, BIG)
    kept = api.ctx.caches.books
    assert len(kept) == len(BIG)
    r = await api.client.delete("/v1/addressbook", headers=me)
    assert r.status_code == 200
    assert len(kept) == 0
    await upload(api, me, BIG)
    await upload(api, me, BIG)
    assert len(kept) == len(BIG)
    async with api.ctx.tx() as tx:
        await users.delete(tx, me_user["user_id"])
    assert len(kept) == 0


def test_the_cache_keeps_a_version_and_at_most_its_numbers() -> None:
    clock = [0.0]
    books = BookCache(max_numbers=250, ttl_seconds=60, now=lambda: clock[0])
    a = {f"+1{i}": None for i in range(100)}
    books.put(1, "", 3, a)
    assert books.get(1, "", 3) is a
    assert books.get(1, "", 4) is None  # another version: dropped
    assert len(books) == 0
    books.put(1, "", 3, a)
    books.put(2, "", 1, dict(a))
    books.put(3, "", 1, dict(a))  # over 250: the least recently used (1) goes
    assert books.get(1, "", 3) is None and books.get(2, "", 1) is not None
    assert len(books) == 200
    # a commit from version 1 to 2 on book 2: the copy follows, a new dict
    before = books.get(2, "", 1)
    books.advance(2, "", 1, 2, {"+1new": "N", "+10": "renamed"}, ["+11"])
    now = books.get(2, "", 2)
    assert now is not None and now is not before
    assert now["+1new"] == "N" and now["+10"] == "renamed" and "+11" not in now
    assert before is not None and "+11" in before  # a reader in flight keeps its copy
    # a commit from a version it does not hold: forgotten
    books.advance(3, "", 5, 6, {}, [])
    assert books.get(3, "", 1) is None
    # at most the TTL
    books.put(4, "", 1, dict(a))
    clock[0] = 61.0
    assert books.get(4, "", 1) is None
    # a book bigger than the whole cache is not kept
    books.put(5, "", 1, {f"+2{i}": None for i in range(300)})
    assert books.get(5, "", 1) is None


async def test_a_new_books_first_upload_leaves_it_kept_whole(api: Api) -> None:
    """A book that never had a version is empty: its first big upload is not read back, and
    what it committed is the kept copy the next part of the upload starts from."""
    _, me = await api.user_with_token("+14155550100")
    first, second = BIG[:WHOLE_BOOK_FROM], BIG[WHOLE_BOOK_FROM:]
    assert counts(await upload(api, me, first)) == (len(first), 0, 0, 0)
    assert len(api.ctx.caches.books) == len(first)
    renamed = [{**c, "name": "Renamed"} for c in first[:10]]
    more = second + renamed + [{"phone": c["phone"]} for c in first[10:WHOLE_BOOK_FROM]]
    assert counts(await upload(api, me, more)) == (len(second), 10, 0, len(first) - 10)
    expected = {c["phone"]: c["name"] for c in BIG} | {c["phone"]: "Renamed" for c in renamed}
    assert await book(api, me) == expected
    assert len(api.ctx.caches.books) == len(BIG)
