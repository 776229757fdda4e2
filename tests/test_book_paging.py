"""Paging through an address book is paging through one version of it: a page asked for after
the book changed is 409 `book_changed` (start again), never a mix of old and new pages."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api


def numbers(start: int, count: int) -> list[str]:
    return [f"+1415555{start + i:04d}" for i in range(count)]


async def upload(api: Api, headers: dict[str, str], body: dict[str, Any]) -> None:
    r = await api.client.post("/v1/addressbook", json=body, headers=headers)
    assert r.status_code == 200, r.text


async def page(api: Api, headers: dict[str, str], cursor: str | None = None, **query: Any) -> Any:
    params = {"limit": 10, **query, **({"cursor": cursor} if cursor else {})}
    return await api.client.get("/v1/addressbook", params=params, headers=headers)


async def listing(api: Api, headers: dict[str, str], **query: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        r = await page(api, headers, cursor, **query)
        assert r.status_code == 200, r.text
        seen += [c["phone"] for c in r.json()["contacts"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return seen


async def test_a_page_after_a_force_upload_is_refused_and_a_fresh_listing_is_whole(
    api: Api,
) -> None:
    _, me = await api.user_with_token("+14155550100")
    old, new = numbers(4000, 25), numbers(4010, 25)  # overlapping: a mix would look plausible
    await upload(api, me, {"contacts": [{"phone": p} for p in old]})
    first = await page(api, me)
    assert [c["phone"] for c in first.json()["contacts"]] == old[:10]

    await upload(api, me, {"contacts": [{"phone": p} for p in new], "force": True})
    r = await page(api, me, first.json()["next_cursor"])
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "book_changed"
    assert await listing(api, me) == new


async def test_unchanged_books_page_through_and_other_books_do_not_interfere(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    await upload(api, me, {"contacts": [{"phone": p} for p in numbers(4000, 25)]})
    first = await page(api, me)
    # an upload that changes nothing, and a change to another device's book
    await upload(api, me, {"contacts": [{"phone": numbers(4000, 1)[0]}]})
    await upload(api, me, {"contacts": [{"phone": "+14155559999"}], "device_id": "tablet"})
    r = await page(api, me, first.json()["next_cursor"])
    assert r.status_code == 200, r.text
    assert [c["phone"] for c in r.json()["contacts"]] == numbers(4010, 10)


async def test_clearing_or_renaming_changes_the_version(api: Api) -> None:
    _, me = await api.user_with_token("+14155550100")
    await upload(api, me, {"contacts": [{"phone": p} for p in numbers(4000, 25)]})
    first = await page(api, me)
    await upload(api, me, {"contacts": [{"phone": numbers(4020, 1)[0], "name": "Renamed"}]})
    assert (await page(api, me, first.json()["next_cursor"])).status_code == 409
    second = await page(api, me)
    assert (await api.client.delete("/v1/addressbook", headers=me)).status_code == 200
    r = await page(api, me, second.json()["next_cursor"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "book_changed"
