"""Preferences: defaults, partial updates, validation, preferences.updated to every device."""

from __future__ import annotations

import sqlalchemy as sa

from contactsync.server.services import preferences
from contactsync.server.store.tables import user_preferences, users
from tests.conftest import Api
from tests.test_conversations import count, error, person


async def test_defaults_then_partial_updates_shared_by_all_devices(api: Api) -> None:
    a, phone = await person(api, 1)
    laptop = await api.token(a, "laptop")
    r = await api.client.get("/v1/me/preferences", headers=laptop)
    assert r.status_code == 200
    assert r.json() == {
        "consent_from_contacts": "allowed",
        "consent_from_others": "unknown",
        "notify_messages": True,
        "notify_message_requests": True,
        "notify_conversations": True,
        "notify_contact_joined": True,
        "discoverable_by": None,
        "announce_join_to": "everybody",
    }
    r = await api.client.put(
        "/v1/me/preferences",
        json={"notify_contact_joined": False, "consent_from_others": "denied"},
        headers=phone,
    )
    assert r.status_code == 200
    assert r.json()["notify_contact_joined"] is False and r.json()["notify_messages"] is True
    # A second partial update keeps the first.
    r = await api.client.put("/v1/me/preferences", json={"notify_messages": False}, headers=laptop)
    assert r.json()["notify_contact_joined"] is False and r.json()["notify_messages"] is False
    assert (await api.client.get("/v1/me/preferences", headers=phone)).json() == r.json()
    log = await api.events(laptop)
    assert [e["type"] for e in log] == ["preferences.updated", "preferences.updated"]
    assert log[0]["data"]["device_id"] == "phone-1"
    assert log[0]["data"]["changed"] == ["consent_from_others", "notify_contact_joined"]
    assert log[1]["data"]["preferences"] == r.json()
    # Setting what is already set tells no one; going back to a default stores nothing for it.
    await api.client.put("/v1/me/preferences", json={"notify_messages": False}, headers=phone)
    assert len(await api.events(phone)) == 2
    async with api.ctx.read() as tx:
        assert (await preferences.get_preferences(tx, a))["notify_contact_joined"] is False
        other = await preferences.get_preferences(tx, 999)
    assert other == preferences.DEFAULTS


async def test_bad_preferences_are_refused_and_change_nothing(api: Api) -> None:
    _, headers = await person(api, 1)
    for body in (
        {"notify_contact_joined": "sometimes"},
        {"consent_from_contacts": "denied"},
        {"consent_from_others": "allowed"},
        {"volume": 11},
        {"notify_messages": False, "bogus": True},
        [1, 2],
        "x",
    ):
        r = await api.client.put("/v1/me/preferences", json=body, headers=headers)
        assert (r.status_code, error(r)) == (422, "invalid_request"), body
    assert await count(api, user_preferences) == 0
    assert await api.events(headers) == []
    assert (await api.client.get("/v1/me/preferences")).status_code == 401


async def test_muting_contact_joined_is_the_switch_discovery_reads(api: Api) -> None:
    a, ha = await person(api, 1)
    c, hc = await person(api, 3)
    for headers in (ha, hc):
        r = await api.client.post(
            "/v1/addressbook", json={"contacts": [{"phone": "+14155550002"}]}, headers=headers
        )
        assert r.status_code == 200, r.text
    r = await api.client.put(
        "/v1/me/preferences", json={"notify_contact_joined": False}, headers=ha
    )
    assert r.status_code == 200
    async with api.ctx.read() as tx:
        assert (await preferences.get_preferences(tx, a))["notify_contact_joined"] is False
        assert (await preferences.get_preferences(tx, c))["notify_contact_joined"] is True
    await api.create_user("+14155550002")
    assert "contact.joined" not in [e["type"] for e in await api.events(ha)]
    assert "contact.joined" in [e["type"] for e in await api.events(hc)]
    # The switch discovery reads (a column of users) is what the preference shows.
    async with api.ctx.tx() as tx:
        await tx.conn.execute(
            sa.update(users).where(users.c.id == a).values(notify_contact_joined=True)
        )
    r = await api.client.get("/v1/me/preferences", headers=ha)
    assert r.json()["notify_contact_joined"] is True
