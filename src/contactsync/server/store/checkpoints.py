"""SQLite's WAL checkpoints, run beside the requests instead of inside one.

In WAL mode a commit appends the pages it changed to the write-ahead log; a checkpoint copies
the log back into the database file and syncs it, so that the log can start over. By default
SQLite does that in whichever commit takes the log past 1,000 pages: that request pays for the
copy and the fsync of every commit before it (a 5,000-contact upload's commit took 50 ms
instead of 3 when it was the one; on a shared disk an fsync may take far longer).

While a server runs, its connections leave that to this checkpointer: a thread (SQLite does
the copying with Python's lock released) runs a PASSIVE checkpoint, which blocks neither
readers nor the writer, about once a second after writes. The connections' own automatic
checkpoint stays on at `BACKSTOP_PAGES`, so the log stays bounded even if this falls behind.
A process without it (the CLI) keeps SQLite's default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from dataclasses import dataclass

log = logging.getLogger("contactsync.server")

# A commit checkpoints by itself only past this many log pages (4 KiB each): ~80 MB.
BACKSTOP_PAGES = 20_000
EVERY_S = 1.0  # at most one checkpoint a second, and only after writes


@dataclass(frozen=True)
class Checkpoint:
    """What one checkpoint did (SQLite's answer): the pages in the log, and how many of them
    are now in the database file; `busy` when a writer or a reader kept it from finishing."""

    busy: bool
    log_pages: int
    done_pages: int


class Checkpointer:
    """Runs PASSIVE checkpoints of the database file at `path` after writes (`wrote`)."""

    def __init__(self, path: str, every_s: float = EVERY_S) -> None:
        self.path = path
        self.every_s = every_s
        self.count = 0  # checkpoints run
        self.last: Checkpoint | None = None
        self._wrote = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The connection is used in worker threads, and a checkpoint's thread runs on when
        # the task awaiting it is cancelled (at stop): each use holds the lock, so the close
        # waits for a checkpoint in flight, and none opens the file again after it.
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="contactsync-checkpoints"
            )

    def wrote(self) -> None:
        """A write transaction committed: its pages are in the log."""
        self._wrote.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self._close)

    async def checkpoint(self) -> Checkpoint:
        """One PASSIVE checkpoint now, in a thread."""
        result = await asyncio.to_thread(self._checkpoint)
        self.count += 1
        self.last = result
        return result

    def _checkpoint(self) -> Checkpoint:
        with self._lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the checkpointer is stopped")
            if self._conn is None:
                self._conn = sqlite3.connect(
                    self.path, timeout=1.0, isolation_level=None, check_same_thread=False
                )
            busy, log_pages, done_pages = self._conn.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
        return Checkpoint(bool(busy), int(log_pages), int(done_pages))

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                conn, self._conn = self._conn, None
                conn.close()

    async def _run(self) -> None:
        while True:
            await self._wrote.wait()
            await asyncio.sleep(self.every_s)
            self._wrote.clear()
            try:
                await self.checkpoint()
            except sqlite3.Error as exc:
                # (the file's commits checkpoint by themselves past the backstop meanwhile)
                log.warning("WAL checkpoint failed: %s", exc)
