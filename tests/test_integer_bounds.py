"""Every integer a request carries is bounded to 64 bits: beyond that is 422, never a driver
overflow (500). Walks the OpenAPI schema so a new integer parameter or field stays bounded."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from contactsync.protocol import MAX_INT64, MIN_INT64
from tests.conftest import Api
from tests.test_console import sign_in

TOO_BIG = 2**63
TOO_SMALL = -(2**63) - 1
RETRY = "/v1/admin/push/outbox/retry"


def integer_schemas(
    schema: Any, spec: dict[str, Any], where: str = "", defs: dict[str, Any] | None = None
) -> Iterator[tuple[str, Any]]:
    """(where, schema) for every integer in a JSON schema, following $refs (to the spec's
    components, or to the `$defs` of a schema embedded whole)."""
    if not isinstance(schema, dict):
        return
    defs = {**(defs or {}), **schema.get("$defs", {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        target = defs[name] if ref.startswith("#/$defs/") else spec["components"]["schemas"][name]
        yield from integer_schemas(target, spec, where, defs)
        return
    if schema.get("type") == "integer":
        yield where, schema
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for item in schema.get(key, []):
            yield from integer_schemas(item, spec, where, defs)
    if "items" in schema:
        yield from integer_schemas(schema["items"], spec, where + "[]", defs)
    for name, item in (schema.get("properties") or {}).items():
        yield from integer_schemas(item, spec, f"{where}.{name}", defs)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        yield from integer_schemas(extra, spec, where + ".*", defs)


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


async def test_every_integer_in_the_schema_is_bounded_to_64_bits(api: Api) -> None:
    spec = api.app.openapi()
    unbounded = []
    seen = 0
    for method, path, operation in operations(spec):
        found = [
            (f"{param['in']} {param['name']}", s)
            for param in operation.get("parameters", [])
            for _, s in integer_schemas(param["schema"], spec)
        ]
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            found += [(f"body{w}", s) for w, s in integer_schemas(body["schema"], spec)]
        for where, schema in found:
            seen += 1
            low, high = schema.get("minimum"), schema.get("maximum")
            # The schema may carry the bounds as floats (2**63-1 rounds to 2**63 then).
            if low is None or high is None or low < float(MIN_INT64) or high > float(MAX_INT64):
                unbounded.append(f"{method} {path} {where}")
    assert seen > 30, "the walk found the integers"
    assert unbounded == []


async def test_every_integer_parameter_refuses_values_beyond_64_bits(api: Api) -> None:
    """2**63 and -2**63-1 in every integer path and query parameter: 422, never a 500."""
    _, user = await api.user_with_token("+14155550100", "Ann")
    spec = api.app.openapi()
    tried = 0
    for method, path, operation in operations(spec):
        params = operation.get("parameters", [])
        targets = [p for p in params if any(integer_schemas(p["schema"], spec))]
        for target in targets:
            for value in (TOO_BIG, TOO_SMALL):
                url = path
                for p in params:
                    if p["in"] == "path":
                        filled = value if p is target else 1
                        url = url.replace("{" + p["name"] + "}", str(filled))
                query = {target["name"]: str(value)} if target["in"] == "query" else {}
                headers = api.admin if path.startswith("/v1/admin") else user
                body = {} if method in ("POST", "PUT", "PATCH") else None
                r = await api.client.request(method, url, params=query, headers=headers, json=body)
                tried += 1
                assert r.status_code == 422, (method, url, query, r.status_code, r.text)
                assert r.json()["error"]["code"] == "invalid_request"
    assert tried > 40


async def test_events_after_beyond_64_bits(api: Api) -> None:
    _, h = await api.user_with_token("+14155550100")
    r = await api.client.get("/v1/events", params={"after": "99999999999999999999999"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


async def test_push_outbox_bounds(api: Api) -> None:
    r = await api.client.get(
        "/v1/admin/push/outbox", params={"cursor": str(TOO_BIG)}, headers=api.admin
    )
    assert r.status_code == 422, r.text
    for ids in ([TOO_BIG], [-1], [1, TOO_BIG]):
        r = await api.client.post(RETRY, json={"ids": ids}, headers=api.admin)
        assert r.status_code == 422, r.text
    r = await api.client.post(RETRY, json={"ids": [MAX_INT64]}, headers=api.admin)
    assert r.status_code == 200 and r.json() == {"requeued": 0}


@pytest.mark.parametrize("value", [TOO_BIG, TOO_SMALL, -(10**30), 10**30])
async def test_profile_integers_beyond_64_bits_are_refused(api: Api, value: int) -> None:
    _, h = await api.user_with_token("+14155550100")
    body = {"fields": {"n": {"value": value}}}
    r = await api.client.patch("/v1/me/profile", json=body, headers=h)
    assert r.status_code == 422, r.text
    assert (await api.client.get("/v1/me/profile", headers=h)).json()["fields"] == {}


async def test_profile_integers_at_the_bounds_come_back_as_integers(api: Api) -> None:
    _, h = await api.user_with_token("+14155550100")
    fields = {"low": {"value": MIN_INT64}, "high": {"value": MAX_INT64}, "pi": {"value": 3.5}}
    r = await api.client.patch("/v1/me/profile", json={"fields": fields}, headers=h)
    assert r.status_code == 200, r.text
    got = (await api.client.get("/v1/me/profile", headers=h)).json()["fields"]
    assert got["low"]["value"] == MIN_INT64 and type(got["low"]["value"]) is int
    assert got["high"]["value"] == MAX_INT64 and type(got["high"]["value"]) is int
    assert got["pi"]["value"] == 3.5


async def test_sync_cursor_values_beyond_64_bits(api: Api) -> None:
    _, h = await api.user_with_token("+14155550100")
    for after in (TOO_BIG, -1):
        r = await api.client.post("/v1/sync", json={"cursors": {"1": after}}, headers=h)
        assert r.status_code == 422, r.text


async def test_console_user_ids_beyond_64_bits(api: Api) -> None:
    await sign_in(api)
    for path in (f"/console/users/{TOO_BIG}", f"/console/users/{TOO_SMALL}"):
        r = await api.client.get(path)
        assert r.status_code == 422, r.text
