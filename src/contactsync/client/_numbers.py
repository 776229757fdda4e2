"""Normalising a scan's numbers, on a second core when the scan is big and a core is free.

Parsing phone numbers (libphonenumber, pure Python) is the SDK's CPU-bound part of a first
sync. A `Numbers` reads a chunk's numbers in a worker process while the event loop stores the
last chunk and uploads it; small chunks are read in process, a few hundred at a time between
turns of the loop (a thread would not help: it would hold the GIL the loop needs).

The worker runs this file as a script (`python -I this-file`): it imports `contactsync.phone`
and nothing of the SDK, so it starts in tens of milliseconds. It reads one JSON line per job,
`[region, [raw, ...]]`, and answers one line, `[[e164, reason, rewritten], ...]` in the same
order. When the worker cannot be started or fails, the numbers are read in process: the
results are the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

Result = tuple[str | None, str | None, bool]  # (e164, reason, rewritten)

log = logging.getLogger("contactsync.client")

WORKER_MIN = 1_500  # numbers in one job before a worker process pays for its start
_SLICE = 250  # numbers read in process between two turns of the event loop
_LIMIT = 1 << 26  # the longest answer line the reader takes (a job of ~1,000,000 numbers)


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
    from contactsync import phone as phones

    out: list[Result] = []
    for raw in raws:
        outcome = phones.try_normalize(raw, region)
        out.append((outcome.e164, outcome.reason, outcome.rewritten))
    return out


class Numbers:
    """Reads numbers for one sync run; `close()` ends the worker, if one was started."""

    def __init__(self, *, worker: bool | None = None) -> None:
        # a frozen app's executable is the app, not a Python to run the worker with
        runnable = bool(sys.executable) and not getattr(sys, "frozen", False)
        if worker is None:
            worker = _worker_pays()
        self._use_worker = worker and runnable and (os.cpu_count() or 1) > 1
        self._worker: asyncio.Task[asyncio.subprocess.Process] | None = None
        self._lock = asyncio.Lock()  # one job at a time on the worker's pipe

    def prepare(self) -> None:
        """Start the worker now (big jobs are coming), so that it is ready when they come."""
        if self._use_worker and self._worker is None:
            self._worker = asyncio.create_task(self._start(), name="contactsync-numbers")

    def parallel(self, count: int) -> bool:
        """Whether a job of `count` numbers goes to the worker process."""
        return self._use_worker and count >= WORKER_MIN

    async def read(self, raws: Sequence[str], region: str | None) -> list[Result]:
        """The normalisation of each of `raws`, in order."""
        if self.parallel(len(raws)):
            try:
                return await self._on_worker(raws, region)
            except (OSError, ValueError, EOFError) as exc:
                log.info("number worker unavailable (%s); reading numbers in process", exc)
                self._use_worker = False
                await self.close()
        out: list[Result] = []
        for i in range(0, len(raws), _SLICE):
            out += read(raws[i : i + _SLICE], region)
            await asyncio.sleep(0)
        return out

    async def _on_worker(self, raws: Sequence[str], region: str | None) -> list[Result]:
        async with self._lock:
            self.prepare()
            assert self._worker is not None
            proc = await self._worker
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps([region, list(raws)]).encode() + b"\n")
            await proc.stdin.drain()
            line = await proc.stdout.readline()
            if not line:
                raise EOFError("the number worker ended")
            answer: list[list[Any]] = json.loads(line)
            if len(answer) != len(raws):
                raise ValueError("the number worker answered another job")
            return [(e164, reason, bool(rewritten)) for e164, reason, rewritten in answer]

    @staticmethod
    async def _start() -> asyncio.subprocess.Process:
        # -I: no user site, no PYTHON* variables, not this file's folder on the path (its
        # modules would shadow others); the folder holding the contactsync package is given
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            __file__,
            package_root,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_LIMIT,
        )
        log.debug("number worker started (pid %s)", proc.pid)
        return proc

    async def close(self) -> None:
        """End the worker (it ends at the end of its input) and wait for it."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            proc = await worker
        except (OSError, asyncio.CancelledError):
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _serve() -> None:
    """The worker: one job per input line until the input ends."""
    sys.path.insert(0, sys.argv[1])
    for line in sys.stdin.buffer:
        region, raws = json.loads(line)
        sys.stdout.write(json.dumps(read(raws, region)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
