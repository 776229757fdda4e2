"""Matching by a number's old and variant forms, through the API, on both databases.

A user registered under the canonical number is found by contacts that hold it in any form a
rule of contactsync.phone_variants covers: uploads rewrite old forms (and say so), Argentine
mobiles match with and without the 9, relations by number and "X joined" follow the same rule,
and the discovery quota counts contacts, not variants.
"""

from __future__ import annotations

from typing import Any

import pytest

from contactsync.server.services import app_settings
from tests.conftest import Api

H = dict[str, str]

# (canonical number a friend registers under, how a phone book holds it, region of the book)
FORMS = [
    ("+525512345678", "+52 1 55 1234 5678", None),  # Mexico, the mobile 1 before 2019
    ("+525512345678", "044 55 1234 5678", "MX"),  # Mexico, national mobile prefix
    ("+525512345678", "00 52 1 55 1234 5678", "US"),
    ("+5511987654321", "(11) 8765-4321", "BR"),  # Brazil, before the ninth digit
    ("+84323456789", "0162 345 6789", "VN"),  # Vietnam, 11-digit mobile
    ("+2250707123456", "+225 07 12 34 56", None),  # Côte d'Ivoire, 8 digits
    ("+2290197123456", "97 12 34 56", "BJ"),  # Benin, before the 01
    ("+576012345678", "+57 1 234 5678", None),  # Colombia, fixed line before 60
    ("+201001234567", "010 123 4567", "EG"),  # Egypt, 10-digit mobile
    ("+237677123456", "+237 77 12 34 56", None),  # Cameroon, 8 digits
    ("+5491123456789", "+54 11 2345 6789", None),  # Argentina, mobile without the 9
    ("+541123456789", "+54 9 11 2345 6789", None),  # and the other way round
    ("+5491123456789", "011 15 2345 6789", "AR"),  # national 15 form (libphonenumber's)
]
OLD = {raw for canonical, raw, _ in FORMS if not canonical.startswith("+54")}


async def upload(api: Api, headers: H, contacts: list[dict[str, Any]], **options: Any) -> Any:
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": contacts, **options}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()


async def registered_in_book(api: Api, headers: H) -> list[dict[str, Any]]:
    r = await api.client.get("/v1/addressbook/registered?compact=true", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["users"])


async def joined(api: Api, headers: H) -> list[dict[str, Any]]:
    return [e["data"] for e in await api.events(headers) if e["type"] == "contact.joined"]


@pytest.mark.parametrize(("canonical", "raw", "region"), FORMS)
async def test_a_user_is_found_by_a_contact_in_any_form(
    api: Api, canonical: str, raw: str, region: str | None
) -> None:
    friend = await api.create_user(canonical, "Friend")
    _, ann = await api.user_with_token("+14155550101")
    r = await upload(
        api, ann, [{"phone": "+14155550100"}, {"phone": raw, "name": "F"}], region=region
    )
    assert r["invalid"] == []
    # Reported under the number as the book holds it (old forms as the current number).
    held = r["registered"][0]["phone"]
    assert r["registered"] == [{"user_id": friend["user_id"], "phone": held, "name": "F"}]
    if raw in OLD:
        assert held == canonical
        assert r["rewritten"] == [{"index": 1, "from": raw, "to": canonical}]
    else:
        assert r["rewritten"] == []
    assert await registered_in_book(api, ann) == [{"user_id": friend["user_id"], "phone": held}]
    page = await api.client.get("/v1/addressbook", headers=ann)
    assert held in [c["phone"] for c in page.json()["contacts"]]


async def test_registration_stores_the_current_number(api: Api) -> None:
    user = await api.create_user("+52 1 55 1234 5678")
    assert user["phone"] == "+525512345678"
    again = await api.create_user("044 55 1234 5678", region="MX")
    assert again["user_id"] == user["user_id"]


async def test_a_holder_of_a_variant_hears_x_joined_once(api: Api) -> None:
    _, ann = await api.user_with_token("+14155550101")
    _, bob = await api.user_with_token("+14155550102")
    _, cy = await api.user_with_token("+14155550103")
    await upload(api, ann, [{"phone": "+54 11 2345 6789", "name": "Zed sin 9"}])
    # Bob holds both forms, in two books: still one notice.
    await upload(api, bob, [{"phone": "+54 9 11 2345 6789", "name": "Zed"}])
    await upload(api, bob, [{"phone": "+54 11 2345 6789", "name": "Z"}], device_id="ipad")
    await upload(api, cy, [{"phone": "044 55 1234 5678", "name": "Mex"}], region="MX")
    zed = await api.create_user("+54 9 11 2345 6789", "Zed")
    assert await joined(api, ann) == [
        {"user_id": zed["user_id"], "phone": "+541123456789", "name": "Zed sin 9"}
    ]
    assert await joined(api, bob) == [
        {"user_id": zed["user_id"], "phone": "+5491123456789", "name": "Zed"}
    ]
    mex = await api.create_user("+52 55 1234 5678")
    assert await joined(api, cy) == [
        {"user_id": mex["user_id"], "phone": "+525512345678", "name": "Mex"}
    ]


async def test_a_variant_never_stands_for_a_different_registered_person(api: Api) -> None:
    # Both forms registered, as two users: each contact is the user of its own number.
    with9 = await api.create_user("+5491123456789", "mobile")
    without = await api.create_user("+541123456789", "other")
    _, ann = await api.user_with_token("+14155550101")
    r = await upload(api, ann, [{"phone": "+541123456789", "name": "A"}])
    assert r["registered"] == [
        {"user_id": without["user_id"], "phone": "+541123456789", "name": "A"}
    ]
    r = await upload(api, ann, [{"phone": "+5491123456789", "name": "B"}])
    assert r["registered"] == [
        {"user_id": with9["user_id"], "phone": "+5491123456789", "name": "B"}
    ]
    # A book holding both forms: each user once, under their own number.
    assert [u["user_id"] for u in await registered_in_book(api, ann)] == [
        without["user_id"],
        with9["user_id"],
    ]


async def test_a_book_with_both_forms_reports_the_user_once(api: Api) -> None:
    zed = await api.create_user("+5491123456789")
    _, ann = await api.user_with_token("+14155550101")
    r = await upload(
        api,
        ann,
        [{"phone": "+541123456789", "name": "A"}, {"phone": "+5491123456789", "name": "B"}],
    )
    assert r["registered"] == [{"user_id": zed["user_id"], "phone": "+5491123456789", "name": "B"}]
    assert await registered_in_book(api, ann) == [
        {"user_id": zed["user_id"], "phone": "+5491123456789"}
    ]


async def test_relations_by_a_variant_reach_the_user(api: Api) -> None:
    zed = await api.create_user("+5491123456789")
    _, ann = await api.user_with_token("+14155550101")
    r = await api.client.put("/v1/relations/+541123456789", json={}, headers=ann)
    assert r.status_code == 200, r.text
    assert (r.json()["user_id"], r.json()["pending"]) == (zed["user_id"], False)
    # sync: an old form and a variant of one user make one relation
    _, bob = await api.user_with_token("+14155550102")
    r = await api.client.post(
        "/v1/relations/sync",
        json={"phones": ["+54 11 2345 6789", "+54 9 11 2345 6789", "+52 1 55 1234 5678"]},
        headers=bob,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["created"], r.json()["pending"], r.json()["invalid"]) == (2, 1, [])
    assert r.json()["rewritten"] == [
        {"index": 2, "from": "+52 1 55 1234 5678", "to": "+525512345678"}
    ]
    got = await api.client.get(f"/v1/relations/{zed['user_id']}", headers=bob)
    assert got.json()["contact"] is True


async def test_a_pending_relation_on_a_variant_attaches_when_the_user_joins(api: Api) -> None:
    _, ann = await api.user_with_token("+14155550101")
    r = await api.client.put("/v1/relations/+541123456789", json={}, headers=ann)
    assert r.json()["pending"] is True
    zed = await api.create_user("+5491123456789")
    got = await api.client.get(f"/v1/relations/{zed['user_id']}", headers=ann)
    assert (got.json()["user_id"], got.json()["pending"]) == (zed["user_id"], False)
    assert [d["user_id"] for d in await joined(api, ann)] == [zed["user_id"]]


async def test_a_variant_of_the_callers_own_number_is_self(api: Api) -> None:
    _, ann = await api.user_with_token("+5491123456789")
    r = await api.client.put("/v1/relations/+541123456789", json={}, headers=ann)
    assert r.status_code == 422 and r.json()["error"]["code"] == "self_relation", r.text


async def test_the_quota_counts_contacts_not_variants(api: Api) -> None:
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"discovery_quota": 2})
    _, ann = await api.user_with_token("+14155550101")
    # Two Argentine contacts, each with a variant probed: two numbers of quota, not four.
    r = await upload(api, ann, [{"phone": "+541123456789"}, {"phone": "+543512345678"}])
    assert r["created"] == 2
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": "+14155550188"}]}, headers=ann
    )
    assert r.status_code == 429, r.text  # and the quota is really 2
