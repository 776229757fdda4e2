"""Apply the Alembic migrations: on start, from `contactsync db upgrade`, and in tests."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from contactsync.server.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"
_VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps
log = logging.getLogger("contactsync.store")
# Alembic logs each step in chain order, which is not the numeric order of the files (some were
# numbered before they were chained): one line in numeric order says what was applied instead.
_STEPS = logging.getLogger("alembic.runtime.migration")


def _ancestors(script: ScriptDirectory, heads: set[str]) -> set[str]:
    if not heads:
        return set()
    return {rev.revision for rev in script.iterate_revisions(tuple(heads), "base")}


def _numeric(revision: str) -> tuple[int, str]:
    digits = revision.split("_", 1)[0]
    return (int(digits), revision) if digits.isdigit() else (1 << 62, revision)


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def heads() -> frozenset[str]:
    """The heads of the migrations this package ships (read from the files once a process)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Alembic's own step lines off (`upgrade` says what was applied in one line)."""
    level = _STEPS.level
    _STEPS.setLevel(logging.WARNING)
    try:
        yield
    finally:
        _STEPS.setLevel(level)


def _at(connection: Connection) -> set[str]:
    with _quiet():
        return set(MigrationContext.configure(connection).get_current_heads())


async def upgrade(db: Database, revision: str = "heads") -> None:
    """Bring the schema to `revision` (all heads by default). A database already at the heads
    costs one read of its version table (every start of the server asks)."""
    if revision == "heads" and await current(db) == heads():
        return

    def run(connection: Connection) -> None:
        cfg = alembic_config(connection)
        script = ScriptDirectory.from_config(cfg)
        before = _at(connection)
        with _quiet():
            command.upgrade(cfg, revision)
        after = _at(connection)
        applied = sorted(_ancestors(script, after) - _ancestors(script, before), key=_numeric)
        if applied:
            log.info(
                "database schema at %s: applied %s",
                ", ".join(sorted(after, key=_numeric)),
                ", ".join(applied),
            )

    # A migration may rewrite a big table: no per-statement timeout for it.
    target = db if db.is_sqlite else db.without_command_timeout()
    try:
        async with target.write() as conn:
            await conn.run_sync(run)
    finally:
        if target is not db:
            await target.dispose()


async def current(db: Database) -> set[str]:
    """The revisions the database is at: Alembic's version table read directly (setting up
    Alembic's MigrationContext to read it costs ~6 ms of CPU, at every start of the server)."""
    async with db.read() as conn:
        if db.is_sqlite:
            found = await conn.scalar(
                text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :table"),
                {"table": _VERSION_TABLE},
            )
        else:
            found = await conn.scalar(text("SELECT to_regclass(:table)"), {"table": _VERSION_TABLE})
        if found is None:
            return set()
        rows = await conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}"))
        return {str(revision) for (revision,) in rows}
