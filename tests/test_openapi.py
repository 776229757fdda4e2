"""The OpenAPI schema is complete and true (issue 16.5): every reference resolves, every
operation that needs a token says so (and really answers 401 without one), errors are
described in their real shape, bodies have examples; and a bounded schemathesis run against a
real server finds no response the schema does not allow."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contactsync import errors
from contactsync.errors import ApiError
from contactsync.server.app import create_app
from contactsync.server.config import Settings
from tests.conftest import ADMIN_KEY, Api
from tests.e2e.server import ServerProcess
from tests.e2e.test_realtime import user_token


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("schema"), admin_key=ADMIN_KEY))
    return app.openapi()


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, op in item.items():
            yield path, method, op


def test_every_reference_resolves(schema: dict[str, Any]) -> None:
    text = json.dumps(schema)
    refs = set(re.findall(r'"\$ref": "([^"]+)"', text))
    assert refs, "no references at all"
    for ref in refs:
        node: Any = schema
        assert ref.startswith("#/"), ref
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]
    assert "$defs" not in text


def test_errors_are_described_in_their_real_shape(schema: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert set(error["properties"]["error"]["properties"]) == {"code", "message", "details"}
    responses = schema["components"]["responses"]
    for status in (401, 403, 404, 409, 413, 422, 429, 503):
        assert str(status) in responses
    # the codes of each status come from the error classes
    assert "`discovery_quota_exceeded`" in responses["429"]["description"]
    assert "`invalid_phone`" in responses["422"]["description"]
    for path, method, op in operations(schema):
        assert op["responses"]["422"] == {"$ref": "#/components/responses/422"}, (method, path)
        if op.get("security"):
            assert "401" in op["responses"], (method, path)
        if "{" in path:
            assert "404" in op["responses"], (method, path)


def test_security_scheme_and_bodies_with_examples(schema: dict[str, Any]) -> None:
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    upload = schema["paths"]["/v1/addressbook"]["post"]
    assert upload["security"] == [{"bearer": []}]
    body = upload["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/AddressBookUpload"}
    assert body["example"]["contacts"][0]["phone"]
    contacts = schema["components"]["schemas"]["AddressBookUpload"]["properties"]["contacts"]
    assert contacts["items"] == {"$ref": "#/components/schemas/ContactIn"}
    assert "security" not in schema["paths"]["/v1/auth/otp/request"]["post"]
    assert "security" not in schema["paths"]["/healthz"]["get"]


async def test_operations_that_declare_a_token_refuse_a_call_without_one(api: Api) -> None:
    schema = api.app.openapi()
    for path, method, op in operations(schema):
        url = re.sub(r"\{[^}]+\}", "1", path)
        r = await api.client.request(method.upper(), url, json={} if method != "get" else None)
        if op.get("security"):
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
        else:
            assert r.status_code != 401, (method, path, r.text)


def test_error_classes_all_have_a_documented_status(schema: dict[str, Any]) -> None:
    documented = {int(s) for s in schema["components"]["responses"]}
    statuses = {
        cls.status
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, ApiError) and cls.status not in (400, 408)  # WebSocket-only
    }
    assert statuses <= documented, statuses - documented


# ---------------------------------------------------------------------------- schemathesis

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import checks as st_checks  # noqa: E402

CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    st_checks.response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 5


@pytest.mark.slow
def test_the_api_answers_as_its_schema_says(tmp_path: Path) -> None:
    """Schemathesis generates requests for every operation from the schema (a few each, so
    the run stays bounded) and checks each answer against the schema: no 5xx, only
    documented statuses, content types, headers and bodies."""
    server = ServerProcess(tmp_path / "data").start()
    try:
        _, token = user_token(server.url, "+14155550100", device="fuzz")
        api_schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
        tried = 0
        for result in api_schema.get_all_operations():
            operation = result.ok()
            key = ADMIN_KEY if operation.path.startswith("/v1/admin/") else token
            fuzz(operation, {"Authorization": f"Bearer {key}"})
            tried += 1
        assert tried >= 45
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def fuzz(operation: Any, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)

    check()
