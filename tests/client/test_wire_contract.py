"""Every request body the SDK sends is one the server's own model for that route accepts
(issue 15.1): an SDK session against the real app records each body, and each is validated
with the contract model the server names for the route in its OpenAPI schema. A field renamed
or a limit tightened on the server fails here (and in the SDK, which builds its bodies with
the same models, before anything is sent)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from contactsync import protocol
from contactsync.client import ApiError, Contact, MemorySource, _wire, mint_token
from contactsync.server.config import Settings
from tests.client.conftest import Factory
from tests.conftest import ADMIN_KEY, Api

# routes whose body is no model of the contract: the preferences are checked by their
# service against protocol.Preferences (the answer model), any subset of its keys
FREE_BODIES = {("PUT", "/v1/me/preferences")}


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The server in stored mode, or in the mode a test names (`indirect` parametrisation)."""
    mode = getattr(request, "param", "stored")
    return settings.model_copy(update={"discovery_mode": mode})


class Recording(httpx.AsyncBaseTransport):
    """The app in process, keeping (method, path, body) of each request with a body."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.sent: list[tuple[str, str, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        if body:
            self.sent.append((request.method, request.url.path, body))
        return await self.inner.handle_async_request(request)


def route_models(app: Any) -> list[tuple[str, re.Pattern[str], str, type[BaseModel] | None]]:
    """(method, path pattern, template, the contract model of its body) from the app's schema."""
    contract = {
        name: value
        for name, value in vars(protocol).items()
        if isinstance(value, type) and issubclass(value, protocol.Input)
    }
    found = []
    for template, operations in app.openapi()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, operation in operations.items():
            schema = (
                operation.get("requestBody", {})
                .get("content", {})
                .get("application/json", {})
                .get("schema")
            )
            if schema is None:
                continue
            # a $ref to the model, one in anyOf (an optional body: Model | None), or (the
            # address book's hand-parsed body) the model's own schema, with its title
            refs = [schema.get("$ref", "")] + [o.get("$ref", "") for o in schema.get("anyOf", [])]
            names = [ref.rsplit("/", 1)[-1] for ref in refs if ref]
            name = names[0] if names else schema.get("title", "")
            found.append((method.upper(), pattern, template, contract.get(name)))
    return found


def check_bodies(app: Any, sent: list[tuple[str, str, bytes]]) -> set[tuple[str, str]]:
    """Validate each recorded body with the contract model of its route, as the server does;
    returns the (method, route template) checked."""
    routes = route_models(app)
    checked: set[tuple[str, str]] = set()
    for method, path, body in sent:
        matches = [r for r in routes if r[0] == method and r[1].match(path)]
        assert matches, f"{method} {path}: the server has no route with a body there"
        _, _, template, model = matches[0]
        if (method, template) in FREE_BODIES:
            continue
        assert model is not None, f"{method} {template}: no contract model for its body"
        model.model_validate_json(body)  # what the server does with these bytes
        checked.add((method, template))
    return checked


async def test_every_body_the_sdk_sends_is_accepted_by_the_server_model(
    api: Api, managers: Factory
) -> None:
    recording = Recording(api.app)
    a_user, a = await api.user_with_token("+14155550100", "Alice")
    b_user, b = await api.user_with_token("+14155550101", "Bob")
    book = [Contact(f"c{i}", f"Friend {i}", (f"(415) 555-{i:04d}",)) for i in range(2, 40)]
    alice = managers(MemorySource(book), a, transport=recording, batch_size=10)
    bob = managers(MemorySource(), b, transport=recording)

    assert (await alice.sync()).error is None
    book[5] = Contact("c5", "Renamed", book[5].phones)
    alice.source.set(book[:-3])  # type: ignore[attr-defined]
    assert (await alice.sync()).error is None
    assert (await alice.force_sync()).error is None
    await alice.set_my_profile({"status": ("hiking", 1), "bio": None})
    await alice.send_sync_request("a new phone")
    await alice.profile(b_user["user_id"]).contact().subscribe().set_access_levels([1]).save()
    sync = alice.synchronizer(access_levels=[1])
    await sync.sync(["415 555 0101", "415 555 0199"], now=True)
    await sync.sync_as_update(["+14155550101"], access_levels=[2])
    dm = await alice.conversations.new_dm(b_user["user_id"])
    await dm.send("hi")
    group = await alice.conversations.new_group([b_user["user_id"]], name="Pair", description="x")
    await group.update(name="Pair 2")
    await bob.initialize()
    await bob.conversation(group.id).set_consent("allowed")
    await bob.conversations.sync_all(consent=["allowed", "unknown"])
    await alice.preferences.update(notify_contact_joined=False)
    await mint_token(
        "http://testserver", ADMIN_KEY, a_user["user_id"], "tablet", transport=recording
    )

    checked = check_bodies(api.app, recording.sent)
    # the session above reached every kind of body the SDK sends in stored mode
    assert checked >= {
        ("POST", "/v1/addressbook"),
        ("PATCH", "/v1/me/profile"),
        ("POST", "/v1/devices/sync-request"),
        ("PUT", "/v1/relations/{target}"),
        ("POST", "/v1/relations/sync"),
        ("POST", "/v1/conversations"),
        ("POST", "/v1/conversations/{conversation_id}/messages"),
        ("PATCH", "/v1/conversations/{conversation_id}"),
        ("PUT", "/v1/conversations/{conversation_id}/consent"),
        ("POST", "/v1/sync"),
        ("POST", "/v1/admin/users/{user_id}/tokens"),
    }, checked


@pytest.mark.parametrize("settings", ["private"], indirect=True)
async def test_every_body_a_private_mode_session_sends_is_accepted_by_the_server_model(
    api: Api, managers: Factory
) -> None:
    recording = Recording(api.app)
    _, headers = await api.user_with_token("+14155550100", "Alice")
    friends = [(await api.create_user(f"+1415555{i:04d}"))["user_id"] for i in (101, 102)]
    book = [Contact(f"c{i}", f"Friend {i}", (f"(415) 555-{i:04d}",)) for i in range(101, 140)]
    alice = managers(MemorySource(book), headers, transport=recording)

    first = await alice.sync()
    assert alice.discovery == "private" and first.error is None, first.error
    assert {u["user_id"] for u in first.registered} == set(friends)
    alice.source.set(book + [Contact("c200", "New", ("(415) 555-0200",))])  # type: ignore[attr-defined]
    assert (await alice.sync()).error is None
    assert (await alice.force_sync()).error is None
    await alice.set_my_profile({"status": ("hiking", 1)})
    await alice.preferences.update(notify_contact_joined=False)

    evaluated = [b for _, p, b in recording.sent if p == "/v1/discovery/evaluate"]
    assert len(evaluated) == 2, evaluated  # the first sync's book, then the new number alone
    checked = check_bodies(api.app, recording.sent)
    assert checked >= {
        ("POST", "/v1/discovery/evaluate"),
        ("POST", "/v1/discovery/resolve"),
        ("PATCH", "/v1/me/profile"),
    }, checked
    # no book leaves the device in private mode
    assert ("POST", "/v1/addressbook") not in checked


def test_a_body_the_model_refuses_is_refused_before_it_is_sent() -> None:
    # what the server would answer: the same code, here without a round trip
    with pytest.raises(ApiError) as refused:
        _wire.body(protocol.SendMessage, {"body": "a\x00b", "client_msg_id": "m1"})
    assert (refused.value.status, refused.value.code) == (422, "invalid_text")
    with pytest.raises(ApiError) as refused:
        _wire.body(protocol.AddressBookUpload, {"contacts": [], "renamed_field": 1})
    assert (refused.value.status, refused.value.code) == (422, "invalid_request")
    assert refused.value.details[0]["field"] == "renamed_field"
