""" "X joined": who hears it, with which name, and how it is muted. Both databases."""

from __future__ import annotations

import sqlalchemy as sa

from contactsync.server.clock import ManualClock
from contactsync.server.services import app_settings, joins, preferences, users
from contactsync.server.services.otp_senders import MemorySender
from tests.conftest import Api

JOINER = "+14155550199"


async def upload(
    api: Api, headers: dict[str, str], contacts: list[dict[str, object]], **options: object
) -> dict[str, object]:
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": contacts, **options}, headers=headers
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


async def joined(api: Api, headers: dict[str, str]) -> list[dict[str, object]]:
    return [e["data"] for e in await api.events(headers) if e["type"] == "contact.joined"]


async def test_every_holder_hears_once_with_their_own_name(api: Api) -> None:
    _, ann = await api.user_with_token("+14155550101")
    _, bob = await api.user_with_token("+14155550102")
    _, cy = await api.user_with_token("+14155550103")
    await upload(api, ann, [{"phone": "(415) 555-0199", "name": "Zed from work"}], region="US")
    # Bob holds the number in his global book and in a device book: one notice, global name.
    await upload(api, bob, [{"phone": "+1 415 555 0199", "name": "Zeddy"}], device_id="ipad")
    await upload(api, bob, [{"phone": JOINER, "name": "Zed"}])
    new = await api.create_user(JOINER, "Zed Zedson")
    assert await joined(api, ann) == [
        {"user_id": new["user_id"], "phone": JOINER, "name": "Zed from work"}
    ]
    assert await joined(api, bob) == [{"user_id": new["user_id"], "phone": JOINER, "name": "Zed"}]
    assert await joined(api, cy) == []
    # Registering again (idempotent) notifies nobody again.
    await api.create_user(JOINER)
    assert len(await joined(api, ann)) == 1


async def test_the_joiner_is_not_told_about_itself(api: Api) -> None:
    ann_user, ann = await api.user_with_token("+14155550101")
    await upload(api, ann, [{"phone": JOINER, "name": "Zed"}])
    new, headers = await api.user_with_token(JOINER)
    # The joiner's own book holds the number too: Ann hears, the joiner does not.
    await upload(api, headers, [{"phone": JOINER, "name": "me"}])
    assert [d["user_id"] for d in await joined(api, ann)] == [new["user_id"]]
    assert await joined(api, headers) == []
    async with api.ctx.read() as tx:
        holders = await joins.holders(tx, await users.get(tx, new["user_id"]))
    assert holders == {ann_user["user_id"]: "Zed"}


async def test_joining_by_otp_notifies_too(api: Api, otp_sender: MemorySender) -> None:
    _, ann = await api.user_with_token("+14155550101")
    await upload(api, ann, [{"phone": JOINER, "name": "Zed"}])
    await api.client.post("/v1/auth/otp/request", json={"phone": JOINER})
    r = await api.client.post(
        "/v1/auth/otp/verify",
        json={"phone": JOINER, "code": otp_sender.codes[JOINER], "device_id": "d1"},
    )
    assert r.json()["new_user"] is True
    assert [d["user_id"] for d in await joined(api, ann)] == [r.json()["user_id"]]


async def test_contacts_uploaded_after_the_join_come_back_as_registered(api: Api) -> None:
    zed = await api.create_user(JOINER)
    _, ann = await api.user_with_token("+14155550101")
    r = await upload(api, ann, [{"phone": JOINER, "name": "Zed"}])
    assert r["registered"] == [{"user_id": zed["user_id"], "phone": JOINER, "name": "Zed"}]
    events = await api.events(ann)
    assert [e["type"] for e in events] == ["contacts.registered"]
    assert events[0]["data"]["users"] == r["registered"]


async def test_app_wide_switch_turns_notices_off(api: Api) -> None:
    _, ann = await api.user_with_token("+14155550101")
    await upload(api, ann, [{"phone": JOINER, "name": "Zed"}])
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"notify_contact_joined": False})
    await api.create_user(JOINER)
    assert await joined(api, ann) == []


async def test_a_user_can_mute_join_notices(api: Api) -> None:
    ann_user, ann = await api.user_with_token("+14155550101")
    _, bob = await api.user_with_token("+14155550102")
    for headers in (ann, bob):
        await upload(api, headers, [{"phone": JOINER, "name": "Zed"}])
    async with api.ctx.tx() as tx:
        await preferences.update(
            tx, ann_user["user_id"], {"notify_contact_joined": False}, device_id=None
        )
    await api.create_user(JOINER)
    assert await joined(api, ann) == []
    assert len(await joined(api, bob)) == 1


async def test_join_leave_join_within_a_day_notifies_once(api: Api, clock: ManualClock) -> None:
    _, ann = await api.user_with_token("+14155550101")
    await upload(api, ann, [{"phone": JOINER, "name": "Zed"}])
    first = await api.create_user(JOINER)
    await api.client.delete(f"/v1/admin/users/{first['user_id']}", headers=api.admin)
    clock.advance(3600)
    # The deletion took the first notice (their name and number) out of ann's log ...
    assert await joined(api, ann) == []
    second = await api.create_user(JOINER)
    assert second["user_id"] != first["user_id"]
    assert await joined(api, ann) == []  # ... and the re-join within the day sends none
    # A day later a re-registration is a new join again.
    await api.client.delete(f"/v1/admin/users/{second['user_id']}", headers=api.admin)
    clock.advance(24 * 3600 + 1)
    third = await api.create_user(JOINER)
    assert [d["user_id"] for d in await joined(api, ann)] == [third["user_id"]]


async def test_deleting_a_user_removes_their_books_and_hides_them(api: Api) -> None:
    zed, zed_headers = await api.user_with_token(JOINER)
    await upload(api, zed_headers, [{"phone": "+14155550101", "name": "Ann"}])
    await upload(api, zed_headers, [{"phone": "+14155550102"}], device_id="tab")
    _, ann = await api.user_with_token("+14155550101")
    await upload(api, ann, [{"phone": JOINER, "name": "Zed"}])
    assert (
        len((await api.client.get("/v1/addressbook/registered", headers=ann)).json()["users"]) == 1
    )
    await api.client.delete(f"/v1/admin/users/{zed['user_id']}", headers=api.admin)
    async with api.ctx.read() as tx:
        for table in ("book_entries", "discovery_checks", "upload_batches"):
            column = "owner_id"
            n = await tx.conn.scalar(
                sa.text(f"SELECT count(*) FROM {table} WHERE {column} = :u"), {"u": zed["user_id"]}
            )
            assert n == 0, table
    assert (await api.client.get("/v1/addressbook/registered", headers=ann)).json()["users"] == []
    r = await upload(api, ann, [{"phone": JOINER, "name": "Zed"}])
    assert r["registered"] == []
