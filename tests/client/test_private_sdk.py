"""Private discovery in the SDK against the real app in process, on both databases: a later
sync evaluates and resolves only what is new and keeps the earlier matches, the filter's
changes since are matched again, users discoverable by their contacts are found by those they
hold, and a number saved in a legacy or variant form matches as it does in stored mode."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from contactsync.client import Contact, MemorySource
from contactsync.server.config import Settings
from tests.client.conftest import Factory
from tests.conftest import Api

OWNER = "+14155550100"
FRIENDS = ["+14155550101", "+14155550102", "+14155550103"]
STRANGERS = ["+14155550191", "+14155550192"]


class Recorder(httpx.ASGITransport):
    """The real app's transport, keeping the discovery requests' bodies."""

    def __init__(self, app: Any) -> None:
        super().__init__(app=app)
        self.sent: list[tuple[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path in ("/v1/discovery/evaluate", "/v1/discovery/resolve"):
            self.sent.append((request.url.path, json.loads(request.content)))
        return await super().handle_async_request(request)

    def count(self, path: str, field: str) -> int:
        counted = sum(len(body[field]) for p, body in self.sent if p == path)
        return counted

    def clear(self) -> None:
        self.sent.clear()


def contacts(*phones: str) -> list[Contact]:
    return [Contact(f"c{p}", f"Name {p[-4:]}", (p,)) for p in phones]


def found(metrics: Any) -> set[str]:
    return {u["phone"] for u in metrics.registered}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"discovery_mode": "private"})


async def test_a_later_sync_evaluates_and_resolves_only_what_is_new(
    api: Api, managers: Factory
) -> None:
    _, headers = await api.user_with_token(OWNER)
    users = {p: (await api.create_user(p))["user_id"] for p in FRIENDS[:2]}
    source = MemorySource(contacts(FRIENDS[0], *STRANGERS))
    wire = Recorder(api.app)
    sdk = managers(source, headers, transport=wire)
    first = await sdk.sync()
    assert sdk.discovery == "private" and first.error is None, first.error
    assert found(first) == {FRIENDS[0]}
    assert first.evaluated == 3

    # one new contact, a user: it alone is evaluated and resolved
    wire.clear()
    source.set(contacts(FRIENDS[0], *STRANGERS, FRIENDS[1]))
    later = await sdk.sync()
    assert later.error is None, later.error
    assert (later.evaluated, found(later)) == (1, {FRIENDS[1]})
    assert wire.count("/v1/discovery/evaluate", "points") == 1
    assert wire.count("/v1/discovery/resolve", "tags") == 1
    # the earlier match is kept
    assert {(m["phone"], m["user_id"]) for m in sdk.private_matches()} == {
        (p, users[p]) for p in FRIENDS[:2]
    }

    # nothing new: nothing evaluated, nothing resolved
    wire.clear()
    again = await sdk.sync()
    assert (again.evaluated, again.registered, wire.sent) == (0, [], [])

    # a number of the book registers without announcing it: the filter's change alone makes
    # the next sync match and resolve that number (and only it)
    r = await api.client.post(
        "/v1/admin/users",
        json={"phone": STRANGERS[0], "announce_join_to": "nobody"},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text
    joined = r.json()["user_id"]
    wire.clear()
    third = await sdk.sync()
    assert (third.evaluated, found(third)) == (0, {STRANGERS[0]})
    assert wire.count("/v1/discovery/resolve", "tags") == 1

    # a contact removed from the book loses its match; a user who hides goes at the next sync
    source.set(contacts(FRIENDS[1], *STRANGERS))
    r = await api.client.put(
        "/v1/me/preferences",
        json={"discoverable_by": "nobody"},
        headers=await api.token(users[FRIENDS[1]]),
    )
    assert r.status_code == 200, r.text
    fourth = await sdk.sync()
    assert fourth.error is None and fourth.evaluated == 0
    assert {m["user_id"] for m in sdk.private_matches()} == {joined}

    # force_sync matches and resolves the whole book again, without evaluating anything
    wire.clear()
    forced = await sdk.force_sync()
    assert forced.error is None and forced.evaluated == 0
    assert wire.count("/v1/discovery/resolve", "tags") == 1  # the one match of the book
    assert {m["user_id"] for m in sdk.private_matches()} == {joined}


async def test_a_contacts_user_is_found_by_the_users_it_holds(api: Api, managers: Factory) -> None:
    owner, headers = await api.user_with_token(OWNER)
    held_by: dict[str, tuple[int, dict[str, str]]] = {}
    for phone in FRIENDS:
        user, th = await api.user_with_token(phone)
        r = await api.client.put(
            "/v1/me/preferences", json={"discoverable_by": "contacts"}, headers=th
        )
        assert r.status_code == 200, r.text
        held_by[phone] = (user["user_id"], th)
    # FRIENDS[0] holds the owner (a contact relation: the server stores no books here),
    # FRIENDS[1] holds the owner but blocks them, FRIENDS[2] does not hold them
    for phone in FRIENDS[:2]:
        r = await api.client.put(
            f"/v1/relations/{owner['user_id']}", json={"contact": True}, headers=held_by[phone][1]
        )
        assert r.status_code == 200, r.text
    r = await api.client.put(f"/v1/blocks/{owner['user_id']}", headers=held_by[FRIENDS[1]][1])
    assert r.status_code in (200, 204), r.text
    sdk = managers(MemorySource(contacts(*FRIENDS)), headers)
    first = await sdk.sync()
    assert first.error is None, first.error
    assert found(first) == {FRIENDS[0]}
    assert [m["user_id"] for m in sdk.private_matches()] == [held_by[FRIENDS[0]][0]]

    # FRIENDS[2] starts holding the owner: found at the next sync, with nothing evaluated
    r = await api.client.put(
        f"/v1/relations/{owner['user_id']}", json={"contact": True}, headers=held_by[FRIENDS[2]][1]
    )
    assert r.status_code == 200, r.text
    later = await sdk.sync()
    assert (later.evaluated, found(later)) == (0, {FRIENDS[2]})
    # FRIENDS[0] lets go: gone at the next sync
    r = await api.client.delete(f"/v1/relations/{owner['user_id']}", headers=held_by[FRIENDS[0]][1])
    assert r.status_code in (200, 204), r.text
    await sdk.sync()
    assert [m["user_id"] for m in sdk.private_matches()] == [held_by[FRIENDS[2]][0]]
