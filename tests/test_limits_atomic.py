"""Every limit holds under truly concurrent requests (issue 13 item 3).

The requests run at once through the ASGI app against a real database, each on its own pooled
connection (the PostgreSQL pool holds 30), so a limit that reads and then writes would let
several through at the same moment. On SQLite writers queue, so the same tests pin the rule.
"""

from __future__ import annotations

import asyncio
import math

import sqlalchemy as sa

from contactsync.server.clock import ManualClock
from contactsync.server.services import app_settings, quota, ratelimit
from contactsync.server.services.otp_senders import MemorySender
from tests.conftest import Api

PHONE = "+14155550100"


async def test_discovery_quota_under_concurrent_uploads(api: Api) -> None:
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"discovery_quota": 50})
    _, me = await api.user_with_token(PHONE)

    async def upload(batch: int) -> int:
        contacts = [{"phone": f"+1415556{batch:02d}{i:02d}"} for i in range(50)]
        r = await api.client.post("/v1/addressbook", json={"contacts": contacts}, headers=me)
        assert r.status_code in (200, 429), r.text
        return r.status_code

    statuses = await asyncio.gather(*(upload(b) for b in range(20)))
    assert statuses.count(200) == 1 and statuses.count(429) == 19
    async with api.ctx.read() as tx:
        stored = await tx.conn.scalar(sa.text("SELECT count(*) FROM book_entries"))
    assert stored == 50  # 50 numbers checked, not 100 or 1,000


async def test_wrong_otp_guesses_under_concurrency(api: Api, otp_sender: MemorySender) -> None:
    r = await api.client.post("/v1/auth/otp/request", json={"phone": PHONE})
    assert r.status_code == 202
    wrong = "000000" if otp_sender.codes[PHONE] != "000000" else "111111"

    async def guess() -> str:
        r = await api.client.post(
            "/v1/auth/otp/verify", json={"phone": PHONE, "code": wrong, "device_id": "d1"}
        )
        return str(r.json()["error"]["code"])

    codes = await asyncio.gather(*(guess() for _ in range(30)))
    limit = api.ctx.settings.otp_max_attempts
    # Each invalid_code is a guess compared with the code: never more than the limit.
    assert codes.count("invalid_code") == limit
    assert codes.count("too_many_attempts") == 30 - limit
    async with api.ctx.read() as tx:
        attempts = await tx.conn.scalar(sa.text("SELECT attempts FROM otp_codes"))
    assert attempts == limit
    # and the right code is dead too
    r = await api.client.post(
        "/v1/auth/otp/verify",
        json={"phone": PHONE, "code": otp_sender.codes[PHONE], "device_id": "d1"},
    )
    assert r.json()["error"]["code"] == "too_many_attempts"


async def test_rate_limit_under_concurrency(api: Api) -> None:
    async def ask() -> int:
        r = await api.client.post("/v1/auth/otp/request", json={"phone": PHONE})
        return r.status_code

    statuses = await asyncio.gather(*(ask() for _ in range(20)))
    assert statuses.count(202) == api.ctx.settings.otp_per_phone_per_hour
    assert statuses.count(429) == 20 - api.ctx.settings.otp_per_phone_per_hour


async def test_discovery_quota_is_a_token_bucket(api: Api, clock: ManualClock) -> None:
    """A large first allowance that refills slowly; the 429 names the setting and the wait."""
    async with api.ctx.tx() as tx:
        await app_settings.update(
            tx, {"discovery_quota": 100, "discovery_quota_refill_per_day": 24}
        )
    _, me = await api.user_with_token(PHONE)
    first = [{"phone": f"+1415557{i:04d}"} for i in range(100)]
    r = await api.client.post("/v1/addressbook", json={"contacts": first}, headers=me)
    assert r.status_code == 200 and r.json()["created"] == 100
    # Re-checking one's own book is free.
    r = await api.client.post("/v1/addressbook", json={"contacts": first}, headers=me)
    assert r.status_code == 200
    more = [{"phone": f"+1415558{i:04d}"} for i in range(3)]
    r = await api.client.post("/v1/addressbook", json={"contacts": more}, headers=me)
    assert r.status_code == 429
    error = r.json()["error"]
    assert error["code"] == "discovery_quota_exceeded"
    assert "discovery_quota" in error["message"]
    # 24 a day: one an hour; three missing take three hours.
    assert error["details"] == {
        "setting": "discovery_quota",
        "limit": 100,
        "quota": 100,
        "remaining": 0,
        "used": 100,
        "refill_per_day": 24,
        "new_in_request": 3,
        "retry_after": 3 * 3600,
    }
    assert r.headers["retry-after"] == str(3 * 3600)
    clock.advance(3600)
    r = await api.client.post("/v1/addressbook", json={"contacts": more}, headers=me)
    assert r.status_code == 429 and r.json()["error"]["details"]["remaining"] == 1
    assert math.isclose(r.json()["error"]["details"]["retry_after"], 2 * 3600, abs_tol=1)
    clock.advance(2 * 3600)
    r = await api.client.post("/v1/addressbook", json={"contacts": more}, headers=me)
    assert r.status_code == 200 and r.json()["created"] == 3
    # Refilled, the bucket never holds more than the limit.
    clock.advance(400 * 24 * 3600)
    async with api.ctx.tx() as tx:
        await quota.charge(tx, 1, 100)


def test_default_allows_a_big_first_book() -> None:
    settings = app_settings.AppSettings()
    assert settings.discovery_quota == 50_000
    assert settings.discovery_quota_refill_per_day < settings.discovery_quota


async def test_concurrent_first_takes_of_a_new_bucket_all_succeed(api: Api) -> None:
    """Many requests taking from a bucket that does not exist yet, at once: each take that
    fits succeeds, none twice. (On PostgreSQL a take that missed a row committed a moment
    after its statement began once answered 429 with 49,999 of 50,000 tokens left.)"""
    takers = 30

    async def take(key: str) -> float | ratelimit.Refused:
        async with api.ctx.tx() as tx:
            return await ratelimit.take(tx, key, 1, capacity=takers, refill_per_s=0)

    for bucket in range(3):
        key = f"test:first-takes:{bucket}"
        results = await asyncio.gather(*(take(key) for _ in range(takers)))
        refused = [r for r in results if isinstance(r, ratelimit.Refused)]
        assert not refused, refused
        assert sorted(results) == [float(n) for n in range(takers)]
        more = await take(key)  # the bucket is empty now: refused, with a wait
        assert isinstance(more, ratelimit.Refused) and more.available < 1e-3
