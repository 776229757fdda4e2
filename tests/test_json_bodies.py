"""API bodies are JSON whatever the client declared (`curl -d` declares a form), and a body that
is not JSON, or not an object, gets a 422 that says what to send instead (issue 16.1)."""

from __future__ import annotations

import pytest

from tests.conftest import Api
from tests.test_bad_input import user_count
from tests.test_console import sign_in

BODY = '{"phone": "+1 415 555 0100", "name": "Ann"}'


@pytest.mark.parametrize("declared", [None, "application/x-www-form-urlencoded"])
async def test_a_json_body_declared_as_a_form_or_not_at_all_is_read(
    api: Api, declared: str | None
) -> None:
    headers = dict(api.admin)
    if declared:
        headers["Content-Type"] = declared
    r = await api.client.post("/v1/admin/users", content=BODY, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Ann"


@pytest.mark.parametrize(
    ("declared", "body", "says"),
    [
        ("text/plain", BODY, "Content-Type: application/json (this request declared text/plain)"),
        ("application/json", '{"phone": ', "not valid JSON (Expecting value at character 10)"),
        ("application/x-www-form-urlencoded", "phone=%2B14155550100", "not valid JSON"),
        ("application/json", '["+14155550100"]', "must be a JSON object"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_refused_in_words(
    api: Api, declared: str, body: str, says: str
) -> None:
    r = await api.client.post(
        "/v1/admin/users", content=body, headers={**api.admin, "Content-Type": declared}
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert says in error["message"]
    assert await user_count(api) == 0


async def test_console_forms_keep_their_type(api: Api) -> None:
    # the console's sign-in form is not under /v1/: it is still read as a form (sign_in
    # asserts the redirect to the overview that only the right key gets)
    await sign_in(api)
