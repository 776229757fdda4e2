"""Migrations are reported in numeric order, in one line (issue 16.11): Alembic's own steps
follow the chain, in which some files numbered earlier come later."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from contactsync.server.store import migrate
from contactsync.server.store.database import Database


async def test_migrations_are_logged_in_numeric_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")
    try:
        with caplog.at_level(logging.INFO):
            await migrate.upgrade(db)
        lines = [r.getMessage() for r in caplog.records if r.name == "contactsync.store"]
        assert len(lines) == 1, lines
        applied = lines[0].split("applied ", 1)[1].split(", ")
        assert applied[0] == "0001" and len(applied) >= 11
        assert applied == sorted(applied, key=int)
        assert not [r for r in caplog.records if r.name == "alembic.runtime.migration"]
        caplog.clear()
        with caplog.at_level(logging.INFO):
            await migrate.upgrade(db)  # nothing to do: nothing said
        assert not [r for r in caplog.records if r.name == "contactsync.store"]
    finally:
        await db.dispose()
