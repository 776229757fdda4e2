"""A process that reads phone numbers for another one, on another core.

libphonenumber is pure Python: reading thousands of numbers costs a core for tens of
milliseconds, and a thread would not help (it holds the GIL the event loop needs). The SDK's
first sync and the server's big requests hand such batches to worker processes
(`contactsync.client._numbers`, `contactsync.server.number_workers`); this is the worker and
the pipe to it, the one place both use.

A worker runs this file as a script (`python -I this-file package-root`): it imports
`contactsync.phone` and nothing else of contactsync, so it starts in tens of milliseconds. It
reads one JSON line per job, `[region, [raw, ...]]`, and answers one line, the
`phone.outcomes` of the numbers in the same order: what the asking process would have found
itself. (Not multiprocessing: its "spawn" start runs the asking program's main script again
in the worker, which a script without a `__main__` guard does not survive, and "fork" copies
a process that has threads in whatever state they were.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys

if __name__ == "__main__":  # a worker: the package is in the folder its parent named
    sys.path.insert(0, sys.argv[1])

from contactsync import phone as phones  # noqa: E402

_LIMIT = 1 << 26  # the longest answer line taken (a job of ~2,000,000 numbers)
_STOP_WAIT_S = 5.0


def can_start() -> bool:
    """Whether this process can start a worker: a frozen app's executable is the app, not a
    Python to run this file with."""
    return bool(sys.executable) and not getattr(sys, "frozen", False)


class WorkerFailed(Exception):
    """A worker could not be started, ended, or answered another job."""


class Worker:
    """One worker process and the pipe to it: one job at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls) -> Worker:
        # -I: no user site, no PYTHON* variables, not this file's folder on the path (its
        # modules would shadow others); the folder holding the contactsync package is given
        package_root = os.path.dirname(os.path.dirname(__file__))
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                __file__,
                package_root,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=_LIMIT,
            )
        except OSError as exc:
            raise WorkerFailed(f"cannot start: {exc}") from exc
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def outcomes(
        self, raws: list[str], region: str | None, timeout: float | None = None
    ) -> list[str]:
        """`phone.outcomes(raws, region)`, read by the worker; WorkerFailed if it cannot, or
        (the worker is then stopped) gives no answer within `timeout` seconds."""
        async with self._lock:
            stdin, stdout = self.proc.stdin, self.proc.stdout
            assert stdin is not None and stdout is not None
            try:
                stdin.write(json.dumps([region, raws]).encode() + b"\n")
                await asyncio.wait_for(stdin.drain(), timeout)
                line = await asyncio.wait_for(stdout.readline(), timeout)
            except TimeoutError as exc:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()  # a hung worker: what is in its pipe is lost anyway
                raise WorkerFailed(f"no answer within {timeout} s") from exc
            except (OSError, ValueError) as exc:  # a broken pipe, a line over the limit
                raise WorkerFailed(str(exc)) from exc
            if not line:
                raise WorkerFailed("the worker ended")
            try:
                answer = json.loads(line)
            except ValueError as exc:
                raise WorkerFailed("the worker answered something else") from exc
            if not isinstance(answer, list) or len(answer) != len(raws):
                raise WorkerFailed("the worker answered another job")
            if not all(isinstance(outcome, str) and outcome for outcome in answer):
                raise WorkerFailed("the worker answered something else")
            return answer

    async def stop(self) -> None:
        """End the worker (it ends at the end of its input) and wait for it."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), _STOP_WAIT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


def _warm() -> None:
    """Every region's metadata loaded (libphonenumber loads a region at its first number;
    all of them take ~40 ms), so that no job pays for it."""
    import phonenumbers
    from phonenumbers.phonemetadata import PhoneMetadata

    for region in phonenumbers.SUPPORTED_REGIONS:
        PhoneMetadata.metadata_for_region(region)


def _serve() -> None:
    """The worker: one job per input line until the input ends (its parent closed the pipe,
    or ended). Ctrl-C in a terminal reaches the whole process group: the parent decides what
    it means, the worker does not print a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm()
    for line in sys.stdin.buffer:
        region, raws = json.loads(line)
        sys.stdout.write(json.dumps(phones.outcomes(raws, region)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
