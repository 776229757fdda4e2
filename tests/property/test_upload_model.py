"""Upload semantics against a model: any sequence of uploads leaves exactly the book a plain
dictionary predicts, and the counts in each answer agree with it. Both databases."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_KEY, Api

NUMBERS = [f"+1415555{i:04d}" for i in range(100, 108)]
NAMES = [None, "Ann", "Bob", "  Cy  ", "Δημήτρης"]

contact = st.builds(
    lambda phone, name, destroy: {"phone": phone, "name": name, "destroy": destroy},
    st.sampled_from(NUMBERS),
    st.sampled_from(NAMES),
    st.booleans(),
)
upload = st.fixed_dictionaries(
    {
        "contacts": st.lists(contact, max_size=6),
        "force": st.booleans(),
        "device_id": st.sampled_from([None, None, "tab"]),
    }
)


def apply(books: dict[str, dict[str, str | None]], op: dict[str, Any]) -> dict[str, int]:
    """The model: what an upload does to the books, and the counts it answers with."""
    book = books.setdefault(op["device_id"] or "", {})
    desired: dict[str, tuple[str | None, bool]] = {}
    for c in op["contacts"]:
        desired.pop(c["phone"], None)
        name = c["name"].strip() if c["name"] else None
        desired[c["phone"]] = (name or None, c["destroy"])
    counts = {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0}
    if op["force"]:
        keep = {p: n for p, (n, d) in desired.items() if not d}
        for p in list(book):
            if p not in keep:
                del book[p]
                counts["deleted"] += 1
        for p, n in keep.items():
            if p not in book:
                book[p] = n
                counts["created"] += 1
            elif n is not None and n != book[p]:
                book[p] = n
                counts["updated"] += 1
            else:
                counts["unchanged"] += 1
        return counts
    for p, (n, d) in desired.items():
        if d:
            counts["deleted" if p in book else "unchanged"] += 1
            book.pop(p, None)
        elif p not in book:
            book[p] = n
            counts["created"] += 1
        elif n is not None and n != book[p]:
            book[p] = n
            counts["updated"] += 1
        else:
            counts["unchanged"] += 1
    return counts


async def scenario(client: httpx.AsyncClient, phone: str, ops: list[dict[str, Any]]) -> None:
    """One example: a user of its own (so examples share the app and database, not books)."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    user = (await client.post("/v1/admin/users", json={"phone": phone}, headers=admin)).json()
    token = (
        await client.post(
            f"/v1/admin/users/{user['user_id']}/tokens", json={"device_id": "d"}, headers=admin
        )
    ).json()["token"]
    me = {"Authorization": f"Bearer {token}"}
    books: dict[str, dict[str, str | None]] = {}
    for op in ops:
        body = {k: v for k, v in op.items() if v is not None}
        r = await client.post("/v1/addressbook", json=body, headers=me)
        assert r.status_code == 200, r.text
        expected = apply(books, op)
        assert {k: r.json()[k] for k in expected} == expected, op
        for book, model in books.items():
            query = f"&device_id={book}" if book else ""
            r = await client.get(f"/v1/addressbook?limit=100{query}", headers=me)
            assert {c["phone"]: c["name"] for c in r.json()["contacts"]} == model


PHONES = (f"+1650555{i:04d}" for i in itertools.count(100))


# One app and database for all examples (a fresh one per example cost a database copy and an
# app start each); every example uploads as a new user, whose books start empty.
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(upload, min_size=1, max_size=6))
async def test_uploads_match_the_model(api: Api, ops: list[dict[str, Any]]) -> None:
    await scenario(api.client, next(PHONES), ops)
