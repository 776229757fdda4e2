"""One SQL compilation per statement per pytest worker, not one per test.

SQLAlchemy caches each statement's compiled form per engine, keyed by the engine's dialect
object. A server process has one engine, so it compiles each statement once in its life; the
suite makes an engine per test (every test has its own database), and so compiled every
statement a test runs again, in every test: about 6 ms of CPU for an app's start, first
registration and stop alone on SQLite (60-61 against 54-55 ms, runs alternated; 923 against
103 compilations in 40 such cycles), more in tests that run more statements.

`share()` makes the engines of one worker that have the same dialect class share one dialect
object and one compiled cache. What a dialect learns on connecting (the server's version and
the like) is the same for every engine here, as they all reach the same SQLite library and
the same PostgreSQL server; everything that differs between engines (URL, pool, timeouts,
event listeners such as SQLite's pragmas and BEGIN IMMEDIATE) stays on the engine and its
pool. Every statement still runs on the test's own database.

Measured on the fast loop (`scripts/test -m "not slow"`, 3 workers), two pairs of runs one
after the other: 114 s / 163 CPU-s against 124 s / 183 CPU-s without, and 112 s / 161 CPU-s
against 135 s / 200 CPU-s. CONTACTSYNC_TEST_SHARE_COMPILED=0 runs the suite with one dialect
per engine, as a server process has.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy.ext.asyncio.engine as async_engine

_shared: dict[type[Any], tuple[Any, Any]] = {}


def share() -> None:
    create = async_engine._create_engine
    if getattr(create, "shares_dialects", False):
        return

    def create_sharing(*args: Any, **kwargs: Any) -> Any:
        engine = create(*args, **kwargs)
        kind = type(engine.dialect)
        shared = _shared.get(kind)
        # Only a dialect that has connected once is shared: an engine initialises its own
        # dialect on its first connection, never one it was handed afterwards.
        if shared is not None and shared[0].server_version_info is not None:
            engine.dialect, engine._compiled_cache = shared
            engine.pool._dialect = engine.dialect
        else:
            _shared[kind] = (engine.dialect, engine._compiled_cache)
        return engine

    create_sharing.shares_dialects = True  # type: ignore[attr-defined]
    async_engine._create_engine = create_sharing  # type: ignore[assignment]
