"""The visibility rule, checked over random profiles, levels, relations and blocks.

Owner A has a random profile; each other user has a random relation from A (contact or not,
granted levels) and may subscribe to A; some block A or are blocked by A. For every viewer,
what `GET /v1/users/{A}/profile` returns must equal the contract's rule, computed here
independently of the server's code: B sees A's field of level L when L = 0, or A holds B as a
contact with L among the levels granted to B; nothing when either blocks the other. After A
changes the profile, every subscriber's `profile.updated` must carry exactly the change in
that subscriber's view (no event when the view did not change), and nobody else gets one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api

NAMES = ["name", "status", "photo", "x.color"]
LEVELS = [0, 1, 2, 3, 63]
VIEWERS = 3

values = st.one_of(st.integers(-3, 3), st.sampled_from(["", "a", "b", "Zoë"]), st.booleans())
fields = st.dictionaries(st.sampled_from(NAMES), st.tuples(values, st.sampled_from(LEVELS)))
changes = st.dictionaries(
    st.sampled_from(NAMES),
    st.one_of(st.none(), st.tuples(values, st.one_of(st.none(), st.sampled_from(LEVELS)))),
    min_size=1,
)


@dataclass(frozen=True)
class Viewer:
    contact: bool
    granted: frozenset[int]
    subscribed: bool
    block: str  # "", "owner" (A blocks the viewer) or "viewer" (the viewer blocks A)


viewers = st.lists(
    st.builds(
        Viewer,
        contact=st.booleans(),
        granted=st.frozensets(st.sampled_from(LEVELS[1:])),
        subscribed=st.booleans(),
        block=st.sampled_from(["", "", "owner", "viewer"]),
    ),
    min_size=VIEWERS,
    max_size=VIEWERS,
)


def rule(profile: dict[str, tuple[Any, int]], viewer: Viewer) -> dict[str, Any] | None:
    """The contract's visibility rule; None means 'sees nothing at all' (a block)."""
    if viewer.block:
        return None
    return {
        name: value
        for name, (value, level) in profile.items()
        if level == 0 or (viewer.contact and level in viewer.granted)
    }


def apply(
    profile: dict[str, tuple[Any, int]], change: dict[str, tuple[Any, int | None] | None]
) -> dict[str, tuple[Any, int]]:
    out = dict(profile)
    for name, new in change.items():
        if new is None:
            out.pop(name, None)
        else:
            value, level = new
            out[name] = (value, level if level is not None else out.get(name, (None, 0))[1])
    return out


def same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def wire(change: dict[str, tuple[Any, int | None] | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, new in change.items():
        if new is None:
            out[name] = None
        else:
            out[name] = {"value": new[0]} if new[1] is None else {"value": new[0], "level": new[1]}
    return out


async def _users(api: Api) -> list[tuple[int, dict[str, str]]]:
    """A and the viewers, made once per test run (the fixture outlives the examples)."""
    cached: list[tuple[int, dict[str, str]]] | None = getattr(api, "_visibility_users", None)
    if cached is None:
        cached = []
        for i in range(VIEWERS + 1):
            user, headers = await api.user_with_token(f"+1415555{100 + i:04d}")
            cached.append((user["user_id"], headers))
        api._visibility_users = cached  # type: ignore[attr-defined]
    return cached


async def _last_seq(api: Api, headers: dict[str, str]) -> int:
    evs = await api.events(headers)
    return int(evs[-1]["seq"]) if evs else 0


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(profile=fields, people=viewers, change=changes)
async def test_profile_reads_and_events_follow_the_rule(
    api: Api,
    profile: dict[str, tuple[Any, int]],
    people: list[Viewer],
    change: dict[str, tuple[Any, int | None] | None],
) -> None:
    (owner, oh), *others = await _users(api)
    async with api.ctx.tx() as tx:
        for table in ("relations", "blocks", "profile_fields"):
            await tx.conn.execute(sa.text(f"DELETE FROM {table}"))
    r = await api.client.patch(
        "/v1/me/profile",
        json={"fields": wire({n: (v, lvl) for n, (v, lvl) in profile.items()})},
        headers=oh,
    )
    assert r.status_code == 200, r.text
    for (uid, headers), viewer in zip(others, people, strict=True):
        body = {"contact": viewer.contact, "access_levels": sorted(viewer.granted)}
        r = await api.client.put(f"/v1/relations/{uid}", json=body, headers=oh)
        assert r.status_code == 200, r.text
        if viewer.subscribed:
            r = await api.client.put(
                f"/v1/relations/{owner}",
                json={"contact": False, "subscribe": True},
                headers=headers,
            )
            assert r.status_code == 200, r.text
        if viewer.block == "owner":
            assert (await api.client.put(f"/v1/blocks/{uid}", headers=oh)).status_code == 204
        elif viewer.block == "viewer":
            assert (await api.client.put(f"/v1/blocks/{owner}", headers=headers)).status_code == 204

    async def check_reads(state: dict[str, tuple[Any, int]]) -> None:
        mine = await api.client.get(f"/v1/users/{owner}/profile", headers=oh)
        assert mine.json()["fields"] == {n: v for n, (v, _) in state.items()}
        for (_, headers), viewer in zip(others, people, strict=True):
            r = await api.client.get(f"/v1/users/{owner}/profile", headers=headers)
            expected = rule(state, viewer)
            if expected is None:
                assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
            else:
                assert r.status_code == 200, r.text
                got = r.json()["fields"]
                assert got == expected
                assert all(same(got[n], expected[n]) for n in got)

    await check_reads(profile)
    marks = [await _last_seq(api, headers) for _, headers in others]
    r = await api.client.patch("/v1/me/profile", json={"fields": wire(change)}, headers=oh)
    assert r.status_code == 200, r.text
    after = apply(profile, change)
    await check_reads(after)
    for (_, headers), viewer, mark in zip(others, people, marks, strict=True):
        got = [
            e["data"]
            for e in await api.events(headers, after=mark)
            if e["type"] == "profile.updated"
        ]
        old_view, new_view = rule(profile, viewer), rule(after, viewer)
        if not viewer.subscribed or old_view is None or new_view is None:
            assert got == []
            continue
        fields_changed = {
            n: v for n, v in new_view.items() if n not in old_view or not same(old_view[n], v)
        }
        removed = sorted(n for n in old_view if n not in new_view)
        if not fields_changed and not removed:
            assert got == []
        else:
            assert got == [{"user_id": owner, "fields": fields_changed, "removed": removed}]
            assert all(same(got[0]["fields"][n], v) for n, v in fields_changed.items())
