"""The pipe to a number worker (contactsync/phone_worker.py): a real worker answers what this
process would find; a process at the other end that answers anything else, or nothing, is a
WorkerFailed (the caller then reads the numbers itself), never another error."""

from __future__ import annotations

import asyncio
import sys

import pytest

from contactsync import phone as phones
from contactsync.phone_worker import Worker, WorkerFailed

RAWS = ["+1 415 555 0100", "(415) 555-0101", "call me", "+52 1 55 1234 5678"]


async def test_a_worker_answers_what_this_process_finds() -> None:
    worker = await Worker.start()
    try:
        assert await worker.outcomes(RAWS, "US") == phones.outcomes(RAWS, "US")
        assert await worker.outcomes([], None) == []
    finally:
        await worker.stop()
    assert worker.proc.returncode == 0


@pytest.mark.parametrize(
    "answer",
    [
        "print('not json', flush=True)",
        "print('[1, 2, 3, 4]', flush=True)",  # the right length, not outcomes
        "print('[\"+14155550100\"]', flush=True)",  # another job's answer
        "print('{}', flush=True)",
        "pass",  # ends without a word
    ],
)
async def test_a_wrong_answer_is_a_worker_failure(answer: str) -> None:
    script = f"import sys\nfor line in sys.stdin:\n    {answer}\n    break\n"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    worker = Worker(proc)
    try:
        with pytest.raises(WorkerFailed):
            await worker.outcomes(RAWS, "US", timeout=30)
    finally:
        await worker.stop()
