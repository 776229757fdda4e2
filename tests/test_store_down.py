"""When the database goes away the API says so with 503, never a 500 or a trace."""

from __future__ import annotations

import pytest

from tests.conftest import Api, _pg_exec


# PostgreSQL only: an embedded SQLite file cannot go away underneath the server.
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_database_gone(api: Api, backend: str, db_url: str) -> None:
    _, headers = await api.user_with_token("+14155550100")
    name = db_url.rsplit("/", 1)[1]
    await _pg_exec(f'DROP DATABASE "{name}" WITH (FORCE)')
    ready = await api.client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "store_unavailable"
    r = await api.client.get("/v1/me", headers=headers)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "store_unavailable"
    assert (await api.client.get("/healthz")).status_code == 200
