"""The wire contract is shared data: the SDK must know every error code the server has, and carry
every field of the answers it parses; the server must answer through the contract's models."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from contactsync import errors, protocol
from contactsync.client import _errors as sdk_errors
from contactsync.client import _models as sdk_models
from contactsync.server.app import create_app
from contactsync.server.config import Settings

SERVER_ERRORS = errors.every_error()


@pytest.mark.parametrize("server_error", SERVER_ERRORS, ids=lambda cls: cls.code)
def test_every_server_error_code_has_its_sdk_exception(server_error: type[errors.ApiError]) -> None:
    sdk = sdk_errors.BY_CODE.get(server_error.code)
    assert sdk is not None, (
        f"the server has error code {server_error.code!r} ({server_error.__name__}); map it to an "
        "exception class in contactsync/client/_errors.py"
    )
    # The SDK class sits in the branch of the tree for the code's HTTP status.
    statuses = {status for cls in sdk.__mro__ for status in getattr(cls, "statuses", ())}
    assert server_error.status in statuses, (server_error.code, sdk.__name__)
    raised = sdk_errors.error_for(server_error.status, server_error.code, "m", {"x": 1})
    assert type(raised) is sdk and raised.status == server_error.status


def test_every_error_is_defined_in_the_contract_module() -> None:
    # The server, all of it imported, has no error class outside contactsync/errors.py.
    elsewhere = [
        f"{c.__module__}.{c.__name__}" for c in SERVER_ERRORS if c.__module__ != errors.__name__
    ]
    assert elsewhere == []
    assert len({cls.code for cls in SERVER_ERRORS}) == len(SERVER_ERRORS), "a code used twice"


def test_sdk_maps_no_code_the_server_lacks() -> None:
    assert set(sdk_errors.BY_CODE) == {cls.code for cls in SERVER_ERRORS}


def test_unknown_codes_fall_back_to_their_status() -> None:
    unknown = sdk_errors.error_for(429, "some_new_limit", "slow down", {"retry_after": 7})
    assert type(unknown) is sdk_errors.RateLimited and unknown.retry_after == 7
    assert type(sdk_errors.error_for(503, "new_outage", "m")) is sdk_errors.ServerError
    assert type(sdk_errors.error_for(418, "teapot", "m")) is sdk_errors.ApiError


def test_error_fields_reach_the_sdk() -> None:
    quota = errors.DiscoveryQuotaExceeded(90)
    body = quota.body()["error"]
    raised = sdk_errors.error_for(quota.status, body["code"], body["message"], body["details"])
    assert isinstance(raised, sdk_errors.QuotaExceeded) and raised.retry_after == 90
    too_many = errors.TooManyContacts(details={"max": 500, "got": 501})
    body = too_many.body()["error"]
    raised = sdk_errors.error_for(413, body["code"], body["message"], body["details"])
    assert isinstance(raised, sdk_errors.TooManyContacts) and raised.max == 500


# SDK value types built from answers, the contract model each is parsed from, and the wire
# fields it holds under another name.
PARSED = [
    (sdk_models.Event, protocol.EventOut, {}),
    (sdk_models.Message, protocol.MessageOut, {}),
    (sdk_models.ConversationView, protocol.ConversationOut, {"members": "member_ids"}),
]


@pytest.mark.parametrize(
    "sdk_type, model, renamed", PARSED, ids=lambda v: getattr(v, "__name__", "")
)
def test_sdk_types_carry_every_field_of_their_model(
    sdk_type: type, model: type[BaseModel], renamed: dict[str, str]
) -> None:
    carried = {f.name for f in dataclasses.fields(sdk_type)}
    missing = [name for name in model.model_fields if renamed.get(name, name) not in carried]
    assert missing == [], f"{sdk_type.__name__} lacks wire fields {missing} of {model.__name__}"


# Answers that are not the SDK's business (the admin API is JSON passed through by `contactsync
# admin`) or not JSON models; every other answer must be a model of contactsync.protocol.
NOT_MODELLED = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    # built from services/app_settings.AppSettings, where the run-time settings are defined
    ("get", "/v1/admin/settings"),
    ("put", "/v1/admin/settings"),
}


def test_every_answer_is_a_contract_model(tmp_path: Path) -> None:
    schema = create_app(Settings(data_dir=tmp_path)).openapi()
    contract = {
        name
        for name, value in vars(protocol).items()
        if isinstance(value, type) and issubclass(value, protocol.Output)
    }
    loose: list[str] = []
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if (method, path) in NOT_MODELLED:
                continue
            for status, answer in operation["responses"].items():
                if not status.startswith("2"):
                    continue
                body: dict[str, Any] | None = (
                    answer.get("content", {}).get("application/json", {}).get("schema")
                )
                if body is None:
                    continue  # no body (204)
                ref = body.get("$ref", "")
                if ref.rsplit("/", 1)[-1] not in contract:
                    loose.append(f"{method.upper()} {path} {status}: {ref or 'inline schema'}")
    assert loose == [], "answers without a contactsync.protocol model:\n" + "\n".join(loose)
