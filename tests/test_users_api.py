"""Users, devices and tokens through the HTTP API, on both databases."""

from __future__ import annotations

import sqlalchemy as sa

from contactsync.server.services import events as event_log
from tests.conftest import Api


async def test_create_user_is_idempotent_on_the_phone(api: Api) -> None:
    first = await api.client.post(
        "/v1/admin/users", json={"phone": "+1 (415) 555-0100", "name": "Ann"}, headers=api.admin
    )
    assert first.status_code == 201
    body = first.json()
    assert body["phone"] == "+14155550100" and body["name"] == "Ann" and body["region"] == "US"
    again = await api.client.post(
        "/v1/admin/users", json={"phone": "4155550100", "region": "US"}, headers=api.admin
    )
    assert again.status_code == 200
    assert again.json()["user_id"] == body["user_id"]


async def test_national_number_needs_a_region(api: Api) -> None:
    r = await api.client.post("/v1/admin/users", json={"phone": "030 1234567"}, headers=api.admin)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_phone"
    assert r.json()["error"]["details"]["reason"] == "invalid_country_code"
    r = await api.client.post(
        "/v1/admin/users", json={"phone": "030 1234567", "region": "DE"}, headers=api.admin
    )
    assert r.status_code == 201 and r.json()["phone"] == "+49301234567"


async def test_token_reads_me_and_logout_revokes_it(api: Api) -> None:
    user, headers = await api.user_with_token("+14155550100", "Ann", device_id="ipad-7")
    me = await api.client.get("/v1/me", headers=headers)
    assert me.status_code == 200
    assert me.json() == {
        "user_id": user["user_id"],
        "phone": "+14155550100",
        "name": "Ann",
        "region": "US",
        "restricted": False,
        "device_id": "ipad-7",
    }
    assert (await api.client.delete("/v1/me/session", headers=headers)).status_code == 204
    again = await api.client.get("/v1/me", headers=headers)
    assert again.status_code == 401 and again.json()["error"]["code"] == "unauthorized"


async def test_new_token_for_a_device_replaces_the_old_one(api: Api) -> None:
    user = await api.create_user("+14155550100")
    old = await api.token(user["user_id"], "d1")
    other_device = await api.token(user["user_id"], "d2")
    new = await api.token(user["user_id"], "d1")
    assert (await api.client.get("/v1/me", headers=old)).status_code == 401
    assert (await api.client.get("/v1/me", headers=new)).status_code == 200
    assert (await api.client.get("/v1/me", headers=other_device)).status_code == 200
    devices = await api.client.get(f"/v1/admin/users/{user['user_id']}/devices", headers=api.admin)
    assert [d["device_id"] for d in devices.json()["devices"]] == ["d1", "d2"]


async def test_admin_revokes_all_tokens(api: Api) -> None:
    user = await api.create_user("+14155550100")
    a, b = await api.token(user["user_id"], "d1"), await api.token(user["user_id"], "d2")
    r = await api.client.delete(f"/v1/admin/users/{user['user_id']}/tokens", headers=api.admin)
    assert r.json() == {"revoked": 2}
    for headers in (a, b):
        assert (await api.client.get("/v1/me", headers=headers)).status_code == 401


async def test_patch_user(api: Api) -> None:
    user = await api.create_user("+14155550100", "Ann")
    url = f"/v1/admin/users/{user['user_id']}"
    r = await api.client.patch(url, json={"restricted": True}, headers=api.admin)
    assert r.status_code == 200 and r.json()["restricted"] is True and r.json()["name"] == "Ann"
    r = await api.client.patch(url, json={"name": None}, headers=api.admin)
    assert r.json()["name"] is None and r.json()["restricted"] is True
    r = await api.client.patch(url, json={"restricted": "maybe"}, headers=api.admin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = await api.client.patch(url, json={"region": "XX"}, headers=api.admin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_region"
    assert (await api.client.get(url, headers=api.admin)).json()["restricted"] is True


async def test_delete_user_removes_their_data(api: Api) -> None:
    user, headers = await api.user_with_token("+14155550100")
    uid = user["user_id"]
    async with api.ctx.tx() as tx:
        await event_log.append(tx, [event_log.NewEvent(uid, "test.event", {"n": 1})])
    assert len(await api.events(headers)) == 1
    r = await api.client.delete(f"/v1/admin/users/{uid}", headers=api.admin)
    assert r.status_code == 204
    assert (await api.client.get("/v1/me", headers=headers)).status_code == 401
    async with api.ctx.read() as tx:
        for table in ("users", "devices", "tokens", "events", "event_counters"):
            column = "id" if table == "users" else "user_id"
            count = await tx.conn.scalar(
                sa.text(f"SELECT count(*) FROM {table} WHERE {column} = :u"), {"u": uid}
            )
            assert count == 0, table
    again = await api.client.delete(f"/v1/admin/users/{uid}", headers=api.admin)
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    # The number can register again, as a new user.
    fresh = await api.create_user("+14155550100")
    assert fresh["user_id"] != uid


async def test_admin_calls_need_the_admin_key(api: Api) -> None:
    _, user_headers = await api.user_with_token("+14155550100")
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        user_headers,
        {"Authorization": "Basic abc"},
    ):
        r = await api.client.post(
            "/v1/admin/users", json={"phone": "+14155550101"}, headers=headers
        )
        assert r.status_code in (401, 403), headers
        assert r.json()["error"]["code"] in ("unauthorized", "admin_required")
    async with api.ctx.read() as tx:
        assert await tx.conn.scalar(sa.text("SELECT count(*) FROM users")) == 1


async def test_unknown_user_ids(api: Api) -> None:
    for method, path, body in (
        ("GET", "/v1/admin/users/999", None),
        ("PATCH", "/v1/admin/users/999", {"name": "x"}),
        ("POST", "/v1/admin/users/999/tokens", {"device_id": "d"}),
    ):
        r = await api.client.request(method, path, json=body, headers=api.admin)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    for bad in ("not-a-number", "0", "-3", "10000000000000000000"):
        r = await api.client.get(f"/v1/admin/users/{bad}", headers=api.admin)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", bad


async def test_bad_device_ids(api: Api) -> None:
    user = await api.create_user("+14155550100")
    for device_id in ("", "a" * 129, "has space", "slash/y", 7, None):
        r = await api.client.post(
            f"/v1/admin/users/{user['user_id']}/tokens",
            json={"device_id": device_id},
            headers=api.admin,
        )
        assert r.status_code == 422, device_id
        assert r.json()["error"]["code"] == "invalid_request"
    async with api.ctx.read() as tx:
        assert await tx.conn.scalar(sa.text("SELECT count(*) FROM devices")) == 0
