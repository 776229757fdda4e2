"""Bad input gets a clear error with a stable code, never a 500, and changes nothing."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import Api


async def user_count(api: Api) -> int:
    async with api.ctx.read() as tx:
        return int(await tx.conn.scalar(sa.text("SELECT count(*) FROM users")) or 0)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "invalid_request"),  # missing phone
        ({"phone": None}, "invalid_request"),
        ({"phone": 14155550100}, "invalid_request"),  # wrong type
        ({"phone": ["+14155550100"]}, "invalid_request"),
        ({"phone": "+14155550100", "nickname": "x"}, "invalid_request"),  # extra field
        ({"phone": "+14155550100", "name": 5}, "invalid_request"),
        ({"phone": "+14155550100", "name": "x" * 201}, "invalid_request"),
        ({"phone": "+14155550100", "region": "USA"}, "invalid_request"),
        ({"phone": "4155550100", "region": "QQ"}, "invalid_region"),
        ({"phone": "not a number"}, "invalid_phone"),
        ({"phone": "+999 123"}, "invalid_phone"),
        ({"phone": "1" * 65}, "invalid_request"),
        ({"phone": "+1 415 555 010"}, "invalid_phone"),
        ({"phone": "\u0000\u202e+1415"}, "invalid_text"),  # NUL: no store can hold it
    ],
)
async def test_create_user_rejects(api: Api, body: object, code: str) -> None:
    r = await api.client.post("/v1/admin/users", json=body, headers=api.admin)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == code
    assert "Traceback" not in r.text
    assert await user_count(api) == 0


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[]", b"null", b'"+14155550100"', b"\xff\xfe", b'{"phone": "+1415'],
)
async def test_malformed_bodies(api: Api, content: bytes) -> None:
    r = await api.client.post(
        "/v1/admin/users",
        content=content,
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert await user_count(api) == 0


async def test_oversize_body_is_refused_before_parsing(api: Api) -> None:
    limit = api.ctx.settings.max_body_bytes
    big = b'{"phone": "+14155550100", "name": "' + b"x" * limit + b'"}'
    r = await api.client.post(
        "/v1/admin/users", content=big, headers={**api.admin, "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"
    assert await user_count(api) == 0

    async def chunks():  # no Content-Length: counted while it streams
        yield b'{"phone": "+14155550100", "name": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    r = await api.client.post(
        "/v1/admin/users",
        content=chunks(),
        headers={**api.admin, "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert await user_count(api) == 0


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Token abc",
        "Bearer cs_" + "x" * 43,
        "Bearer " + "y" * 500,
        "Bearer csadmin_test-key-0123456789abcdefghijklmnop",
    ],
)
async def test_bad_tokens(api: Api, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    r = await api.client.get("/v1/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"


async def test_unknown_routes_and_methods(api: Api) -> None:
    r = await api.client.get("/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.client.put("/v1/me", headers=api.admin)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_events_query_validation(api: Api) -> None:
    _, headers = await api.user_with_token("+14155550100")
    for query in ("after=-1", "after=abc", "limit=0", "limit=100000"):
        r = await api.client.get(f"/v1/events?{query}", headers=headers)
        assert r.status_code == 422, query
        assert r.json()["error"]["code"] == "invalid_request"


async def test_health_and_readiness(api: Api) -> None:
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
