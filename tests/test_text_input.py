"""Text no store can hold (U+0000) is refused with 422 `invalid_text` on every text input,
on both databases: never a 500 (PostgreSQL cannot hold NUL in text or JSON), nothing stored,
nothing logged at error level."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.server.store.database import Database
from tests.conftest import ADMIN_KEY, Api
from tests.test_console import sign_in

NUL = "Ann\u0000Archer"


async def setup(api: Api) -> dict[str, Any]:
    """Two users with tokens, a group between them, so every route has something to act on."""
    a, ha = await api.user_with_token("+14155550100", "Ann")
    b, hb = await api.user_with_token("+14155550101", "Bob")
    r = await api.client.post(
        "/v1/conversations",
        json={"kind": "group", "members": [b["user_id"]], "name": "Team"},
        headers=ha,
    )
    assert r.status_code == 201, r.text
    return {"a": a, "ha": ha, "b": b, "hb": hb, "group": r.json()["id"]}


# (name, method, path, body, who): `who` is "user" (Ann's token) or "admin". Paths and bodies
# may name {a}, {b} and {group}.
CASES: list[tuple[str, str, str, Any, str]] = [
    (
        "admin create name",
        "POST",
        "/v1/admin/users",
        {"phone": "+14155550199", "name": NUL},
        "admin",
    ),
    ("admin create phone", "POST", "/v1/admin/users", {"phone": "+1415555\u00000199"}, "admin"),
    ("admin patch name", "PATCH", "/v1/admin/users/{a}", {"name": NUL}, "admin"),
    ("admin mint device", "POST", "/v1/admin/users/{a}/tokens", {"device_id": "d\u00001"}, "admin"),
    (
        "contact name",
        "POST",
        "/v1/addressbook",
        {
            "contacts": [
                {"phone": "+14155550150", "name": "Ok"},
                {"phone": "+14155550151", "name": NUL},
            ]
        },
        "user",
    ),
    ("contact phone", "POST", "/v1/addressbook", {"contacts": [{"phone": "+1\u0000415"}]}, "user"),
    (
        "upload device",
        "POST",
        "/v1/addressbook",
        {"contacts": [{"phone": "+14155550150"}], "device_id": "d\u0000"},
        "user",
    ),
    ("book device query", "GET", "/v1/addressbook?device_id=d%00", None, "user"),
    ("registered device query", "GET", "/v1/addressbook/registered?device_id=d%00", None, "user"),
    ("book cursor query", "GET", "/v1/addressbook?cursor=a%00", None, "user"),
    (
        "group name",
        "POST",
        "/v1/conversations",
        {"kind": "group", "members": ["{b}"], "name": NUL},
        "user",
    ),
    (
        "group description",
        "POST",
        "/v1/conversations",
        {"kind": "group", "members": ["{b}"], "name": "x", "description": NUL},
        "user",
    ),
    ("patch name", "PATCH", "/v1/conversations/{group}", {"name": NUL}, "user"),
    ("patch description", "PATCH", "/v1/conversations/{group}", {"description": NUL}, "user"),
    (
        "message body",
        "POST",
        "/v1/conversations/{group}/messages",
        {"body": NUL, "client_msg_id": "m1"},
        "user",
    ),
    (
        "message id",
        "POST",
        "/v1/conversations/{group}/messages",
        {"body": "hi", "client_msg_id": "m\u00001"},
        "user",
    ),
    ("profile value", "PATCH", "/v1/me/profile", {"fields": {"bio": {"value": NUL}}}, "user"),
    ("profile name", "PATCH", "/v1/me/profile", {"fields": {"b\u0000io": {"value": "x"}}}, "user"),
    ("sync-request reason", "POST", "/v1/devices/sync-request", {"reason": NUL}, "user"),
    ("sync cursor", "POST", "/v1/sync", {"cursor": "c\u0000"}, "user"),
    ("otp phone", "POST", "/v1/auth/otp/request", {"phone": "+1415555\u00000100"}, "none"),
    (
        "otp code",
        "POST",
        "/v1/auth/otp/verify",
        {"phone": "+14155550100", "code": "12\u00003456", "device_id": "d"},
        "none",
    ),
    (
        "webhook secret",
        "PUT",
        "/v1/admin/settings",
        {"push_webhook_secret": "0123456789abcdef\u0000"},
        "admin",
    ),
]


def fill(value: Any, ids: dict[str, int]) -> Any:
    if isinstance(value, str):
        for key, number in ids.items():
            if value == "{" + key + "}":
                return number
            value = value.replace("{" + key + "}", str(number))
        return value
    if isinstance(value, list):
        return [fill(item, ids) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, ids) for key, item in value.items()}
    return value


async def snapshot(api: Api) -> dict[str, Any]:
    """Every row of every table: a refused request must leave all of them as they were."""
    out: dict[str, Any] = {}
    async with api.ctx.read() as tx:
        names = await tx.conn.run_sync(lambda c: sa.inspect(c).get_table_names())
        for name in sorted(names):
            if name in ("alembic_version", "ratelimit_hits"):
                continue
            rows = await tx.conn.execute(sa.text(f'SELECT * FROM "{name}"'))
            out[name] = sorted(map(repr, rows.all()))
    return out


@pytest.mark.parametrize(
    ("name", "method", "path", "body", "who"), CASES, ids=[c[0] for c in CASES]
)
async def test_nul_in_any_text_is_invalid_text(
    api: Api,
    caplog: pytest.LogCaptureFixture,
    name: str,
    method: str,
    path: str,
    body: Any,
    who: str,
) -> None:
    world = await setup(api)
    ids = {"a": world["a"]["user_id"], "b": world["b"]["user_id"], "group": world["group"]}
    headers = {"admin": api.admin, "user": world["ha"], "none": {}}[who]
    before = await snapshot(api)
    with caplog.at_level(logging.INFO):
        r = await api.client.request(method, fill(path, ids), json=fill(body, ids), headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_text", r.text
    assert r.json()["error"]["details"], "the details name the field"
    assert await snapshot(api) == before, "a refused request changes nothing"
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert "Archer" not in caplog.text


async def test_text_with_other_characters_is_kept(api: Api) -> None:
    """Only what no store can hold is refused: tabs, newlines, emoji and RTL marks are text."""
    world = await setup(api)
    body = "tab\there\nnew line \U0001f600 \u202eevil\u202c \u0001"
    r = await api.client.post(
        f"/v1/conversations/{world['group']}/messages",
        json={"body": body, "client_msg_id": "m1"},
        headers=world["ha"],
    )
    assert r.status_code == 201, r.text
    r = await api.client.get(f"/v1/conversations/{world['group']}/messages", headers=world["ha"])
    assert [m["body"] for m in r.json()["messages"] if m["kind"] == "text"] == [body]


async def test_console_search_with_nul_is_refused(api: Api) -> None:
    await api.create_user("+14155550100", "Ann")
    await sign_in(api, ADMIN_KEY)
    r = await api.client.get("/console/users", params={"q": "An\u0000n"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "invalid_text"


async def test_driver_errors_carry_no_parameters(db_url: str) -> None:
    """If a statement ever fails, its trace must not hold the values (names, numbers) sent."""
    db = Database.from_url(db_url)
    try:
        with pytest.raises(sa.exc.DBAPIError) as failed:
            async with db.write() as conn:
                await conn.execute(
                    sa.text("INSERT INTO users (id, phone) VALUES (1, :x), (1, :x)"),
                    {"x": "+14155550100"},
                )
        assert "14155550100" not in str(failed.value)
    finally:
        await db.dispose()
