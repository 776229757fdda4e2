"""Ids and cursors beyond 64 bits are answered as not found / invalid, never a 500."""

from __future__ import annotations

import base64

from tests.conftest import Api

HUGE = 10**19  # above BIGINT's maximum


async def test_huge_ids_and_cursors(api: Api) -> None:
    _, h = await api.user_with_token("+14155550100")
    # A user id in the path is bounded by the route: refused as an invalid request.
    for method, path in (
        ("GET", f"/v1/users/{HUGE}/profile"),
        ("PUT", f"/v1/blocks/{HUGE}"),
        ("DELETE", f"/v1/blocks/{HUGE}"),
    ):
        r = await api.client.request(method, path, headers=h)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error"]["code"] == "invalid_request", (path, r.text)
    r = await api.client.get(f"/v1/admin/pairs/{HUGE}", headers=api.admin)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    # A relation target is a user id or a number: an id no user can have is not found.
    for method in ("GET", "PUT"):
        r = await api.client.request(
            method, f"/v1/relations/{HUGE}", headers=h, json={} if method == "PUT" else None
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    for body in ({"a": HUGE, "b": 1}, {"a": 1, "b": -HUGE}):
        r = await api.client.put("/v1/admin/pairs", json=body, headers=api.admin)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    cursor = base64.urlsafe_b64encode(f"r{HUGE}".encode()).decode().rstrip("=")
    r = await api.client.get("/v1/relations", params={"cursor": cursor}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_cursor"
    r = await api.client.get("/v1/blocks", params={"cursor": str(HUGE)}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_cursor"
