"""A big request's numbers read by worker processes (server/number_workers.py): the same
answer as read in process, and a worker that dies costs no request. Both databases."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

import pytest
from pydantic import ValidationError

from contactsync import phone as phones
from contactsync.server.config import Settings
from contactsync.server.number_workers import POOL_MIN, NumberWorkers, default_size
from tests.conftest import Api, OpenApp

# Real helper processes, started and killed: in the full suite, not the fast loop.
pytestmark = pytest.mark.slow


def book(count: int, first: int = 0) -> list[dict[str, Any]]:
    """Numbers written the ways people write them, some junk and some old forms among them."""
    forms = (
        "+1 415 555 {:04d}",
        "(415) 555-{:04d}",
        "00 1 415 555 {:04d}",
        "+1415555{:04d}",
        "415.555.{:04d}",
    )
    out = []
    for i in range(first, first + count):
        if i % 97 == 0:
            written = "call me" if i % 2 else "12"
        elif i % 89 == 0:
            written = f"+52 1 55 {1000 + i % 9000:04d} {i % 10000:04d}"  # Mexico before 2019
        else:
            written = forms[i % len(forms)].format(i % 10_000)
        out.append({"phone": written, "name": f"Friend {i}"})
    return out


def workers_of(api: Api) -> NumberWorkers:
    workers = api.ctx.services.number_workers
    assert workers is not None
    return workers


async def upload(api: Api, headers: dict[str, str], contacts: list[dict[str, Any]]) -> Any:
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": contacts, "region": "US"}, headers=headers
    )
    assert r.status_code == 200, r.text
    return r.json()


def expected(contacts: list[dict[str, Any]]) -> tuple[set[str], list[dict[str, Any]]]:
    """The numbers stored and the invalid report, as this process reads them."""
    valid, invalid = phones.read_all([c["phone"] for c in contacts], "US")
    return {result.e164 for _, result in valid if result.e164}, invalid


async def stored(api: Api, headers: dict[str, str]) -> set[str]:
    numbers: set[str] = set()
    cursor = None
    while True:
        params = {"limit": 5000, **({"cursor": cursor} if cursor else {})}
        r = await api.client.get("/v1/addressbook", params=params, headers=headers)
        assert r.status_code == 200, r.text
        numbers.update(c["phone"] for c in r.json()["contacts"])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return numbers


async def test_a_big_upload_is_read_by_the_workers_as_in_process(open_app: OpenApp) -> None:
    api = await open_app(number_workers=2)
    _, me = await api.user_with_token("+14155550100")
    friend = await api.create_user("+14155551234")
    contacts = book(POOL_MIN + 500)
    answer = await upload(api, me, contacts)
    assert workers_of(api).jobs == 1  # the workers read them
    numbers, invalid = expected(contacts)
    assert answer["invalid"] == invalid and invalid  # by index, with the reasons
    assert answer["created"] == len(numbers)
    assert {r["index"] for r in answer["rewritten"]} == {
        i for i, c in enumerate(contacts) if c["phone"].startswith("+52 1")
    }
    assert friend["user_id"] in {u["user_id"] for u in answer["registered"]}
    assert await stored(api, me) == numbers
    # a small upload is read in process
    await upload(api, me, contacts[:10])
    assert workers_of(api).jobs == 1


async def test_a_dead_worker_costs_no_request(open_app: OpenApp) -> None:
    api = await open_app(number_workers=2)
    _, me = await api.user_with_token("+14155550100")
    first = book(POOL_MIN, first=0)
    await upload(api, me, first)
    assert workers_of(api).jobs == 1
    pids = workers_of(api).pids()
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    second = book(POOL_MIN, first=POOL_MIN)
    answer = await upload(api, me, second)  # read in process: the pool was broken
    numbers, invalid = expected(second)
    assert answer["invalid"] == invalid
    third = book(POOL_MIN, first=2 * POOL_MIN)
    await upload(api, me, third)  # a new pool
    assert workers_of(api).jobs == 2
    assert await stored(api, me) == expected(first)[0] | numbers | expected(third)[0]


async def test_no_workers_when_told_none(open_app: OpenApp) -> None:
    api = await open_app(number_workers=0)
    assert api.ctx.services.number_workers is None
    _, me = await api.user_with_token("+14155550100")
    answer = await upload(api, me, book(POOL_MIN))
    assert answer["created"] == len(expected(book(POOL_MIN))[0])


async def test_a_hung_worker_costs_a_request_its_timeout_only(open_app: OpenApp) -> None:
    api = await open_app(number_workers=2)
    workers = workers_of(api)
    _, me = await api.user_with_token("+14155550100")
    await upload(api, me, book(POOL_MIN))  # the workers up (no time limit: a loaded machine)
    assert workers.jobs == 1
    workers.timeout = 0.5
    hung = workers.pids()[0]
    os.kill(hung, signal.SIGSTOP)
    try:
        second = book(POOL_MIN, first=POOL_MIN)
        async with asyncio.timeout(20):  # read in process once the worker timed out
            answer = await upload(api, me, second)
        assert answer["invalid"] == expected(second)[1]
        workers.timeout = 60  # new workers start on a loaded machine: no time limit here
        await upload(api, me, book(POOL_MIN, first=2 * POOL_MIN))
        assert workers.jobs == 2 and hung not in workers.pids()  # new workers
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)


def test_the_default_is_a_share_of_the_cores() -> None:
    assert default_size(cores=1) == 0  # the workers would take turns with the server
    assert default_size(cores=2) == 2
    assert default_size(cores=16) == 4
    assert default_size(processes=2, cores=2) == 1  # serve --workers 2 on 2 cores
    assert default_size(processes=4, cores=8) == 2
    assert default_size(processes=8, cores=4) == 1


@pytest.mark.parametrize("given", ["-1", "65", "two", "1.5"])
def test_a_bad_number_of_workers_is_refused_by_name(
    given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTACTSYNC_NUMBER_WORKERS", given)
    with pytest.raises(ValidationError, match="number_workers"):
        Settings()
