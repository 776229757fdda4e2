"""Profiles cannot be crawled by user id (issue 13 item 9): reads of profiles the reader has
no relation with count against `profile_reads_per_hour`; related reads are free."""

from __future__ import annotations

from contactsync.server.clock import ManualClock
from contactsync.server.services import app_settings
from tests.conftest import Api


async def test_stranger_reads_are_limited(api: Api, clock: ManualClock) -> None:
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"profile_reads_per_hour": 3})
    me, mh = await api.user_with_token("+14155550100")
    friend = await api.create_user("+14155550101")
    booked = await api.create_user("+14155550102")
    strangers = [await api.create_user(f"+1415555020{i}") for i in range(3)]
    r = await api.client.put(f"/v1/relations/{friend['user_id']}", json={}, headers=mh)
    assert r.status_code == 200
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": "+14155550102"}]}, headers=mh
    )
    assert r.status_code == 200

    # two strangers and one id nobody has use up the three
    for uid in (strangers[0]["user_id"], strangers[1]["user_id"], 999_999):
        r = await api.client.get(f"/v1/users/{uid}/profile", headers=mh)
        assert r.status_code in (200, 404)
    for uid in (strangers[2]["user_id"], 999_998):  # beyond: the same 429 whether or not it exists
        r = await api.client.get(f"/v1/users/{uid}/profile", headers=mh)
        assert r.status_code == 429, r.text
        error = r.json()["error"]
        assert error["code"] == "profile_read_quota_exceeded"
        assert error["details"]["setting"] == "profile_reads_per_hour"
        assert r.headers["retry-after"] == "1200" == str(error["details"]["retry_after"])
    # related reads, and one's own, stay free
    for uid in (friend["user_id"], booked["user_id"], me["user_id"]):
        r = await api.client.get(f"/v1/users/{uid}/profile", headers=mh)
        assert r.status_code == 200, r.text
    clock.advance(1200)
    r = await api.client.get(f"/v1/users/{strangers[2]['user_id']}/profile", headers=mh)
    assert r.status_code == 200
