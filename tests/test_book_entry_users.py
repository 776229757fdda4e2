"""Who each book entry's number is registered to (`book_entries.user_id`): a re-check of a
book reads it instead of looking every number up, so it must follow registrations, leavers and
re-joins, and a registration racing an upload of its number, on both databases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from contactsync.server.services import addressbook, joins
from tests.conftest import Api

N1, N2, N3 = "+14155550111", "+14155550112", "+14155550113"


@dataclass
class Contact:
    phone: str
    name: str | None = None
    destroy: bool = False


async def recheck(api: Api, headers: dict[str, str], numbers: list[str]) -> dict[str, int]:
    """Upload the numbers again: {number: user id} of the registered ones it reports."""
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": n} for n in numbers]}, headers=headers
    )
    assert r.status_code == 200, r.text
    return {u["phone"]: u["user_id"] for u in r.json()["registered"]}


async def registered_in_book(api: Api, headers: dict[str, str]) -> dict[str, int]:
    r = await api.client.get("/v1/addressbook/registered?compact=true", headers=headers)
    assert r.status_code == 200, r.text
    return {u["phone"]: u["user_id"] for u in r.json()["users"]}


async def test_a_recheck_follows_joins_leavers_and_rejoins(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    two = await api.create_user(N2)
    assert await recheck(api, me, [N1, N2, N3]) == {N2: two["user_id"]}
    one = await api.create_user(N1)
    # the entries made before N1 registered know of it now, as the listing always did
    expected = {N1: one["user_id"], N2: two["user_id"]}
    assert await recheck(api, me, [N1, N2, N3]) == expected
    assert await registered_in_book(api, me) == expected
    r = await api.client.delete(f"/v1/admin/users/{two['user_id']}", headers=api.admin)
    assert r.status_code in (200, 204), r.text
    assert await recheck(api, me, [N1, N2, N3]) == {N1: one["user_id"]}
    again = await api.create_user(N2)
    assert again["user_id"] != two["user_id"]
    assert await recheck(api, me, [N1, N2, N3]) == {N1: one["user_id"], N2: again["user_id"]}
    # an entry in a second book of the owner, made while the number is registered
    r = await api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": N2}], "device_id": "tablet"},
        headers=me,
    )
    assert [u["user_id"] for u in r.json()["registered"]] == [again["user_id"]]


def _concurrent_writers(api: Api) -> None:
    if api.ctx.db.is_sqlite:
        pytest.skip("SQLite runs one write transaction at a time: no such race there")


async def test_an_upload_committing_after_a_registration_of_its_number(api: Api) -> None:
    """The upload looked the number up before the registration committed and commits after
    it: the upload's follow-up, after its commit, sees the registration."""
    _concurrent_writers(api)
    me, headers = await api.user_with_token("+14155550100")
    async with api.ctx.tx() as tx:
        answer = await addressbook.upload(
            tx,
            addressbook.Owner(me["user_id"], None),
            addressbook.Upload(contacts=[Contact(N1, "One")]),
            default_region=None,
        )
        assert answer["created"] == 1 and answer["registered"] == []
        joined = await api.create_user(N1)  # another connection: commits meanwhile
    assert await recheck(api, headers, [N1]) == {N1: joined["user_id"]}


async def test_a_registration_committing_after_an_upload_of_its_number(api: Api) -> None:
    """The registration marked the number's entries before the upload committed, and commits
    after it: the registration's follow-up, after its commit, sees the upload's entry."""
    _concurrent_writers(api)
    _, headers = await api.user_with_token("+14155550100")
    user: Any = None
    async with api.ctx.tx() as tx:
        user, created = await joins.register(tx, N1, name=None, region=None, default_region=None)
        assert created
        # another connection: the upload commits while the registration is open
        assert await recheck(api, headers, [N1]) == {}
    assert await recheck(api, headers, [N1]) == {N1: user.id}
