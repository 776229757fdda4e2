"""The SDK across faults: retries that outlast a server restart, a force upload interrupted and
rerun (finished, not sent twice), metrics after a resume (nothing counted twice, `failed` in
contacts and never more than `total`)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from contactsync.client import Contact, MemorySource, NetworkError, RetryPolicy
from contactsync.client._http import ApiClient
from tests.client.conftest import Factory, bearer, book
from tests.conftest import Api

ME = "+14155550100"


def pairs(n: int) -> list[Contact]:
    """n contacts with two numbers each."""
    return [
        Contact(f"id{i}", f"Person {i}", (f"(415) 555-{1000 + i:04d}", f"(628) 555-{1000 + i:04d}"))
        for i in range(n)
    ]


class Network(httpx.AsyncBaseTransport):
    """The way to the server: it counts the contacts uploaded, and can go down after a number
    of uploads (`down_after`), optionally losing the answer of the last one it let through."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        down_after: int | None = None,
        lose_last: bool = False,
    ) -> None:
        self.inner = inner
        self.down_after = down_after
        self.lose_last = lose_last
        self.uploads = 0
        self.sent: list[dict[str, object]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        upload = request.method == "POST" and request.url.path == "/v1/addressbook"
        if self.down_after is not None and self.uploads >= self.down_after:
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if upload:
            self.uploads += 1
            self.sent.append(json.loads(request.content))
            if self.lose_last and self.uploads == self.down_after:
                await response.aread()
                raise httpx.ReadError("connection reset", request=request)
        return response

    def contacts_sent(self) -> int:
        return sum(len(body["contacts"]) for body in self.sent)  # type: ignore[arg-type]


class FakeTime:
    """A clock and a sleep that advances it: backoff without waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class RestartingServer(httpx.AsyncBaseTransport):
    """Refuses connections until `up_at` (fake seconds), then is the real app."""

    def __init__(self, inner: httpx.AsyncBaseTransport, time: FakeTime, up_at: float) -> None:
        self.inner, self.time, self.up_at = inner, time, up_at
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.time.now < self.up_at:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def test_requests_are_retried_across_a_20s_restart(api: Api) -> None:
    _, me = await api.user_with_token(ME)
    time = FakeTime()
    server = RestartingServer(httpx.ASGITransport(app=api.app), time, up_at=20.0)
    client = ApiClient(
        "http://testserver", bearer(me), transport=server, sleep=time.sleep, clock=time.clock
    )
    try:
        me_now = await client.request("GET", "/v1/me")
    finally:
        await client.aclose()
    assert me_now["phone"] == ME
    assert server.refused > 3 and 20.0 <= time.now < 20.0 + RetryPolicy.cap


async def test_after_the_retry_window_a_clear_error(api: Api) -> None:
    time = FakeTime()
    server = RestartingServer(httpx.ASGITransport(app=api.app), time, up_at=float("inf"))
    client = ApiClient(
        "http://testserver",
        "token",
        transport=server,
        sleep=time.sleep,
        clock=time.clock,
        retry=RetryPolicy(window=30.0),
    )
    try:
        with pytest.raises(NetworkError, match=r"did not answer for (2[5-9]|30) s"):
            await client.request("GET", "/v1/me")
    finally:
        await client.aclose()
    assert 30.0 - RetryPolicy.cap <= time.now <= 30.0


@pytest.mark.parametrize("rerun", ["force_sync", "sync"])
async def test_an_interrupted_force_upload_is_finished_not_sent_again(
    api: Api, managers: Factory, rerun: str
) -> None:
    _, me = await api.user_with_token(ME)
    source = MemorySource(pairs(10))  # 20 numbers: a force upload of 5 parts of 4
    await managers(source, me, batch_size=4).sync()
    source.set(pairs(12)[2:])  # two gone, two new
    cut = Network(httpx.ASGITransport(app=api.app), down_after=2)
    first = await managers(source, me, transport=cut, batch_size=4).force_sync()
    assert first.error is not None and cut.uploads == 2
    assert len(await book(api, me)) == 20  # staged parts change nothing yet

    again = Network(httpx.ASGITransport(app=api.app))
    manager = managers(source, me, transport=again, batch_size=4)
    metrics = await getattr(manager, rerun)()
    assert metrics.error is None and metrics.failed == 0
    expected = {f"+1{area}555{1000 + i:04d}" for i in range(2, 12) for area in (415, 628)}
    assert set(await book(api, me)) == expected
    # the three parts left, and nothing more: not the whole book a second time
    assert again.contacts_sent() == 20 - 2 * 4
    assert all(body["force"] for body in again.sent)


async def test_metrics_after_a_resume_count_each_answer_once(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    source = MemorySource(pairs(6))  # 12 numbers, 3 batches of 4
    # the second upload is applied but its answer lost, then the server is gone
    lost = Network(httpx.ASGITransport(app=api.app), down_after=2, lose_last=True)
    down = managers(source, me, transport=lost, batch_size=4, retry=RetryPolicy(attempts=2))
    first = await down.sync()
    assert first.error is not None
    # 8 numbers unacknowledged, on all 6 contacts: `failed` counts contacts, like `total`
    assert first.total == 6 and first.failed == 6
    assert first.created == 4

    resumed = await managers(source, me, batch_size=4).sync()
    assert resumed.error is None and resumed.failed == 0
    # the lost answer is counted once, by the run that got it
    assert first.created + resumed.created == 12 == len(await book(api, me))


class ChangeAfterFirstPage(httpx.AsyncBaseTransport):
    """After the first page of the book is read, another device changes the book."""

    def __init__(self, inner: httpx.AsyncBaseTransport, change: Any) -> None:
        self.inner, self.change = inner, change
        self.pages = 0
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "GET" and request.url.path == "/v1/addressbook":
            self.pages += 1
            self.statuses.append(response.status_code)
            if self.pages == 1:
                await self.change()
        return response


async def test_a_new_store_reads_the_book_again_when_it_changes_meanwhile(
    api: Api, managers: Factory
) -> None:
    _, me = await api.user_with_token(ME)
    held = [f"+1628{2000000 + i:07d}" for i in range(5001)]  # two pages of 5,000
    for i in range(0, len(held), 5000):
        body = {"contacts": [{"phone": p} for p in held[i : i + 5000]]}
        assert (await api.client.post("/v1/addressbook", json=body, headers=me)).status_code == 200

    async def other_device() -> None:
        body = {"contacts": [{"phone": held[-1], "destroy": True}]}
        assert (await api.client.post("/v1/addressbook", json=body, headers=me)).status_code == 200

    watched = ChangeAfterFirstPage(httpx.ASGITransport(app=api.app), other_device)
    source = MemorySource(pairs(3))
    metrics = await managers(source, me, transport=watched).sync()
    assert metrics.error is None
    assert 409 in watched.statuses and watched.statuses[-1] == 200
    # the book the store learnt was the current one: everything stale was removed
    expected = {f"+1{area}555{1000 + i:04d}" for i in range(3) for area in (415, 628)}
    assert set(await book(api, me)) == expected
