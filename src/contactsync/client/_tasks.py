"""Background work of the SDK: one named task per job, started once and stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


async def cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel the tasks that are still running and wait for each to end; what they raise on
    the way out (their cancellation, or the error that ended them) is not the caller's."""
    held = [task for task in tasks if task is not None]
    for task in held:
        task.cancel()  # a no-op for one that has ended
    for task in held:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class Background:
    """One background task, made from `run` by `start()` (again once it has ended) and
    cancelled by `stop()`."""

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._run = run
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel(task)
