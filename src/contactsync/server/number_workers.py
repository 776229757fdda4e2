"""Reading a big request's phone numbers on the machine's other cores.

libphonenumber is pure Python, and a request's numbers are read in the request's process:
5,000 new numbers (a first upload's request) cost about 40 ms of CPU there, during which the
process's event loop serves no other request. A request with at least `POOL_MIN` numbers to
read has them read by a few worker processes instead (`contactsync.phone_worker`), split
evenly among them: the answer is the one the request's own process would give, meanwhile the
loop serves other requests, and on an idle machine the request ends sooner. When a worker
fails or cannot be started the numbers are read in process, and new workers are started for
the next request.

`number_workers` (settings) sets how many; the default is the machine's cores, at most 4
(none on a single core), shared among the processes of `serve --workers N`. They start with
the server, in the background.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

from contactsync import phone as phones
from contactsync.phone_worker import Worker, WorkerFailed, can_start

log = logging.getLogger("contactsync.server")

POOL_MIN = 2_000  # numbers to read in one request before the workers pay for sending them
_PART_MIN = 1_000  # numbers in a worker's share, at least
# A worker's answer comes within this or the worker is taken for hung (a share of 10,000
# numbers takes about 0.1 s): the request reads them itself.
JOB_TIMEOUT_S = 10.0


def default_size(processes: int = 1, cores: int | None = None) -> int:
    """A server process's share of the machine's cores (`processes` of them share it: serve
    --workers), at least 1 and at most 4; none on a single core (the workers would take turns
    with the server on it, and the numbers would travel twice for nothing)."""
    cores = cores or os.cpu_count() or 1
    if cores < 2 or not can_start():
        return 0
    return max(1, min(cores // max(processes, 1), 4))


class NumberWorkers:
    """`size` worker processes reading numbers (see the module's text)."""

    def __init__(self, size: int, timeout: float = JOB_TIMEOUT_S) -> None:
        self.size = size
        self.timeout = timeout
        self._starting: asyncio.Task[list[Worker]] | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self.jobs = 0  # requests whose numbers the workers read

    def start(self) -> None:
        """Start the workers now, in the background (the first big request waits for them)."""
        if self._starting is None:
            self._starting = asyncio.create_task(self._start(), name="contactsync-numbers")

    async def _start(self) -> list[Worker]:
        workers: list[Worker] = []
        try:
            for _ in range(self.size):
                workers.append(await Worker.start())
        except WorkerFailed:
            await asyncio.gather(*(worker.stop() for worker in workers))
            raise
        log.debug("number workers started (pids %s)", [worker.pid for worker in workers])
        return workers

    def pids(self) -> list[int]:
        """The workers' process ids, once they have started."""
        starting = self._starting
        if starting is None or not starting.done() or starting.cancelled():
            return []
        if starting.exception() is not None:
            return []
        return [worker.pid for worker in starting.result()]

    async def outcomes(self, raws: Sequence[str], region: str | None) -> list[str] | None:
        """`phones.outcomes` of `raws` read by the workers, in order; None when they could
        not (the caller reads them in process)."""
        self.start()
        assert self._starting is not None
        starting = self._starting
        try:
            workers = await asyncio.shield(starting)
            parts = max(1, min(len(workers), len(raws) // _PART_MIN))
            step = -(-len(raws) // parts)
            found = await asyncio.gather(
                *(
                    worker.outcomes(list(raws[i : i + step]), region, self.timeout)
                    for worker, i in zip(workers, range(0, len(raws), step), strict=False)
                )
            )
        except WorkerFailed as exc:
            log.warning("number workers unavailable (%s); reading numbers in process", exc)
            if self._starting is starting:
                self._starting = None  # new ones for the next request
                stopping = asyncio.create_task(_stop_all(starting))
                self._stopping.add(stopping)
                stopping.add_done_callback(self._stopping.discard)
            return None
        self.jobs += 1
        return [outcome for part in found for outcome in part]

    async def close(self) -> None:
        """Stop the workers (each ends at the end of its input)."""
        starting, self._starting = self._starting, None
        if starting is not None:
            await _stop_all(starting)
        await asyncio.gather(*self._stopping)


async def _stop_all(starting: asyncio.Task[list[Worker]]) -> None:
    try:
        workers = await starting
    except (WorkerFailed, asyncio.CancelledError):
        return
    await asyncio.gather(*(worker.stop() for worker in workers))


async def outcomes(
    workers: NumberWorkers | None, raws: Sequence[str], region: str | None
) -> list[str]:
    """`phones.outcomes` of a request's numbers: by the workers when there are enough of them
    to pay (and workers), else in process."""
    if workers is not None and len(raws) >= POOL_MIN:
        found = await workers.outcomes(raws, region)
        if found is not None:
            return found
    return phones.outcomes(raws, region)


async def read_all(
    workers: NumberWorkers | None, raws: Sequence[Any], region: str | None
) -> tuple[list[tuple[int, phones.Normalized]], list[dict[str, Any]]]:
    """`phones.read_all` of a request's numbers: by the workers when there are enough of them
    to pay (and workers), else in process."""
    if all(isinstance(r, str) for r in raws):
        return phones.read_all(raws, region, await outcomes(workers, raws, region))
    return phones.read_all(raws, region)
