"""The SDK and the `contactsync sync` command against a real server process on loopback:
crash and resume, server down then up, the CLI end to end, malformed files, logout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from contactsync.client import RetryPolicy, SyncContactsManager, VCardSource
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def number(i: int) -> tuple[str, str]:
    """(how it is written in the book, its E.164 form) for contact i."""
    area = 415 + i // 9000
    line = 1000 + i % 9000
    return f"({area}) 555-{line:04d}", f"+1{area}555{line:04d}"


def write_vcf(path: Path, count: int, rename: dict[int, str] | None = None) -> dict[str, str]:
    """A vCard 3.0 book of `count` contacts; returns the book the server should end up with."""
    rename = rename or {}
    cards, expected = [], {}
    for i in range(count):
        written, e164 = number(i)
        name = rename.get(i, f"Contact {i}")
        cards.append(
            f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:u{i}\r\nFN:{name}\r\nTEL;TYPE=CELL:{written}\r\nEND:VCARD\r\n"
        )
        expected[e164] = name
    path.write_text("".join(cards), encoding="utf-8")
    return expected


class Server:
    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.process = ServerProcess(
            tmp_path / "data", None if db_url.startswith("sqlite") else db_url
        ).start()
        self.url = self.process.url
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def user(self, phone: str, name: str | None = None, device: str = "laptop") -> tuple[int, str]:
        r = self.http.post("/v1/admin/users", json={"phone": phone, "name": name}, headers=ADMIN)
        assert r.status_code in (200, 201), r.text
        uid = r.json()["user_id"]
        t = self.http.post(
            f"/v1/admin/users/{uid}/tokens", json={"device_id": device}, headers=ADMIN
        )
        return uid, t.json()["token"]

    def book(self, token: str) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 5000}
            if cursor:
                params["cursor"] = cursor
            r = self.http.get("/v1/addressbook", params=params, headers=_auth(token))
            assert r.status_code == 200, r.text
            out.update((c["phone"], c.get("name")) for c in r.json()["contacts"])
            cursor = r.json().get("next_cursor")
            if not cursor or not r.json()["contacts"]:
                return out

    def events(self, token: str) -> list[dict[str, Any]]:
        r = self.http.get("/v1/events", params={"limit": 1000}, headers=_auth(token))
        return list(r.json()["events"])

    def close(self) -> None:
        self.http.close()
        self.process.stop()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Any:
    s = Server(tmp_path, db_url)
    yield s
    s.close()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contactsync.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def sync_args(server: Server, token: str, path: Path, state: Path, *extra: str) -> list[str]:
    return [
        "sync",
        str(path),
        "--server",
        server.url,
        "--token",
        token,
        "--region",
        "US",
        "--state",
        str(state),
        *extra,
    ]


def test_killed_mid_sync_resumes_without_loss_or_duplicates(server: Server, tmp_path: Path) -> None:
    _, token = server.user("+14155550100")
    joined = [server.user(number(i)[1])[0] for i in (5, 1500, 4999)]  # already registered
    expected = write_vcf(tmp_path / "book.vcf", 5000)
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "contactsync.cli",
            *sync_args(server, token, tmp_path / "book.vcf", state, "--batch-size", "50", "--json"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(server.book(token)) < 300:
        assert proc.poll() is None, "the sync finished before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(server.book(token))
    assert 0 < partial < 5000, partial

    resumed = cli(*sync_args(server, token, tmp_path / "book.vcf", state, "--json"))
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads(resumed.stdout)
    assert metrics["failed"] == 0 and metrics["error"] is None
    assert metrics["uploaded"] <= 5000 - partial + 50  # only what was not acknowledged
    assert server.book(token) == expected
    # each registered contact was announced once, however often its batch was sent
    seen = Counter(
        u["user_id"]
        for e in server.events(token)
        if e["type"] == "contacts.registered"
        for u in e["data"]["users"]
    )
    assert seen == Counter(joined)
    again = json.loads(
        cli(*sync_args(server, token, tmp_path / "book.vcf", state, "--json")).stdout
    )
    assert again["uploaded"] == 0 and again["batches"] == 0 and again["unchanged"] == 5000


def test_cli_end_to_end_login_sync_edit_force_events(server: Server, tmp_path: Path) -> None:
    uid, _ = server.user("+14155550100")
    state = tmp_path / "state"
    login = cli(
        "login",
        "--server",
        server.url,
        "--admin-key",
        ADMIN_KEY,
        "--user-id",
        str(uid),
        "--device-id",
        "cli",
        "--state",
        str(state),
    )
    assert login.returncode == 0, login.stderr
    assert (state / "credentials.json").stat().st_mode & 0o777 == 0o600
    path = tmp_path / "book.vcf"
    write_vcf(path, 20)
    common = ["--server", server.url, "--region", "US", "--state", str(state)]
    first = cli("sync", str(path), *common)  # the token comes from `login`
    assert first.returncode == 0, first.stderr
    assert "uploaded" in first.stdout and "20" in first.stdout
    token = json.loads((state / "credentials.json").read_text())[server.url]["token"]
    expected = write_vcf(path, 18, rename={3: "Renamed Three"})
    second = json.loads(cli("sync", str(path), *common, "--json").stdout)
    assert (second["uploaded"], second["updated"], second["deleted"]) == (3, 1, 2)
    assert set(second) >= {
        "total",
        "uploaded",
        "unchanged",
        "invalid",
        "failed",
        "batches",
        "bytes",
        "duration",
        "registered",
    }
    assert server.book(token) == expected
    # something else changed the book: --force puts it back to the file's contents
    server.http.post(
        "/v1/addressbook", json={"contacts": [{"phone": "+14155559999"}]}, headers=_auth(token)
    )
    forced = json.loads(cli("sync", str(path), *common, "--force", "--json").stdout)
    assert forced["forced"] and forced["deleted"] == 1
    assert server.book(token) == expected
    # a contact joins; `contactsync events --once` shows it
    server.user(number(4)[1], "Four")
    shown = cli(
        "events",
        "--server",
        server.url,
        "--token",
        token,
        "--state",
        str(state),
        "--once",
        "--json",
    )
    assert shown.returncode == 0, shown.stderr
    events = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [(e["type"], e["data"]["name"]) for e in events if e["type"] == "contact.joined"] == [
        ("contact.joined", "Contact 4")
    ]
    # env vars work instead of options; a missing file is a clear error
    env = {"CONTACTSYNC_SERVER": server.url, "CONTACTSYNC_TOKEN": token}
    missing = cli("sync", str(tmp_path / "nope.vcf"), "--state", str(state), env=env)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    bad = cli("sync", str(path), "--state", str(state), "--token", "wrong", env=env)
    assert bad.returncode == 1 and "unauthorized" in bad.stderr
    # logout: the token is revoked, the local store and the saved credentials are gone
    assert len(list(state.glob("*.sqlite"))) == 1
    out = cli("logout", "--server", server.url, "--state", str(state))
    assert out.returncode == 0, out.stderr
    assert list(state.glob("*.sqlite*")) == []
    assert server.url not in json.loads((state / "credentials.json").read_text())
    assert server.http.get("/v1/me", headers=_auth(token)).status_code == 401


def test_malformed_csv_rows_are_reported_and_the_rest_syncs(server: Server, tmp_path: Path) -> None:
    _, token = server.user("+14155550100")
    path = tmp_path / "outlook.csv"
    path.write_bytes(
        "First Name,Last Name,Mobile Phone,Home Phone\n"
        "Jürgen,Müller,+49 151 23456789,\n"
        "Bad,Row,1,2,3,4,5,6,7\n"
        "Junk,Number,call me,(415) 555-0123\n".encode("cp1252")
    )
    run = cli(*sync_args(server, token, path, tmp_path / "state", "--json"))
    # A row that cannot be read is a failure, named, not a silent drop: exit 1, the rest synced.
    assert run.returncode == 1, run.stderr
    metrics = json.loads(run.stdout)
    assert metrics["failed"] == 1 and metrics["error"] is None
    invalid = sorted((i["reason"], i["where"] or i["phone"]) for i in metrics["invalid"])
    assert invalid == [("malformed_csv_row", "outlook.csv:3"), ("not_a_number", "call me")]
    assert server.book(token) == {"+4915123456789": "Jürgen Müller", "+14155550123": "Junk Number"}


def test_server_down_then_up_with_the_sync_wrapper(server: Server, tmp_path: Path) -> None:
    _, token = server.user("+14155550100")
    expected = write_vcf(tmp_path / "book.vcf", 200)
    server.process.stop()
    restarted = threading.Timer(1.0, server.process.start)
    restarted.start()
    manager = SyncContactsManager(
        VCardSource(tmp_path / "book.vcf"),
        server=server.url,
        token=token,
        region="US",
        state_dir=tmp_path / "state",
        batch_size=50,
        events=False,
        watch_interval=None,
        retry=RetryPolicy(attempts=150, base=0.1, cap=0.3),
    )
    try:
        metrics = manager.start()  # the first request waits for the server to come back
        restarted.join()
        assert metrics.error is None and metrics.uploaded == 200 and metrics.batches == 4
        assert server.book(token) == expected
        store = manager.manager.store_path
        assert store is not None and store.exists()
        manager.logout()
        assert not store.exists()
        assert server.http.get("/v1/me", headers=_auth(token)).status_code == 401
    finally:
        manager.close()


def test_demo_shows_joins_arriving_live() -> None:
    run = cli("demo", "--users", "3", "--delay", "0")
    assert run.returncode == 0, run.stderr
    assert '"Bob joined"' in run.stdout and '"Chen Wei joined"' in run.stdout
