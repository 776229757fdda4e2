"""Normalising a scan's numbers, on a second core when the scan is big and a core is free.

Parsing phone numbers (libphonenumber, pure Python) is the SDK's CPU-bound part of a first
sync. A `Numbers` reads a chunk's numbers in a worker process (`contactsync.phone_worker`)
while the event loop stores the last chunk and uploads it; small chunks are read in process, a
few hundred at a time between turns of the loop. When the worker cannot be started or fails,
the numbers are read in process: the results are the same either way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence

from contactsync import phone as phones
from contactsync.phone_worker import Worker, WorkerFailed, can_start

Result = tuple[str | None, str | None, bool]  # (e164, reason, rewritten)

log = logging.getLogger("contactsync.client")

WORKER_MIN = 1_500  # numbers in one job before a worker process pays for its start
_SLICE = 250  # numbers read in process between two turns of the event loop


def _worker_pays() -> bool:
    """Whether a worker process would run beside this one rather than take its turns: a
    core is idle (the load average leaves one free). On a busy machine the worker's own cost
    (its start, the numbers sent both ways) is added to the same cores and the sync is slower.
    CONTACTSYNC_NUMBER_WORKER=1 or 0 decides instead."""
    forced = os.environ.get("CONTACTSYNC_NUMBER_WORKER")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return True
    return load + 1 <= (os.cpu_count() or 1) - 0.5


def read(raws: Sequence[str], region: str | None) -> list[Result]:
    """The normalisation of each raw number (what `Numbers` returns, done here)."""
    out: list[Result] = []
    for raw in raws:
        outcome = phones.try_normalize(raw, region)
        out.append((outcome.e164, outcome.reason, outcome.rewritten))
    return out


class Numbers:
    """Reads numbers for one sync run; `close()` ends the worker, if one was started."""

    def __init__(self, *, worker: bool | None = None) -> None:
        if worker is None:
            worker = _worker_pays()
        self._use_worker = worker and can_start() and (os.cpu_count() or 1) > 1
        self._worker: asyncio.Task[Worker] | None = None

    def prepare(self) -> None:
        """Start the worker now (big jobs are coming), so that it is ready when they come."""
        if self._use_worker and self._worker is None:
            self._worker = asyncio.create_task(_start(), name="contactsync-numbers")

    def parallel(self, count: int) -> bool:
        """Whether a job of `count` numbers goes to the worker process."""
        return self._use_worker and count >= WORKER_MIN

    async def read(self, raws: Sequence[str], region: str | None) -> list[Result]:
        """The normalisation of each of `raws`, in order."""
        if self.parallel(len(raws)):
            try:
                self.prepare()
                assert self._worker is not None
                found = await (await self._worker).outcomes(list(raws), region)
            except WorkerFailed as exc:
                log.info("number worker unavailable (%s); reading numbers in process", exc)
                self._use_worker = False
                await self.close()
            else:
                return [(r.e164, r.reason, r.rewritten) for r in map(phones.outcome, found)]
        out: list[Result] = []
        for i in range(0, len(raws), _SLICE):
            out += read(raws[i : i + _SLICE], region)
            await asyncio.sleep(0)
        return out

    async def close(self) -> None:
        """End the worker (it ends at the end of its input) and wait for it."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            started = await worker
        except (WorkerFailed, asyncio.CancelledError):
            return
        await started.stop()


async def _start() -> Worker:
    worker = await Worker.start()
    log.debug("number worker started (pid %s)", worker.pid)
    return worker
