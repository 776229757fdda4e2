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


def test_serve_on_a_taken_port_says_so_without_the_banner(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port), "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "contactsync on http" not in result.stdout + result.stderr
    assert not (tmp_path / "d").exists()  # nothing was started or created


def test_help_shows_no_bool_metavar_and_paragraphs_whole(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "COLUMNS": "200"}
    for command in (["sync", "--help"], ["login", "--help"], ["admin", "--help"]):
        result = subprocess.run(
            [sys.executable, "-m", "contactsync.cli", *command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert "<bool>" not in result.stdout, command
        if command[0] == "login":
            # the docstring's own line ends are not kept: the paragraph is rewrapped whole, so
            # no line but its last is cut short mid-sentence
            lines = result.stdout.split("\n\n")[1].splitlines()
            assert lines[0].strip().startswith("Log in by one-time code")
            assert all(len(line.strip()) >= 60 for line in lines[:-1]), lines
            assert "later commands use them" in " ".join(" ".join(lines).split())
