"""Phone login: codes, expiry, brute force, replay, rate limits, the senders."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from contactsync.server.clock import ManualClock
from contactsync.server.services.otp_senders import MemorySender, WebhookSender
from contactsync.server.services.secrets import sign
from tests.conftest import Api

PHONE = "+14155550100"


async def request_code(api: Api, phone: str = PHONE, **extra: Any) -> int:
    r = await api.client.post("/v1/auth/otp/request", json={"phone": phone, **extra})
    return r.status_code


async def verify(api: Api, code: str, phone: str = PHONE, device_id: str = "d1") -> Any:
    return await api.client.post(
        "/v1/auth/otp/verify", json={"phone": phone, "code": code, "device_id": device_id}
    )


async def test_login_creates_the_user_then_logs_in_again(
    api: Api, otp_sender: MemorySender
) -> None:
    assert await request_code(api, "(415) 555-0100", region="US") == 202
    code = otp_sender.codes[PHONE]
    r = await verify(api, code)
    assert r.status_code == 200 and r.json()["new_user"] is True
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    me = (await api.client.get("/v1/me", headers=headers)).json()
    assert me["phone"] == PHONE and me["device_id"] == "d1"

    assert await request_code(api) == 202
    r2 = await verify(api, otp_sender.codes[PHONE], device_id="d2")
    assert r2.status_code == 200 and r2.json()["new_user"] is False
    assert r2.json()["user_id"] == r.json()["user_id"]


async def test_code_is_stored_hashed(api: Api, otp_sender: MemorySender) -> None:
    await request_code(api)
    async with api.ctx.read() as tx:
        stored = await tx.conn.scalar(sa.text("SELECT code_hash FROM otp_codes"))
    assert stored and otp_sender.codes[PHONE] not in stored


async def test_replayed_code_fails(api: Api, otp_sender: MemorySender) -> None:
    await request_code(api)
    code = otp_sender.codes[PHONE]
    assert (await verify(api, code)).status_code == 200
    replay = await verify(api, code)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "invalid_code"


async def test_sixth_try_fails_even_with_the_right_code(api: Api, otp_sender: MemorySender) -> None:
    await request_code(api)
    code = otp_sender.codes[PHONE]
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        r = await verify(api, wrong)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_code"
    r = await verify(api, code)
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_attempts"
    async with api.ctx.read() as tx:
        assert await tx.conn.scalar(sa.text("SELECT count(*) FROM users")) == 0


async def test_code_expires_after_five_minutes(
    api: Api, otp_sender: MemorySender, clock: ManualClock
) -> None:
    await request_code(api)
    code = otp_sender.codes[PHONE]
    clock.advance(301)
    r = await verify(api, code)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_code"


async def test_unknown_phone_and_garbage(api: Api) -> None:
    assert (await verify(api, "123456")).status_code == 401
    r = await api.client.post("/v1/auth/otp/request", json={"phone": "call me"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_phone"
    r = await api.client.post("/v1/auth/otp/verify", json={"phone": PHONE, "code": "1"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = await verify(api, "123456", device_id="bad id")
    assert r.status_code == 422
    async with api.ctx.read() as tx:
        assert await tx.conn.scalar(sa.text("SELECT count(*) FROM otp_codes")) == 0


async def test_rate_limited_per_phone(api: Api, clock: ManualClock) -> None:
    for _ in range(5):
        assert await request_code(api) == 202
    r = await api.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 3600
    assert await request_code(api, "+14155550101") == 202  # another number is not affected
    clock.advance(3601)
    assert await request_code(api) == 202


async def test_rate_limited_per_client_address(api: Api) -> None:
    limit = api.ctx.settings.otp_per_address_per_hour
    for i in range(limit):
        assert await request_code(api, f"+1415555{1000 + i:04d}") == 202
    r = await api.client.post("/v1/auth/otp/request", json={"phone": "+14155559999"})
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((body, self.headers["X-Contactsync-Signature"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[bytes, str]]]]:
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/sms", _Receiver.received
    server.shutdown()
    server.server_close()


async def test_webhook_sender_posts_a_signed_body(
    receiver: tuple[str, list[tuple[bytes, str]]],
) -> None:
    url, received = receiver
    secret = "s3cret-s3cret-s3cret"
    await WebhookSender(url, secret).send(PHONE, "123456")
    await asyncio.sleep(0)
    body, signature = received[0]
    assert json.loads(body)["phone"] == PHONE and json.loads(body)["code"] == "123456"
    assert signature == sign(secret, body)
