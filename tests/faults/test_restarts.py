"""Real `contactsync serve` processes killed with SIGKILL in the middle of an upload and of a
force upload, and the CLI killed in the middle of a force upload: the CLI rides out a server
restart without being run again, and nothing is lost or sent twice."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.test_sdk_sync import Server, cli, number, sync_args, write_vcf
from tests.e2e.test_sdk_sync import server as server  # the fixture: a real server process

pytestmark = pytest.mark.slow


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "contactsync.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(check: object, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert proc.poll() is None, "the sync finished before the fault: " + proc.stderr.read()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def force_parts_left(state: Path) -> int | None:
    """Force-upload parts still in the CLI's outbox (None before the force upload is planned)."""
    for path in state.glob("*.sqlite"):
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as db:
            (count,) = db.execute("SELECT count(*) FROM outbox WHERE force = 1").fetchone()
        return int(count) or None
    return None


def restart(server: Server) -> None:
    """SIGKILL the server and start it again on the same port and database."""
    server.process.kill()
    server.process.start()


def announced(server: Server, token: str) -> Counter[int]:
    return Counter(
        u["user_id"]
        for e in server.events(token)
        if e["type"] == "contacts.registered"
        for u in e["data"]["users"]
    )


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_cli_rides_out_a_server_killed_mid_upload(server: Server, tmp_path: Path) -> None:
    _, token = server.user("+14155550100")
    joined = [server.user(number(i)[1])[0] for i in (3, 1500, 2999)]
    expected = write_vcf(tmp_path / "book.vcf", 3000)
    state = tmp_path / "state"
    args = sync_args(server, token, tmp_path / "book.vcf", state, "--batch-size", "100", "--json")
    proc = start_cli(*args)
    wait_until(lambda: len(server.book(token)) >= 300, proc)
    restart(server)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err  # no rerun needed
    metrics = json.loads(out)
    assert metrics["error"] is None and metrics["failed"] == 0
    assert server.book(token) == expected
    assert announced(server, token) == Counter(joined)  # each once, however often it was sent


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_force_upload_survives_a_killed_server_and_a_killed_cli(
    server: Server, tmp_path: Path
) -> None:
    _, token = server.user("+14155550100")
    state = tmp_path / "state"
    book = tmp_path / "book.vcf"
    write_vcf(book, 2000)
    assert cli(*sync_args(server, token, book, state)).returncode == 0

    # the server is killed in the middle of a force upload: the CLI finishes it all the same
    expected = write_vcf(book, 2000, rename={i: f"Renamed {i}" for i in range(0, 2000, 2)})
    args = sync_args(server, token, book, state, "--force", "--batch-size", "100", "--json")
    proc = start_cli(*args)
    wait_until(lambda: (force_parts_left(state) or 20) < 17, proc)
    restart(server)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    metrics = json.loads(out)
    assert metrics["error"] is None and metrics["uploaded"] == 2000  # each part once
    assert server.book(token) == expected

    # the CLI is killed in the middle of the next one: the rerun finishes it, and only it
    expected = write_vcf(book, 2000)
    proc = start_cli(*sync_args(server, token, book, state, "--force", "--batch-size", "100"))
    wait_until(lambda: (force_parts_left(state) or 20) < 15, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    left = force_parts_left(state)
    assert left is not None and left < 15
    rerun = cli(*sync_args(server, token, book, state, "--force", "--json"))
    assert rerun.returncode == 0, rerun.stderr
    metrics = json.loads(rerun.stdout)
    assert metrics["uploaded"] <= left * 100  # the parts left, not the whole book again
    assert server.book(token) == expected
