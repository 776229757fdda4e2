"""Relations under random sequences of PUTs and bulk syncs, checked against a small model.

The model is the contract, written independently of the server: `contact` and `subscribe` are
set when given and kept when not (a new relation is a contact unless told otherwise);
`access_levels` replace the granted set in mode "replace" and are added in mode "merge"; a
relation that is neither contact nor subscription does not exist. Registered users and
pending numbers behave alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Api

OWNER = "+14155550100"
REGISTERED = ["+14155550101", "+14155550102"]
PENDING = ["+14155550190", "+14155550191"]
NUMBERS = REGISTERED + PENDING


@dataclass(frozen=True)
class Op:
    numbers: tuple[str, ...]
    bulk: bool
    contact: bool | None
    subscribe: bool | None
    levels: frozenset[int] | None
    mode: str


ops = st.lists(
    st.builds(
        Op,
        numbers=st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=4, unique=True).map(tuple),
        bulk=st.booleans(),
        contact=st.sampled_from([None, True, False]),
        subscribe=st.sampled_from([None, True, False]),
        levels=st.one_of(st.none(), st.frozensets(st.sampled_from([1, 2, 3, 63]), max_size=3)),
        mode=st.sampled_from(["replace", "merge"]),
    ),
    min_size=1,
    max_size=6,
)

State = tuple[bool, bool, frozenset[int]]


def model_apply(model: dict[str, State], op: Op) -> None:
    for number in op.numbers:
        old = model.get(number)
        if old is None:
            contact = True if op.contact is None else op.contact
            subscribe = bool(op.subscribe)
            levels = op.levels or frozenset()
        else:
            contact = old[0] if op.contact is None else op.contact
            subscribe = old[1] if op.subscribe is None else op.subscribe
            if op.levels is None:
                levels = old[2]
            elif op.mode == "merge":
                levels = old[2] | op.levels
            else:
                levels = op.levels
        if contact or subscribe:
            model[number] = (contact, subscribe, levels)
        else:
            model.pop(number, None)


async def _setup(api: Api) -> tuple[dict[str, str], dict[int, str]]:
    cached = getattr(api, "_modes_setup", None)
    if cached is None:
        _, headers = await api.user_with_token(OWNER)
        ids = {(await api.create_user(n))["user_id"]: n for n in REGISTERED}
        cached = (headers, ids)
        api._modes_setup = cached  # type: ignore[attr-defined]
    return cached


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=ops)
async def test_relations_follow_the_model(api: Api, sequence: list[Op]) -> None:
    headers, ids = await _setup(api)
    async with api.ctx.tx() as tx:
        await tx.conn.execute(sa.text("DELETE FROM relations"))
    model: dict[str, State] = {}
    for op in sequence:
        body: dict[str, object] = {"mode": op.mode}
        if op.contact is not None:
            body["contact"] = op.contact
        if op.subscribe is not None:
            body["subscribe"] = op.subscribe
        if op.levels is not None:
            body["access_levels"] = sorted(op.levels)
        if op.bulk:
            r = await api.client.post(
                "/v1/relations/sync", json={**body, "phones": list(op.numbers)}, headers=headers
            )
            assert r.status_code == 200, r.text
        else:
            for number in op.numbers:
                r = await api.client.put(f"/v1/relations/{number}", json=body, headers=headers)
                assert r.status_code == 200, r.text
        model_apply(model, op)
    r = await api.client.get("/v1/relations", params={"limit": 100}, headers=headers)
    got: dict[str, State] = {}
    for rel in r.json()["relations"]:
        number = ids[rel["user_id"]] if rel["user_id"] is not None else rel["phone"]
        assert rel["pending"] == (number in PENDING)
        got[number] = (rel["contact"], rel["subscribe"], frozenset(rel["access_levels"]))
    assert got == model
