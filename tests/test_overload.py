"""The per-process concurrency limit: a request that gets no slot within the set wait is
answered at once with 503 `overloaded` and Retry-After, changed nothing, and the SDK comes back
when it is told to. Health checks never wait for a slot."""

from __future__ import annotations

import time

import httpx

from contactsync.client._http import ApiClient, RetryPolicy
from contactsync.server.config import Settings
from contactsync.server.edge import Limiter
from tests.faults.conftest import assert_overloaded, running


def _limiter(api: object) -> Limiter:
    limiter = api.ctx.services.limiter
    assert isinstance(limiter, Limiter)
    return limiter


async def test_a_request_without_a_slot_is_refused_at_once_and_changes_nothing(
    settings: Settings,
) -> None:
    settings.max_concurrent_requests = 1
    settings.overload_wait_seconds = 0.2
    async with running(settings) as api:
        _, headers = await api.user_with_token("+14155550100")
        limiter = _limiter(api)
        assert await limiter.acquire()  # a request in flight holds the only slot
        try:
            started = time.monotonic()
            r = await api.client.post(
                "/v1/addressbook",
                json={"contacts": [{"phone": "+14155550101", "name": "Ann"}]},
                headers=headers,
            )
            assert time.monotonic() - started < 1.0  # the set wait, not the pool's or 30 s
            assert_overloaded(r)
            assert r.headers["X-Request-ID"]
            # An orchestrator still sees the process alive and ready.
            assert (await api.client.get("/healthz")).status_code == 200
            assert (await api.client.get("/readyz")).status_code == 200
        finally:
            limiter.release()
        assert limiter.refused == 1 and limiter.busy == 0
        book = await api.client.get("/v1/addressbook", headers=headers)
        assert book.json()["contacts"] == []  # the refused upload changed nothing
        r = await api.client.post(
            "/v1/addressbook",
            json={"contacts": [{"phone": "+14155550101", "name": "Ann"}]},
            headers=headers,
        )
        assert r.status_code == 200 and r.json()["created"] == 1


async def test_the_sdk_comes_back_after_retry_after(settings: Settings) -> None:
    settings.max_concurrent_requests = 1
    settings.overload_wait_seconds = 0.1
    async with running(settings) as api:
        _, headers = await api.user_with_token("+14155550100")
        limiter = _limiter(api)
        assert await limiter.acquire()
        waits: list[float] = []

        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            if limiter.busy:
                limiter.release()  # the busy request finishes while the client waits

        client = ApiClient(
            "http://testserver",
            headers["Authorization"].removeprefix("Bearer "),
            transport=httpx.ASGITransport(app=api.app),
            retry=RetryPolicy(base=0.0),  # no jitter of its own: only Retry-After can wait
            sleep=sleep,
        )
        try:
            me = await client.request("GET", "/v1/me")
        finally:
            await client.aclose()
        assert me["phone"] == "+14155550100"
        assert waits == [1.0]  # as the server asked
