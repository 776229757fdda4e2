"""Upload semantics against a model: any sequence of uploads leaves exactly the book a plain
dictionary predicts, and the counts in each answer agree with it. Both databases."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contactsync.server.app import create_app
from contactsync.server.config import Settings
from tests.conftest import ADMIN_KEY, Templates, _pg_exec, pg_url

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


async def scenario(db_url: str, data_dir: Path, ops: list[dict[str, Any]]) -> None:
    app = create_app(Settings(data_dir=data_dir, database_url=db_url, admin_key=ADMIN_KEY))
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            user = (
                await client.post("/v1/admin/users", json={"phone": "+14155550100"}, headers=admin)
            ).json()
            token = (
                await client.post(
                    f"/v1/admin/users/{user['user_id']}/tokens",
                    json={"device_id": "d"},
                    headers=admin,
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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_uploads_match_the_model(backend: str, templates: Templates) -> None:
    @settings(
        max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(st.lists(upload, min_size=1, max_size=6))
    def check(ops: list[dict[str, Any]]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                path = Path(tmp) / "t.db"
                shutil.copyfile(templates.sqlite_template(), path)
                asyncio.run(scenario(f"sqlite+aiosqlite:///{path}", Path(tmp), ops))
                return
            name = f"cs_p_{uuid.uuid4().hex[:12]}"
            asyncio.run(_pg_exec(f'CREATE DATABASE "{name}" TEMPLATE "{templates.pg_template()}"'))
            try:
                url = pg_url(name).replace("postgresql://", "postgresql+asyncpg://")
                asyncio.run(scenario(url, Path(tmp), ops))
            finally:
                asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    check()
