"""Request types are strict: a JSON client sends `true`, `5` and `"text"`; `"yes"`, `1` for a
boolean, `"5"` for a number or `5` for a text are refused (422) and change nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api

LOOSE_BOOLEANS = ["yes", "true", 1, 0, "1", "on"]


@pytest.mark.parametrize("value", LOOSE_BOOLEANS)
async def test_preferences_take_only_booleans(api: Api, value: Any) -> None:
    _, h = await api.user_with_token("+14155550100")
    before = (await api.client.get("/v1/me/preferences", headers=h)).json()
    r = await api.client.put("/v1/me/preferences", json={"notify_messages": value}, headers=h)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert (await api.client.get("/v1/me/preferences", headers=h)).json() == before
    assert await api.events(h) == []
    r = await api.client.put("/v1/me/preferences", json={"notify_messages": False}, headers=h)
    assert r.status_code == 200 and r.json()["notify_messages"] is False


@pytest.mark.parametrize(
    "changes",
    [
        {"notify_contact_joined": "false"},
        {"notify_contact_joined": 0},
        {"discovery_quota": "100"},
        {"discovery_quota": 100.0},
        {"max_message_bytes": True},
    ],
)
async def test_admin_settings_are_strict(api: Api, changes: dict[str, Any]) -> None:
    before = (await api.client.get("/v1/admin/settings", headers=api.admin)).json()
    r = await api.client.put("/v1/admin/settings", json=changes, headers=api.admin)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert (await api.client.get("/v1/admin/settings", headers=api.admin)).json() == before


# One case per kind of request model: a flag, a number, a text, an id list, a nested model.
@pytest.mark.parametrize(
    ("method", "path", "body", "who"),
    [
        ("PATCH", "/v1/admin/users/{a}", {"restricted": "yes"}, "admin"),
        ("PATCH", "/v1/admin/users/{a}", {"restricted": 1}, "admin"),
        ("PATCH", "/v1/admin/users/{a}", {"name": 5}, "admin"),
        ("POST", "/v1/admin/users", {"phone": 14155550199}, "admin"),
        ("PUT", "/v1/admin/pairs", {"a": "{a}s", "b": "{b}s"}, "admin"),
        ("POST", "/v1/addressbook", {"contacts": [], "force": "true"}, "user"),
        ("POST", "/v1/addressbook", {"contacts": [{"phone": "+1415555015", "destroy": 1}]}, "user"),
        ("POST", "/v1/addressbook", {"contacts": [], "final": 0}, "user"),
        ("POST", "/v1/sync", {"limit": "10"}, "user"),
        ("POST", "/v1/sync", {"cursors": {"1": "5"}}, "user"),
        ("POST", "/v1/conversations", {"kind": "group", "members": ["{b}s"], "name": "x"}, "user"),
        ("PUT", "/v1/relations/{b}", {"contact": "true"}, "user"),
        ("PUT", "/v1/relations/{b}", {"subscribe": 1}, "user"),
        ("POST", "/v1/relations/sync", {"phones": [], "contact": "yes"}, "user"),
        ("PATCH", "/v1/me/profile", {"fields": {"age": {"value": "30", "level": 0}}}, "user-ok"),
    ],
)
async def test_request_models_are_strict(
    api: Api, method: str, path: str, body: Any, who: str
) -> None:
    a, ha = await api.user_with_token("+14155550100", "Ann")
    b = await api.create_user("+14155550101", "Bob")
    ids = {"{a}s": a["user_id"], "{b}s": b["user_id"]}

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            if value in ids:
                return str(ids[value])  # an id sent as a string
            return value.replace("{a}", str(a["user_id"])).replace("{b}", str(b["user_id"]))
        if isinstance(value, list):
            return [fill(item) for item in value]
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        return value

    headers = api.admin if who == "admin" else ha
    r = await api.client.request(method, fill(path), json=fill(body), headers=headers)
    if who == "user-ok":
        # A profile value may be any JSON scalar: the string "30" stays a string.
        assert r.status_code == 200, r.text
        assert r.json()["fields"]["age"]["value"] == "30"
        return
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"
