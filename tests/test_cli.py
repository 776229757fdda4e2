"""The `contactsync` command's own subcommands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contactsync.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    result = run("db", "upgrade", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "database at revision" in result.stdout
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'd' / 'contactsync.db'}")
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"users", "book_entries", "events", "alembic_version"} <= tables
    again = run("db", "upgrade", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == result.stdout


@pytest.mark.slow
def test_bad_settings_are_reported_not_traced(tmp_path: Path) -> None:
    result = run("db", "upgrade", "--database-url", "mysql://nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "unsupported database URL" in (result.stderr + result.stdout)
