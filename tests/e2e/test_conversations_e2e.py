"""Conversations over a real `contactsync serve` process on loopback, SQLite and PostgreSQL:
two users, three devices, a DM and a group, retries, an offline device catching up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def _user(client: httpx.Client, phone: str, *devices: str) -> tuple[int, list[dict[str, str]]]:
    user_id = client.post("/v1/admin/users", json={"phone": phone}, headers=ADMIN).json()["user_id"]
    headers = []
    for device in devices:
        r = client.post(
            f"/v1/admin/users/{user_id}/tokens", json={"device_id": device}, headers=ADMIN
        )
        headers.append({"Authorization": f"Bearer {r.json()['token']}"})
    return int(user_id), headers


def _events(client: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = client.get("/v1/events?after=0&limit=1000", headers=headers)
    assert r.status_code == 200
    return list(r.json()["events"])


def test_conversations_over_a_real_server(tmp_path: Path, db_url: str) -> None:
    database_url = None if db_url.startswith("sqlite") else db_url
    server = ServerProcess(tmp_path / "data", database_url).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            a, (a_phone,) = _user(client, "+14155550101", "a-phone")
            b, (b_phone, b_laptop) = _user(client, "+14155550102", "b-phone", "b-laptop")
            c, (c_phone,) = _user(client, "+14155550103", "c-phone")

            # The laptop syncs once, then goes offline.
            r = client.post("/v1/sync", json={}, headers=b_laptop)
            assert r.json() == {
                "eligible": 0,
                "synced": 0,
                "conversations": [],
                "excluded": [],
                "next_cursor": None,
            }

            dm = client.post(
                "/v1/conversations", json={"kind": "dm", "members": [b]}, headers=a_phone
            )
            assert dm.status_code == 201
            dm_id = dm.json()["id"]
            assert (
                client.post(
                    "/v1/conversations", json={"kind": "dm", "members": [a]}, headers=b_phone
                ).json()["id"]
                == dm_id
            )
            # b accepts on the phone; the laptop will learn it from its log and from sync.
            r = client.put(
                f"/v1/conversations/{dm_id}/consent", json={"state": "allowed"}, headers=b_phone
            )
            assert r.status_code == 200
            msg = {"body": "hello b", "client_msg_id": "0b7e-1"}
            first = client.post(f"/v1/conversations/{dm_id}/messages", json=msg, headers=a_phone)
            retry = client.post(f"/v1/conversations/{dm_id}/messages", json=msg, headers=a_phone)
            assert (first.status_code, retry.status_code) == (201, 200)
            assert first.json() == retry.json() and first.json()["seq"] == 1
            client.post(
                f"/v1/conversations/{dm_id}/messages",
                json={"body": "hi a", "client_msg_id": "b-1"},
                headers=b_phone,
            )
            g = client.post(
                "/v1/conversations",
                json={"kind": "group", "members": [a, b], "name": "three"},
                headers=c_phone,
            ).json()
            client.post(
                f"/v1/conversations/{g['id']}/messages",
                json={"body": "group hello", "client_msg_id": "c-1"},
                headers=c_phone,
            )

            # Non-members and bad input get clean errors.
            r = client.get(f"/v1/conversations/{dm_id}/messages", headers=c_phone)
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "conversation_not_found"
            r = client.post(
                f"/v1/conversations/{dm_id}/messages",
                json={"body": "x" * 20000, "client_msg_id": "big"},
                headers=a_phone,
            )
            assert (r.status_code, r.json()["error"]["code"]) == (413, "message_too_large")

            # The laptop comes back: one sync brings the DM (allowed); the group is still
            # "unknown" for b (c is not in b's book), so it comes only when asked for.
            r = client.post("/v1/sync", json={}, headers=b_laptop).json()
            assert (r["eligible"], r["synced"]) == (1, 1)
            (conv,) = r["conversations"]
            assert [m["body"] for m in conv["messages"]] == ["hello b", "hi a"]
            r = client.post(
                "/v1/sync",
                json={"consent": ["allowed", "unknown"], "cursors": {str(dm_id): conv["cursor"]}},
                headers=b_laptop,
            ).json()
            assert (r["eligible"], r["synced"]) == (2, 1)
            assert [m["body"] for m in r["conversations"][0]["messages"]] == ["group hello"]

            # The laptop's log has the same story, once each.
            log = _events(client, b_laptop)
            kinds = [e["type"] for e in log]
            # the group's message is not in the log: c is a stranger to b (consent unknown)
            assert kinds.count("message.created") == 2
            assert kinds.count("conversation.created") == 2
            assert "consent.updated" in kinds

            # The laptop asks the other devices to sync; the phone sees who asked.
            r = client.post("/v1/devices/sync-request", headers=b_laptop)
            assert r.status_code == 202
            last = _events(client, b_phone)[-1]
            assert (last["type"], last["data"]["device_id"]) == ("sync.requested", "b-laptop")
    finally:
        server.stop()
    assert "Traceback" not in server.log()
