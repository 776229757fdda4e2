"""The real server process on a loopback port, on embedded SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.server import ServerProcess


def test_serve_creates_an_admin_key_and_serves_the_api(tmp_path: Path, db_url: str) -> None:
    database_url = None if db_url.startswith("sqlite") else db_url
    server = ServerProcess(tmp_path / "data", database_url, admin_key=None).start()
    try:
        key_file = tmp_path / "data" / "admin_key"
        assert key_file.exists() and (key_file.stat().st_mode & 0o777) == 0o600
        assert "admin key" in server.log() and "+1415" not in server.log()
        admin = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            assert client.get("/readyz").status_code == 200
            user = client.post("/v1/admin/users", json={"phone": "+1 415 555 0100"}, headers=admin)
            assert user.status_code == 201
            token = client.post(
                f"/v1/admin/users/{user.json()['user_id']}/tokens",
                json={"device_id": "laptop"},
                headers=admin,
            ).json()["token"]
            me = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200 and me.json()["phone"] == "+14155550100"
            assert client.get("/openapi.json").json()["info"]["title"] == "contactsync"
        if database_url is None:
            assert (tmp_path / "data" / "contactsync.db").exists()
    finally:
        server.stop()
    # A restart keeps the data and the same admin key.
    server = ServerProcess(tmp_path / "data", database_url, admin_key=None).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            r = client.get("/v1/admin/users/1", headers=admin)
            assert r.status_code == 200 and r.json()["phone"] == "+14155550100"
    finally:
        server.stop()
