"""The SDK's one background-task helper (the event listener, private discovery and the
manager's own tasks all start and stop through it)."""

from __future__ import annotations

import asyncio

from contactsync.client._tasks import Background, cancel


async def test_start_twice_runs_one_task_and_stop_ends_it() -> None:
    started: list[int] = []
    ended: list[int] = []

    async def work() -> None:
        started.append(1)
        try:
            await asyncio.Event().wait()
        finally:
            ended.append(1)

    job = Background(work, "test-job")
    job.start()
    job.start()
    await asyncio.sleep(0)
    assert started == [1] and job.running
    await job.stop()
    assert ended == [1] and not job.running
    await job.stop()  # stopping a stopped job is fine


async def test_a_job_that_ended_starts_again() -> None:
    runs: list[int] = []

    async def once() -> None:
        runs.append(1)

    job = Background(once, "test-once")
    job.start()
    await asyncio.sleep(0)
    job.start()
    await asyncio.sleep(0)
    assert runs == [1, 1]


async def test_cancel_swallows_what_the_tasks_raise_and_skips_none() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def waits() -> None:
        await asyncio.Event().wait()

    failed = asyncio.create_task(fails())
    waiting = asyncio.create_task(waits())
    await asyncio.sleep(0)
    await cancel(failed, None, waiting)
    assert waiting.cancelled() and failed.done()
