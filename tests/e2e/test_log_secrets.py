"""No token, admin key or full phone number in a real server's log at INFO, in either format:
a scripted session (admin calls, OTP login, upload, relations by number, WebSocket with the
token in its query string, console sign-in, logout), then its whole log is searched."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess
from tests.test_console import csrf_of

ANN = "+14155550101"
BEN = "+14155550102"
BOOK = ["+14155550103", "+1 (415) 555-0104"]
NUMBERS = [ANN, BEN, "+14155550103", "+14155550104"]


def wait_for(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns something truthy (the log is written by another
    process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")  # pragma: no cover


def session(server: ServerProcess) -> list[str]:
    """Drive the server like an app and its users; returns every credential it handed out."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        ann = client.post("/v1/admin/users", json={"phone": ANN, "name": "Ann"}, headers=admin)
        assert ann.status_code == 201, ann.text
        ann_id = ann.json()["user_id"]
        minted = client.post(
            f"/v1/admin/users/{ann_id}/tokens", json={"device_id": "d1"}, headers=admin
        )
        ann_token = minted.json()["token"]
        ann_auth = {"Authorization": f"Bearer {ann_token}"}

        # Ben logs in with a code (the console sender writes it, number masked, to the log).
        assert client.post("/v1/auth/otp/request", json={"phone": BEN}).status_code == 202
        code = wait_for(lambda: re.search(r"OTP for \S+: (\d{6})", server.log()))[1]
        verified = client.post(
            "/v1/auth/otp/verify", json={"phone": BEN, "code": code, "device_id": "d2"}
        )
        assert verified.status_code == 200, verified.text
        ben_token = verified.json()["token"]
        ben_auth = {"Authorization": f"Bearer {ben_token}"}
        assert client.post(
            "/v1/auth/otp/verify", json={"phone": BEN, "code": "000000", "device_id": "d2"}
        ).status_code in (401, 429)

        contacts = [{"phone": BEN, "name": "Ben"}] + [{"phone": p, "name": "C"} for p in BOOK]
        r = client.post("/v1/addressbook", json={"contacts": contacts}, headers=ann_auth)
        assert r.status_code == 200, r.text
        assert client.get(f"/v1/relations/{BEN}", headers=ann_auth).status_code == 200
        client.put(f"/v1/relations/{BOOK[0]}", json={"contact": True}, headers=ann_auth)
        client.get(f"/v1/admin/users/{ann_id}", params={"key": ADMIN_KEY}, headers=admin)
        client.get("/v1/me", headers={"Authorization": "Bearer cs_" + "x" * 43})

        # The token in the WebSocket's query string: uvicorn logs the handshake's raw path.
        ws_url = server.url.replace("http://", "ws://") + "/v1/events/ws"
        with connect(f"{ws_url}?token={ann_token}&after=0", additional_headers=ann_auth) as ws:
            assert json.loads(ws.recv(timeout=30))["op"] == "ready"
        with connect(f"{ws_url}?token={ben_token}") as ws:
            ws.send(json.dumps({"op": "auth", "token": "cs_" + "y" * 43}))
            assert json.loads(ws.recv(timeout=30))["error"]["code"] == "unauthorized"

        form = client.get("/console/login")
        signed_in = client.post(
            "/console/login", data={"key": ADMIN_KEY, "csrf": csrf_of(form.text)}
        )
        assert signed_in.status_code == 303
        assert client.delete("/v1/me/session", headers=ben_auth).status_code == 204
    return [ann_token, ben_token, ADMIN_KEY]


@pytest.mark.slow
@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_token_key_or_number_in_a_real_servers_log(tmp_path: Path, log_format: str) -> None:
    env = {
        "CONTACTSYNC_OTP_SENDER": "console",
        "CONTACTSYNC_LOG_FORMAT": log_format,
        "CONTACTSYNC_LOG_LEVEL": "info",
    }
    server = ServerProcess(tmp_path / "data", env=env).start()
    try:
        secrets = session(server)
        # Wait for the last line the session caused (the logout's access line).
        wait_for(lambda: "DELETE /v1/me/session" in server.log())
    finally:
        server.stop()
    log = server.log()
    assert "WebSocket /v1/events/ws" in log, "uvicorn's handshake line is part of the log"
    assert "console" in log and "OTP for" in log
    for secret in secrets:
        assert secret not in log
        assert secret[-20:] not in log  # not even a tail of it
    for number in NUMBERS:
        assert number not in log
        assert number[2:] not in log  # the national digits: 415555010x
