"""Private discovery over the API, on both databases: the filter and its deltas, OPRF
evaluation (quota, batch limit, bad points, key versions), resolving matches under blocks and
`discoverable_by`, key rotation."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from contactsync import oprf, tagfilter
from contactsync.server.app import create_app
from contactsync.server.clock import ManualClock
from contactsync.server.config import Settings
from contactsync.server.services import private_discovery
from contactsync.server.services.private_discovery import KeyRing
from tests.conftest import Api

A, B, C, D = "+14155550101", "+14155550102", "+14155550103", "+14155550104"
STRANGERS = ["+14155550191", "+14155550192", "+442079460958"]


async def info(api: Api, headers: dict[str, str]) -> dict[str, Any]:
    r = await api.client.get("/v1/discovery", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def evaluate(
    api: Api, headers: dict[str, str], numbers: list[str], key_version: int | None = None
) -> dict[str, str]:
    """{number: tag hex} the way a client computes them: blind, evaluate, unblind."""
    if key_version is None:
        key_version = (await info(api, headers))["key_version"]
    blinded = [oprf.blind(n) for n in numbers]
    r = await api.client.post(
        "/v1/discovery/evaluate",
        json={
            "key_version": key_version,
            "points": [base64.b64encode(p).decode() for _, p in blinded],
        },
        headers=headers,
    )
    assert r.status_code == 200, r.text
    answers = [base64.b64decode(p) for p in r.json()["points"]]
    assert len(answers) == len(numbers)
    return {
        n: oprf.finalize(n, oprf.unblind(rb, answer)).hex()
        for n, (rb, _), answer in zip(numbers, blinded, answers, strict=True)
    }


async def filter_state(api: Api, headers: dict[str, str]) -> tuple[tagfilter.FilterState, int, int]:
    """The whole filter, completed with the delta after its version."""
    r = await api.client.get("/v1/discovery/filter", headers=headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.contactsync.filter"
    base = tagfilter.Filter.decode(r.content)
    state = tagfilter.FilterState(base)
    version, key_version = base.version, base.key_version
    assert int(r.headers["x-discovery-version"]) == version
    delta = await changes(api, headers, version, key_version)
    state.apply(tagfilter.decode_changes(base64.b64decode(delta["changes"])))
    return state, delta["version"], key_version


async def changes(api: Api, headers: dict[str, str], since: int, key_version: int) -> Any:
    r = await api.client.get(
        f"/v1/discovery/filter?since={since}&key_version={key_version}", headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def matched(state: tagfilter.FilterState, tags: dict[str, str]) -> set[str]:
    return {n for n, t in tags.items() if state.contains(oprf.filter_key(bytes.fromhex(t)))}


async def resolve(api: Api, headers: dict[str, str], tags: list[str], key_version: int) -> Any:
    r = await api.client.post(
        "/v1/discovery/resolve", json={"key_version": key_version, "tags": tags}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()["users"]


async def test_the_filter_matches_exactly_the_registered_numbers(api: Api) -> None:
    a, ha = await api.user_with_token(A, "Ann")
    b = await api.create_user(B, "Bob")
    c = await api.create_user(C, "Cy")
    tags = await evaluate(api, ha, [B, C, *STRANGERS])
    state, _version, key_version = await filter_state(api, ha)
    assert matched(state, tags) == {B, C}
    found = await resolve(api, ha, [tags[B], tags[C]], key_version)
    assert {u["user_id"] for u in found} == {b["user_id"], c["user_id"]}
    assert {u["tag"] for u in found} == {tags[B], tags[C]}
    # the caller's own number is in the filter but never resolves to a contact
    own = await evaluate(api, ha, [A])
    assert await resolve(api, ha, [own[A]], key_version) == []
    # numbers that are not users' resolve to nothing
    assert await resolve(api, ha, [tags[s] for s in STRANGERS], key_version) == []
    assert a["user_id"] not in {u["user_id"] for u in found}


async def test_joins_and_leaves_arrive_as_small_deltas(api: Api) -> None:
    _, ha = await api.user_with_token(A)
    state, version, key_version = await filter_state(api, ha)
    tags = await evaluate(api, ha, [D])
    assert matched(state, tags) == set()
    d, hd = await api.user_with_token(D, "Dee")
    delta = await changes(api, ha, version, key_version)
    records = list(tagfilter.decode_changes(base64.b64decode(delta["changes"])))
    key = oprf.filter_key(bytes.fromhex(tags[D]))
    assert records == [(key, True, True)]  # added, and a registration that may be announced
    state.apply(records)
    assert matched(state, tags) == {D}
    # D hides: a leave (not announced), and resolving D's tag is a miss from now on
    r = await api.client.put("/v1/me/preferences", json={"discoverable_by": "nobody"}, headers=hd)
    assert r.status_code == 200 and r.json()["discoverable_by"] == "nobody"
    later = await changes(api, ha, delta["version"], key_version)
    records = list(tagfilter.decode_changes(base64.b64decode(later["changes"])))
    assert records == [(key, False, False)]
    state.apply(records)
    assert matched(state, tags) == set()
    assert await resolve(api, ha, [tags[D]], key_version) == []
    # an up-to-date client gets an empty delta; the 100-join delta size is in the bench
    assert (await changes(api, ha, later["version"], key_version))["changes"] == ""
    # deleting a listed user is a leave too
    await api.client.put("/v1/me/preferences", json={"discoverable_by": "everybody"}, headers=hd)
    r = await api.client.delete(f"/v1/admin/users/{d['user_id']}", headers=api.admin)
    assert r.status_code in (200, 204)
    state, _, _ = await filter_state(api, ha)
    assert matched(state, tags) == set()


async def test_blockers_and_hidden_users_are_misses(api: Api) -> None:
    a, ha = await api.user_with_token(A)
    b, hb = await api.user_with_token(B)
    c, hc = await api.user_with_token(C)
    d, hd = await api.user_with_token(D)
    r = await api.client.put(f"/v1/blocks/{a['user_id']}", headers=hb)
    assert r.status_code in (200, 204), r.text
    r = await api.client.put("/v1/me/preferences", json={"discoverable_by": "nobody"}, headers=hc)
    assert r.status_code == 200
    r = await api.client.put("/v1/me/preferences", json={"discoverable_by": "contacts"}, headers=hd)
    assert r.status_code == 200
    tags = await evaluate(api, ha, [B, C, D])
    state, _, key_version = await filter_state(api, ha)
    # B blocks A but is listed (the filter is the same for everybody): resolve says no
    assert matched(state, tags) == {B}
    assert await resolve(api, ha, list(tags.values()), key_version) == []
    # a `contacts` user is found by the users it holds, where the server can check it (a
    # relation marked as contact: no books are stored in private mode)
    assert await own_keys(api, ha, key_version) == set()
    r = await api.client.put(f"/v1/relations/{a['user_id']}", json={"contact": True}, headers=hd)
    assert r.status_code == 200, r.text
    assert await own_keys(api, ha, key_version) == {oprf.filter_key(bytes.fromhex(tags[D]))}
    found = await resolve(api, ha, [tags[D]], key_version)
    assert [u["user_id"] for u in found] == [d["user_id"]]
    # still not in the filter, so nobody else learns that D is registered
    state, _, _ = await filter_state(api, ha)
    assert matched(state, tags) == {B}


async def own_keys(api: Api, headers: dict[str, str], key_version: int) -> set[int]:
    r = await api.client.get(f"/v1/discovery/contacts?key_version={key_version}", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["key_version"] == key_version
    return {int(k, 16) for k in r.json()["keys"]}


async def test_a_contacts_user_is_in_the_own_list_of_those_it_lets_find_it_only(
    api: Api,
) -> None:
    a, ha = await api.user_with_token(A)
    b, hb = await api.user_with_token(B)
    c, hc = await api.user_with_token(C)
    d, hd = await api.user_with_token(D)
    for who in (hc, hd):
        r = await api.client.put(
            "/v1/me/preferences", json={"discoverable_by": "contacts"}, headers=who
        )
        assert r.status_code == 200
    key_version = (await info(api, ha))["key_version"]
    tags = await evaluate(api, ha, [C, D])
    keys = {n: oprf.filter_key(bytes.fromhex(t)) for n, t in tags.items()}
    # C holds A, D holds B: each is in the list of the one it holds only
    for holder, target in ((hc, a), (hd, b)):
        r = await api.client.put(
            f"/v1/relations/{target['user_id']}", json={"contact": True}, headers=holder
        )
        assert r.status_code == 200, r.text
    assert await own_keys(api, ha, key_version) == {keys[C]}
    assert [u["user_id"] for u in await resolve(api, ha, list(tags.values()), key_version)] == [
        c["user_id"]
    ]
    assert keys[C] not in await own_keys(api, hb, key_version)
    # a block either way takes C out; so does C choosing nobody
    r = await api.client.put(f"/v1/blocks/{c['user_id']}", headers=ha)
    assert r.status_code in (200, 204), r.text
    assert await own_keys(api, ha, key_version) == set()
    assert await resolve(api, ha, [tags[C]], key_version) == []
    r = await api.client.delete(f"/v1/blocks/{c['user_id']}", headers=ha)
    assert r.status_code in (200, 204), r.text
    assert await own_keys(api, ha, key_version) == {keys[C]}
    r = await api.client.put("/v1/me/preferences", json={"discoverable_by": "nobody"}, headers=hc)
    assert await own_keys(api, ha, key_version) == set()
    assert await resolve(api, ha, [tags[C]], key_version) == []
    # a key version no longer in force is refused as everywhere
    r = await api.client.get(f"/v1/discovery/contacts?key_version={key_version + 1}", headers=ha)
    assert r.status_code == 409 and r.json()["error"]["code"] == "discovery_key_changed"
    for garbage in ("", "?key_version=abc", "?key_version=-1", "?key_version=1e3"):
        r = await api.client.get(f"/v1/discovery/contacts{garbage}", headers=ha)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", garbage
    r = await api.client.get(f"/v1/discovery/contacts?key_version={key_version}")
    assert r.status_code == 401
    assert d["user_id"] != c["user_id"]


async def test_each_point_counts_against_the_discovery_quota(api: Api) -> None:
    _, ha = await api.user_with_token(A)
    r = await api.client.put("/v1/admin/settings", json={"discovery_quota": 5}, headers=api.admin)
    assert r.status_code == 200, r.text
    await evaluate(api, ha, STRANGERS)
    key_version = (await info(api, ha))["key_version"]
    points = [base64.b64encode(oprf.blind(n)[1]).decode() for n in STRANGERS]
    r = await api.client.post(
        "/v1/discovery/evaluate", json={"key_version": key_version, "points": points}, headers=ha
    )
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "discovery_quota_exceeded"
    assert r.json()["error"]["details"]["used"] == 3
    # the refused request used nothing: two more still fit
    await evaluate(api, ha, STRANGERS[:2])


@pytest.mark.parametrize(
    "points, code, status",
    [
        (["not base64!"], "invalid_point", 422),
        ([base64.b64encode(b"\x01" * 32).decode()], "invalid_point", 422),
        ([base64.b64encode(b"\x00" * 32).decode()], "invalid_point", 422),
        ([base64.b64encode(b"\x02" * 31).decode()], "invalid_point", 422),
    ],
)
async def test_bad_points_are_refused_and_cost_nothing(
    api: Api, points: list[str], code: str, status: int
) -> None:
    _, ha = await api.user_with_token(A)
    await api.client.put("/v1/admin/settings", json={"discovery_quota": 1}, headers=api.admin)
    key_version = (await info(api, ha))["key_version"]
    good = base64.b64encode(oprf.blind(B)[1]).decode()
    r = await api.client.post(
        "/v1/discovery/evaluate",
        json={"key_version": key_version, "points": [good, *points]},
        headers=ha,
    )
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["details"] == {"index": 1}
    await evaluate(api, ha, [B])  # the quota of one is still there


async def test_wrong_key_version_and_oversized_batches_are_clear_errors(api: Api) -> None:
    _, ha = await api.user_with_token(A)
    key_version = (await info(api, ha))["key_version"]
    point = base64.b64encode(oprf.blind(B)[1]).decode()
    for path, body in (
        ("/v1/discovery/evaluate", {"key_version": key_version + 1, "points": [point]}),
        ("/v1/discovery/resolve", {"key_version": key_version + 1, "tags": ["0" * 32]}),
    ):
        r = await api.client.post(path, json=body, headers=ha)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "discovery_key_changed"
        assert r.json()["error"]["details"]["key_version"] == key_version
    r = await api.client.post(
        "/v1/discovery/resolve", json={"key_version": key_version, "tags": ["xyz"]}, headers=ha
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_tag"
    await api.client.put(
        "/v1/admin/settings", json={"max_contacts_per_request": 2}, headers=api.admin
    )
    r = await api.client.post(
        "/v1/discovery/evaluate",
        json={"key_version": key_version, "points": [point] * 3},
        headers=ha,
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "too_many_points"
    assert r.json()["error"]["details"] == {"max": 2, "got": 3}
    r = await api.client.get("/v1/discovery/filter?since=-1&key_version=1", headers=ha)
    assert r.status_code == 422


async def test_key_rotation_makes_clients_evaluate_again_with_the_same_matches(
    api: Api,
) -> None:
    _, ha = await api.user_with_token(A)
    b = await api.create_user(B)
    before = await evaluate(api, ha, [B, *STRANGERS])
    state, version, key_version = await filter_state(api, ha)
    r = await api.client.post("/v1/admin/discovery/rotate-key", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"key_version": key_version + 1, "done": True}
    # the old key version is refused; a delta under it is a full filter under the new one
    point = base64.b64encode(oprf.blind(B)[1]).decode()
    r = await api.client.post(
        "/v1/discovery/evaluate", json={"key_version": key_version, "points": [point]}, headers=ha
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "discovery_key_changed"
    r = await api.client.get(
        f"/v1/discovery/filter?since={version}&key_version={key_version}", headers=ha
    )
    assert r.headers["content-type"] == "application/vnd.contactsync.filter"
    assert int(r.headers["x-discovery-key-version"]) == key_version + 1
    after = await evaluate(api, ha, [B, *STRANGERS])
    assert set(after.values()).isdisjoint(before.values())
    state, _, new_version = await filter_state(api, ha)
    assert new_version == key_version + 1
    assert matched(state, after) == {B}
    found = await resolve(api, ha, [after[B]], new_version)
    assert [u["user_id"] for u in found] == [b["user_id"]]
    # users who register after the rotation are tagged under the new key
    await api.create_user(C)
    late = await evaluate(api, ha, [C])
    state, _, _ = await filter_state(api, ha)
    assert matched(state, late) == {C}


async def test_the_app_default_moves_users_who_did_not_choose(api: Api) -> None:
    _, ha = await api.user_with_token(A)
    _, hb = await api.user_with_token(B)
    await api.create_user(C)
    r = await api.client.put(
        "/v1/me/preferences", json={"discoverable_by": "everybody"}, headers=hb
    )
    assert r.status_code == 200
    tags = await evaluate(api, ha, [B, C])
    r = await api.client.put(
        "/v1/admin/settings", json={"discoverable_by_default": "nobody"}, headers=api.admin
    )
    assert r.status_code == 200, r.text
    state, _, _ = await filter_state(api, ha)
    assert matched(state, tags) == {B}  # B chose everybody; C follows the default


async def rotation_settled(client: httpx.AsyncClient, admin: dict[str, str]) -> Any:
    """GET /v1/admin/discovery/rotation once no rotation is under way (30 s at most)."""
    for _ in range(600):
        r = await client.get("/v1/admin/discovery/rotation", headers=admin)
        assert r.status_code == 200, r.text
        if r.json()["rotating_to"] is None:
            break
        await asyncio.sleep(0.05)
    return r.json()


async def test_a_rotation_goes_on_after_the_request_and_is_never_doubled(api: Api) -> None:
    _, ha = await api.user_with_token(A)
    for phone in (B, C, D):
        await api.create_user(phone)
    key_version = (await info(api, ha))["key_version"]
    # not waiting: 202, and the rotation goes on without the request
    r = await api.client.post("/v1/admin/discovery/rotate-key?wait=0", headers=api.admin)
    assert r.status_code == 202, r.text
    assert r.json() == {"key_version": key_version + 1, "done": False}
    assert await rotation_settled(api.client, api.admin) == {
        "key_version": key_version + 1,
        "rotating_to": None,
        "tagged": 4,
        "users": 4,
    }
    # a rotation that a stop interrupted, or another process started, left a newer key in
    # the file: asked to rotate, the server carries on with it and writes no third key (the
    # file keeps two, and the one in force must stay in it)
    keys = KeyRing(api.ctx.settings.resolved_discovery_key_file())
    assert keys.add() == key_version + 2
    r = await api.client.post("/v1/admin/discovery/rotate-key?wait=60", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json() == {"key_version": key_version + 2, "done": True}
    assert set(keys.load()) == {key_version + 1, key_version + 2}
    tags = await evaluate(api, ha, [B, C, D])
    state, _, new_version = await filter_state(api, ha)
    assert new_version == key_version + 2 and matched(state, tags) == {B, C, D}
    r = await api.client.post("/v1/admin/discovery/rotate-key?wait=61", headers=api.admin)
    assert r.status_code == 422
    r = await api.client.get("/v1/admin/discovery/rotation")
    assert r.status_code == 401


def test_the_oprf_leaves_no_copy_of_libsodium_behind() -> None:
    # rbcl writes its libsodium to a temporary file at import (contactsync.oprf removes it
    # once loaded); the library keeps working from the mapping
    sodium = sys.modules.get("rbcl._sodium") or sys.modules["_sodium"]
    assert not Path(sodium.lib_path).exists()
    key = oprf.new_key()
    r, point = oprf.blind(A)
    assert oprf.finalize(A, oprf.unblind(r, oprf.evaluate(key, point))) == oprf.tag(key, A)


async def test_a_server_started_after_an_interrupted_rotation_carries_it_on(
    api: Api, settings: Settings, clock: ManualClock
) -> None:
    _, ha = await api.user_with_token(A)
    await api.create_user(B)
    key_version = (await info(api, ha))["key_version"]
    # a stop interrupted a rotation: its key is in the file, not in force
    KeyRing(settings.resolved_discovery_key_file()).add()
    assert (await info(api, ha))["key_version"] == key_version
    # another process starts on the same database and key file
    app = create_app(settings, clock=clock)
    async with LifespanManager(app) as started:
        transport = httpx.ASGITransport(app=started.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://other") as other:
            assert await rotation_settled(other, api.admin) == {
                "key_version": key_version + 1,
                "rotating_to": None,
                "tagged": 2,
                "users": 2,
            }
    tags = await evaluate(api, ha, [B])
    state, _, new_version = await filter_state(api, ha)
    assert new_version == key_version + 1 and matched(state, tags) == {B}


async def test_a_start_with_everybody_tagged_takes_no_write_lock(api: Api, db_url: str) -> None:
    # Every start looks for users without a tag (all of a million on SQLite: 0.7 s); finding
    # none is the usual case and is learnt in a read, so writers are not held up meanwhile.
    # Here another writer holds SQLite's write lock for the whole look (PostgreSQL's reads
    # and writes do not exclude each other: there only the answer is checked).
    await api.create_user(A)
    await api.create_user(B)  # tagged at registration
    holder = None
    if db_url.startswith("sqlite"):
        holder = sqlite3.connect(db_url.split("///", 1)[1], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    try:
        tagged = await asyncio.wait_for(private_discovery.backfill(api.ctx), timeout=5)
    finally:
        if holder is not None:
            holder.execute("ROLLBACK")
            holder.close()
    assert tagged == 0
