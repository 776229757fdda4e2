"""A big scan's numbers are read on a second core (client/_numbers.py): the same results as
reading them in process, in order, and the same sync; a worker that cannot start leaves the
numbers read in process."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from contactsync.client import MemorySource, VCardSource
from contactsync.client._models import Contact
from contactsync.client._numbers import WORKER_MIN, Numbers, read
from tests.client.conftest import Factory, book
from tests.conftest import Api

# valid in the US, E.164, with a country code, an old Mexican form (rewritten), refused ones
KINDS = [
    "(415) 555-{:04d}",
    "+1 212 555 {:04d}",
    "+44 20 7946 {:04d}",
    "+52 1 55 1234 {:04d}",
    "555-{:04d}",
    "not a number {}",
]


def raws(count: int) -> list[str]:
    return [KINDS[i % len(KINDS)].format(i % 10_000) for i in range(count)]


async def test_the_worker_reads_what_the_process_reads() -> None:
    numbers = Numbers(worker=True)
    try:
        assert numbers.parallel(WORKER_MIN)
        job = raws(WORKER_MIN + 500)
        on_worker = await numbers.read(job, "US")
        again = await numbers.read(list(reversed(job)), "GB")  # the same worker, a new job
    finally:
        await numbers.close()
    assert on_worker == read(job, "US")
    assert again == read(list(reversed(job)), "GB")
    assert {reason for _, reason, _ in on_worker} >= {None, "not_a_number"}
    assert any(rewritten for _, _, rewritten in on_worker)


def test_the_worker_is_used_when_a_core_is_free_or_when_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert Numbers().parallel(WORKER_MIN)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 3.0, 3.0))  # both cores taken
    assert not Numbers().parallel(WORKER_MIN)
    monkeypatch.setenv("CONTACTSYNC_NUMBER_WORKER", "1")
    assert Numbers().parallel(WORKER_MIN)
    monkeypatch.setenv("CONTACTSYNC_NUMBER_WORKER", "0")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert not Numbers().parallel(WORKER_MIN)
    assert not Numbers().parallel(WORKER_MIN - 1)


async def test_a_worker_that_cannot_start_leaves_the_numbers_read_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    numbers = Numbers(worker=True)
    job = raws(WORKER_MIN)
    try:
        assert await numbers.read(job, "US") == read(job, "US")
        assert not numbers.parallel(WORKER_MIN)  # not tried again in this run
    finally:
        await numbers.close()


def write_vcf(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            phone = KINDS[i % len(KINDS)].format(i)
            out.write(
                f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c{i}\r\nFN:Person {i}\r\n"
                f"TEL;TYPE=CELL:{phone}\r\nEND:VCARD\r\n"
            )


async def test_a_big_first_sync_on_the_worker_gives_the_book_of_one_read_in_process(
    api: Api,
    managers: Factory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # whether a core is free decides by default; here the worker runs whatever the load
    monkeypatch.setenv("CONTACTSYNC_NUMBER_WORKER", "1")
    caplog.set_level(logging.DEBUG, "contactsync.client")
    count = 3 * WORKER_MIN
    path = tmp_path / "big.vcf"
    write_vcf(path, count)
    _, parallel_headers = await api.user_with_token("+14155550100")
    _, serial_headers = await api.user_with_token("+14155550101")
    parallel = await managers(VCardSource(path), parallel_headers).sync()
    assert "number worker started" in caplog.text
    caplog.clear()
    # the same book, as contacts in memory: chunks read in process (MemorySource's parse is
    # free, but the numbers are the same strings)
    contacts = [
        Contact(f"c{i}", f"Person {i}", (KINDS[i % len(KINDS)].format(i),)) for i in range(count)
    ]
    serial = await managers(
        MemorySource(contacts), serial_headers, batch_size=WORKER_MIN - 1
    ).sync()
    assert "number worker started" not in caplog.text
    assert parallel.error is None and serial.error is None
    assert await book(api, parallel_headers) == await book(api, serial_headers)
    assert len(await book(api, parallel_headers)) == count * 4 // 6
    assert sorted(map(repr, parallel.invalid)) == sorted(map(repr, serial.invalid))
    assert sorted(r["phone"] for r in parallel.rewritten) == sorted(
        r["phone"] for r in serial.rewritten
    )
    assert len(parallel.rewritten) == count // 6
