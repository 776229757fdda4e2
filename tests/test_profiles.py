"""Profiles: fields with access levels, what others see, and profile.updated events."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import Api

H = dict[str, str]


async def patch(api: Api, headers: H, fields: dict[str, Any]) -> Any:
    return await api.client.patch("/v1/me/profile", json={"fields": fields}, headers=headers)


async def seen(api: Api, headers: H, user_id: int) -> Any:
    r = await api.client.get(f"/v1/users/{user_id}/profile", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["fields"]


async def relate(api: Api, headers: H, target: int | str, **body: Any) -> Any:
    r = await api.client.put(f"/v1/relations/{target}", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def updates(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in evs if e["type"] == "profile.updated"]


async def test_own_profile_round_trip(api: Api) -> None:
    ann, h = await api.user_with_token("+14155550100")
    r = await patch(
        api,
        h,
        {
            "name": {"value": "Ann", "level": 0},
            "status": {"value": "busy", "level": 2},
            "photo": {"value": "https://example.com/a.jpg"},
            "age": {"value": 41, "level": 63},
            "verified": {"value": True},
        },
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "user_id": ann["user_id"],
        "fields": {
            "age": {"value": 41, "level": 63},
            "name": {"value": "Ann", "level": 0},
            "photo": {"value": "https://example.com/a.jpg", "level": 0},
            "status": {"value": "busy", "level": 2},
            "verified": {"value": True, "level": 0},
        },
    }
    # A value without a level keeps the field's level; null removes the field.
    r = await patch(api, h, {"status": {"value": "free"}, "photo": None, "gone": None})
    fields = r.json()["fields"]
    assert fields["status"] == {"value": "free", "level": 2} and "photo" not in fields
    assert (await api.client.get("/v1/me/profile", headers=h)).json() == r.json()
    # A user sees all of their own profile through the public path too.
    assert await seen(api, h, ann["user_id"]) == {
        "age": 41,
        "name": "Ann",
        "status": "free",
        "verified": True,
    }


async def test_others_see_public_fields_and_the_levels_granted_to_them(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob, bh = await api.user_with_token("+14155550101")
    cat, ch = await api.user_with_token("+14155550102")
    await patch(
        api,
        ah,
        {
            "name": {"value": "Ann", "level": 0},
            "status": {"value": "busy", "level": 1},
            "email": {"value": "ann@example.com", "level": 5},
        },
    )
    a = ann["user_id"]
    assert await seen(api, bh, a) == {"name": "Ann"}
    await relate(api, ah, bob["user_id"], access_levels=[1])
    assert await seen(api, bh, a) == {"name": "Ann", "status": "busy"}
    assert await seen(api, ch, a) == {"name": "Ann"}
    await relate(api, ah, bob["user_id"], access_levels=[5], mode="merge")
    assert await seen(api, bh, a) == {"name": "Ann", "status": "busy", "email": "ann@example.com"}
    # Levels only count while Bob is a contact.
    await relate(api, ah, bob["user_id"], contact=False, subscribe=True)
    assert await seen(api, bh, a) == {"name": "Ann"}
    # Who Bob holds as a contact does not matter for what Bob sees of Ann.
    await relate(api, bh, a, access_levels=[1, 5])
    assert await seen(api, bh, a) == {"name": "Ann"}
    assert cat["user_id"]


@pytest.mark.parametrize(
    "level",
    [-1, 64, 10**30, 1.5, 2.0, "1", True, [1], {"l": 1}],
)
async def test_bad_levels_are_refused_and_change_nothing(api: Api, level: Any) -> None:
    _, h = await api.user_with_token("+14155550100")
    await patch(api, h, {"name": {"value": "Ann", "level": 0}})
    r = await patch(
        api, h, {"status": {"value": "x", "level": 1}, "name": {"value": "B", "level": level}}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_level"
    assert r.json()["error"]["details"]["field"] == "fields.name.level"
    own = (await api.client.get("/v1/me/profile", headers=h)).json()["fields"]
    assert own == {"name": {"value": "Ann", "level": 0}}


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"": {"value": "x"}}, "invalid_request"),
        ({"9lives": {"value": "x"}}, "invalid_request"),
        ({"has space": {"value": "x"}}, "invalid_request"),
        ({"n" * 65: {"value": "x"}}, "invalid_request"),
        ({"name": {"value": "x" * 4097}}, "invalid_request"),
        ({"name": {"value": {"nested": 1}}}, "invalid_request"),
        ({"name": {"value": [1, 2]}}, "invalid_request"),
        ({"name": {"value": None}}, "invalid_request"),
        ({"name": {"level": 1}}, "invalid_request"),
        ({"name": {"value": "x", "extra": 1}}, "invalid_request"),
        ({"name": "Ann"}, "invalid_request"),
        ({f"f{i}": {"value": i} for i in range(65)}, "invalid_request"),
    ],
)
async def test_bad_fields_are_refused(api: Api, fields: dict[str, Any], code: str) -> None:
    _, h = await api.user_with_token("+14155550100")
    r = await patch(api, h, fields)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code
    async with api.ctx.read() as tx:
        assert await tx.conn.scalar(sa.text("SELECT count(*) FROM profile_fields")) == 0


async def test_a_profile_holds_at_most_64_fields(api: Api) -> None:
    _, h = await api.user_with_token("+14155550100")
    r = await patch(api, h, {f"f{i}": {"value": i} for i in range(60)})
    assert r.status_code == 200
    r = await patch(api, h, {f"g{i}": {"value": i} for i in range(5)})
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_fields"
    r = await patch(api, h, {"f0": None, **{f"g{i}": {"value": i} for i in range(5)}})
    assert r.status_code == 200 and len(r.json()["fields"]) == 64


async def test_nan_is_refused(api: Api) -> None:
    _, h = await api.user_with_token("+14155550100")
    r = await api.client.patch(
        "/v1/me/profile",
        content=b'{"fields": {"n": {"value": NaN}}}',
        headers={**h, "content-type": "application/json"},
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


async def test_unknown_and_blocked_users_look_the_same(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob, bh = await api.user_with_token("+14155550101")
    await patch(api, ah, {"name": {"value": "Ann"}})
    await patch(api, bh, {"name": {"value": "Bob"}})
    unknown = await api.client.get("/v1/users/999999/profile", headers=bh)
    assert unknown.status_code == 404
    # Ann blocks Bob: neither sees the other, and the answer is the unknown user's answer.
    assert (await api.client.put(f"/v1/blocks/{bob['user_id']}", headers=ah)).status_code == 204
    for viewer, target in ((bh, ann["user_id"]), (ah, bob["user_id"])):
        r = await api.client.get(f"/v1/users/{target}/profile", headers=viewer)
        assert r.status_code == 404
        body = r.json()
        body["error"]["details"]["user_id"] = 999999
        assert body == unknown.json()
    assert (await api.client.delete(f"/v1/blocks/{bob['user_id']}", headers=ah)).status_code == 204
    assert await seen(api, bh, ann["user_id"]) == {"name": "Ann"}
    r = await api.client.get("/v1/users/abc/profile", headers=bh)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert (await api.client.get("/v1/users/1/profile")).status_code == 401


async def test_profile_updated_carries_only_what_each_subscriber_may_see(api: Api) -> None:
    ann, ah = await api.user_with_token("+14155550100")
    bob, bh = await api.user_with_token("+14155550101")  # subscriber, contact with level 1
    cat, ch = await api.user_with_token("+14155550102")  # subscriber, not a contact
    dan, dh = await api.user_with_token("+14155550103")  # not a subscriber
    a = ann["user_id"]
    await relate(api, bh, a, contact=False, subscribe=True)
    await relate(api, ch, a, contact=False, subscribe=True)
    await relate(api, ah, bob["user_id"], access_levels=[1])
    marks = {"b": 0, "c": 0, "d": 0}

    async def new(h: H, who: str) -> list[dict[str, Any]]:
        evs = await api.events(h, after=marks[who])
        if evs:
            marks[who] = evs[-1]["seq"]
        return updates(evs)

    for h, who in ((bh, "b"), (ch, "c"), (dh, "d")):
        await new(h, who)
    await patch(
        api, ah, {"name": {"value": "Ann", "level": 0}, "status": {"value": "x", "level": 1}}
    )
    assert await new(bh, "b") == [
        {"user_id": a, "fields": {"name": "Ann", "status": "x"}, "removed": []}
    ]
    assert await new(ch, "c") == [{"user_id": a, "fields": {"name": "Ann"}, "removed": []}]
    assert await new(dh, "d") == []
    # A change only Bob may see: Cat gets no event at all.
    await patch(api, ah, {"status": {"value": "y"}})
    assert await new(bh, "b") == [{"user_id": a, "fields": {"status": "y"}, "removed": []}]
    assert await new(ch, "c") == []
    # The same value again changes nothing: no events.
    await patch(api, ah, {"status": {"value": "y"}, "name": {"value": "Ann"}})
    assert await new(bh, "b") == [] and await new(ch, "c") == []
    # Making a field public shows it to Cat; hiding one removes it from Cat's view.
    await patch(api, ah, {"status": {"value": "y", "level": 0}})
    assert await new(bh, "b") == []
    assert await new(ch, "c") == [{"user_id": a, "fields": {"status": "y"}, "removed": []}]
    await patch(api, ah, {"name": {"value": "Ann", "level": 1}})
    assert await new(bh, "b") == []
    assert await new(ch, "c") == [{"user_id": a, "fields": {}, "removed": ["name"]}]
    await patch(api, ah, {"status": None})
    assert await new(bh, "b") == [{"user_id": a, "fields": {}, "removed": ["status"]}]
    assert await new(ch, "c") == [{"user_id": a, "fields": {}, "removed": ["status"]}]
    # Blocks either way stop the events.
    await api.client.put(f"/v1/blocks/{a}", headers=ch)
    await api.client.put(f"/v1/blocks/{bob['user_id']}", headers=ah)
    await patch(api, ah, {"mood": {"value": "ok"}})
    assert await new(bh, "b") == [] and await new(ch, "c") == []
    assert dan["user_id"] and cat["user_id"]
