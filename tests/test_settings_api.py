"""GET/PUT /v1/admin/settings: admin only, partial updates validated as a whole, the webhook
secret write-only."""

from __future__ import annotations

from typing import Any

import pytest

from contactsync.server.services.app_settings import EVENT_TYPES
from tests.conftest import Api

SECRET = "s3cret-s3cret-s3cret"


async def test_defaults_and_partial_update(api: Api) -> None:
    got = await api.client.get("/v1/admin/settings", headers=api.admin)
    assert got.status_code == 200
    body = got.json()
    assert body["notify_contact_joined"] is True
    assert body["push_webhook_url"] is None and body["push_webhook_secret_set"] is False
    assert body["push_event_types"] == list(EVENT_TYPES)
    assert "push_webhook_secret" not in body

    put = await api.client.put(
        "/v1/admin/settings",
        json={
            "push_webhook_url": "https://push.example.com/hook",
            "push_webhook_secret": SECRET,
            "push_event_types": ["contact.joined", "message.created"],
            "notify_contact_joined": False,
        },
        headers=api.admin,
    )
    assert put.status_code == 200, put.text
    changed = put.json()
    assert changed["push_webhook_url"] == "https://push.example.com/hook"
    assert changed["push_webhook_secret_set"] is True
    assert SECRET not in put.text
    assert changed["push_event_types"] == ["contact.joined", "message.created"]
    # Fields not named keep their values.
    assert changed["max_contacts_per_request"] == body["max_contacts_per_request"]
    again = await api.client.get("/v1/admin/settings", headers=api.admin)
    assert again.json() == changed and SECRET not in again.text

    # Clearing the URL then the secret works; a URL alone never stays unsigned.
    cleared = await api.client.put(
        "/v1/admin/settings",
        json={"push_webhook_url": None, "push_webhook_secret": None},
        headers=api.admin,
    )
    assert cleared.json()["push_webhook_secret_set"] is False
    empty = await api.client.put("/v1/admin/settings", json={}, headers=api.admin)
    assert empty.status_code == 200 and empty.json() == cleared.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"push_webhook_url": "https://push.example.com/hook"}, ""),  # no secret
        ({"push_webhook_url": "not a url", "push_webhook_secret": SECRET}, "push_webhook_url"),
        ({"push_webhook_secret": "short"}, "push_webhook_secret"),
        ({"push_event_types": ["contact.joined", "no.such"]}, "push_event_types"),
        ({"push_max_attempts": 0}, "push_max_attempts"),
        ({"notify_contact_joined": "perhaps"}, "notify_contact_joined"),
        ({"max_contacts_per_request": -5}, "max_contacts_per_request"),
        ({"admin_key_hash": "x"}, "admin_key_hash"),  # unknown: secrets are not settings
        ({"secret.admin_key_hash": "x"}, "secret.admin_key_hash"),
    ],
)
async def test_invalid_settings_are_refused_and_change_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    before = (await api.client.get("/v1/admin/settings", headers=api.admin)).json()
    response = await api.client.put(
        "/v1/admin/settings", json={"notify_contact_joined": False, **body}, headers=api.admin
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [d["field"] for d in error["details"]]
    after = (await api.client.get("/v1/admin/settings", headers=api.admin)).json()
    assert after == before


@pytest.mark.parametrize("raw", [b"[1, 2]", b"null", b"not json", b'"text"'])
async def test_body_must_be_a_json_object(api: Api, raw: bytes) -> None:
    response = await api.client.put(
        "/v1/admin/settings",
        content=raw,
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_admin_only(api: Api) -> None:
    _, user = await api.user_with_token("+14155550120")
    for method in ("GET", "PUT"):
        kwargs: dict[str, Any] = {"json": {}} if method == "PUT" else {}
        anonymous = await api.client.request(method, "/v1/admin/settings", **kwargs)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthorized"
        as_user = await api.client.request(method, "/v1/admin/settings", headers=user, **kwargs)
        assert as_user.status_code == 403
        assert as_user.json()["error"]["code"] == "admin_required"


async def test_notify_contact_joined_switch_takes_effect(api: Api) -> None:
    _, holder = await api.user_with_token("+14155550121")
    await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": "+14155550122"}]}, headers=holder
    )
    off = await api.client.put(
        "/v1/admin/settings", json={"notify_contact_joined": False}, headers=api.admin
    )
    assert off.status_code == 200
    await api.create_user("+14155550122")
    assert await api.events(holder) == []
