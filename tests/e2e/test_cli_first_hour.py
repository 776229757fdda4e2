"""The CLI as a new user meets it, against a real `contactsync serve` (issue 16.2, 16.3, 16.11):
login asks for the phone, says where the code went, `--code` verifies without asking for a new
code, a 429 says when to try again; login saves server and token and later commands use them;
admin takes the same --server / CONTACTSYNC_SERVER (old --url still works); a sync stopped by
the discovery quota says what waits and when it goes and exits 0 (1 with --strict)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess

pytestmark = pytest.mark.slow

ANN = "+14155550100"


def cli(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contactsync.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def world(tmp_path: Path) -> Any:
    server = ServerProcess(
        tmp_path / "data", env={"CONTACTSYNC_OTP_PER_PHONE_PER_HOUR": "2"}
    ).start()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("CONTACTSYNC_SERVER", "CONTACTSYNC_URL", "CONTACTSYNC_TOKEN")
    }
    env["CONTACTSYNC_STATE_DIR"] = str(tmp_path / "state")
    env.pop("CONTACTSYNC_ADMIN_KEY", None)
    try:
        yield server, env
    finally:
        server.stop()


def codes_in_log(server: ServerProcess) -> list[str]:
    return re.findall(r"OTP for [^:]+: (\d+)", server.log())


def test_login_prompts_says_where_the_code_went_and_is_remembered(
    world: Any, tmp_path: Path
) -> None:
    server, env = world
    # interactive: the phone is asked for, then the code, with where to find it
    first = cli("login", "--server", server.url, env=env, stdin=f"{ANN}\n000000\n")
    assert "Phone number" in first.stdout
    assert "server log" in first.stdout and "OTP for" in first.stdout
    assert first.returncode == 1 and "invalid_code" in first.stderr
    assert len(codes_in_log(server)) == 1
    # --code verifies the code already sent, without asking for another one
    code = codes_in_log(server)[-1]
    ok = cli("login", "--server", server.url, "--phone", ANN, "--code", code, env=env)
    assert ok.returncode == 0, ok.stderr
    assert f"logged in to {server.url}" in ok.stdout
    assert len(codes_in_log(server)) == 1
    saved = json.loads((tmp_path / "state" / "credentials.json").read_text())
    assert saved["current"] == server.url and saved[server.url]["token"]
    # later commands need neither --server nor --token
    book = tmp_path / "contacts.vcf"
    book.write_text("BEGIN:VCARD\nVERSION:3.0\nFN:Bob\nTEL:(415) 555-0101\nEND:VCARD\n")
    synced = cli("sync", str(book), "--region", "US", "--json", env=env)
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["uploaded"] == 1
    events = cli("events", "--once", env=env)
    assert events.returncode == 0, events.stderr
    # the per-number limit (2 an hour here): the 429 says when to try again
    cli("login", "--server", server.url, "--phone", ANN, env=env, stdin="000000\n")
    limited = cli("login", "--server", server.url, "--phone", ANN, env=env, stdin="000000\n")
    assert limited.returncode == 1
    assert re.search(r"Try again in \d+ (s|min|h \d+ min) \(at \d\d:\d\d\)", limited.stderr), (
        limited.stderr
    )


def test_admin_takes_the_same_server_option_and_the_old_name(world: Any) -> None:
    server, env = world
    env = {**env, "CONTACTSYNC_ADMIN_KEY": ADMIN_KEY}
    made = cli(
        "admin",
        "users",
        "create",
        ANN,
        "--name",
        "Ann",
        env={**env, "CONTACTSYNC_SERVER": server.url},
    )
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["name"] == "Ann"
    old = cli("admin", "--url", server.url, "users", "get", "1", env=env)
    assert old.returncode == 0 and json.loads(old.stdout)["user_id"] == 1
    new = cli("admin", "--server", server.url, "users", "get", "1", env=env)
    assert new.returncode == 0 and new.stdout == old.stdout
    assert "--url" not in cli("admin", "--help", env=env).stdout  # a hidden alias


def test_a_sync_over_the_discovery_quota_waits_and_says_when(world: Any, tmp_path: Path) -> None:
    server, env = world
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        user = client.post("/v1/admin/users", json={"phone": ANN}, headers=admin).json()
        assert (
            client.put(
                "/v1/admin/settings",
                json={"discovery_quota": 2, "discovery_quota_refill_per_day": 24},
                headers=admin,
            ).status_code
            == 200
        )
    login = cli(
        "login",
        "--server",
        server.url,
        "--admin-key",
        ADMIN_KEY,
        "--user-id",
        str(user["user_id"]),
        env=env,
    )
    assert login.returncode == 0, login.stderr
    book = tmp_path / "five.vcf"
    book.write_text(
        "".join(
            f"BEGIN:VCARD\nVERSION:3.0\nFN:P{i}\nTEL:+1 415 555 02{i:02d}\nEND:VCARD\n"
            for i in range(5)
        )
    )
    run = cli("sync", str(book), "--batch-size", "2", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    out = " ".join(run.stdout.split())
    assert "2 contacts synced; 3 wait for the discovery quota" in out, out
    assert "setting discovery_quota = 2, refilling 24 a day" in out
    assert re.search(r"after \d\d:\d\d \(in \d+ (s|min|h)", out), out
    strict = cli("sync", str(book), "--batch-size", "2", "--strict", env=env)
    assert strict.returncode == 1


def test_events_and_conversations_speak_in_sentences_and_names(world: Any) -> None:
    server, env = world
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, timeout=10) as client:

        def user(phone: str, name: str) -> tuple[int, dict[str, str]]:
            made = client.post(
                "/v1/admin/users", json={"phone": phone, "name": name}, headers=admin
            )
            uid = made.json()["user_id"]
            token = client.post(
                f"/v1/admin/users/{uid}/tokens", json={"device_id": "p"}, headers=admin
            ).json()["token"]
            return uid, {"Authorization": f"Bearer {token}"}

        ann, ann_h = user(ANN, "Ann")
        r = client.post(
            "/v1/addressbook",
            json={"contacts": [{"phone": "+14155550101", "name": "Bobby B"}]},
            headers=ann_h,
        )
        assert r.status_code == 200, r.text
        bob, bob_h = user("+14155550101", "Robert")
        dm = client.post(
            "/v1/conversations", json={"kind": "dm", "members": [ann]}, headers=bob_h
        ).json()
        sent = client.post(
            f"/v1/conversations/{dm['id']}/messages",
            json={"body": "hi Ann", "client_msg_id": "m1"},
            headers=bob_h,
        )
        assert sent.status_code in (200, 201), sent.text
    login = cli(
        "login", "--server", server.url, "--admin-key", ADMIN_KEY, "--user-id", str(ann), env=env
    )
    assert login.returncode == 0, login.stderr
    events = cli("events", "--once", env=env)
    assert events.returncode == 0, events.stderr
    # names as Ann's own book has them, messages as sentences, no raw JSON
    assert "Bobby B joined" in events.stdout, events.stdout
    assert f"Bobby B wrote in conversation {dm['id']}: hi Ann" in events.stdout, events.stdout
    assert "{" not in events.stdout, events.stdout
    listed = cli("conversations", "--consent", "allowed,unknown", "--messages", "5", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "│ dm " in line)
    assert f"│ {dm['id']} " in row and "Bobby B" in row, listed.stdout
    assert "Bobby B: hi Ann" in listed.stdout, listed.stdout


def test_sync_summary_progress_and_a_different_file(world: Any, tmp_path: Path) -> None:
    import pty

    server, env = world
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, timeout=10) as client:
        ann = client.post("/v1/admin/users", json={"phone": ANN}, headers=admin).json()
        client.post("/v1/admin/users", json={"phone": "+14155550101"}, headers=admin)
    assert (
        cli(
            "login",
            "--server",
            server.url,
            "--admin-key",
            ADMIN_KEY,
            "--user-id",
            str(ann["user_id"]),
            env=env,
        ).returncode
        == 0
    )
    first = tmp_path / "phone.vcf"
    cards = [("Bob", "(415) 555-0101")] + [(f"P{i}", f"+1 415 555 03{i:02d}") for i in range(30)]
    cards.append(("Broken Number", "12"))
    first.write_text(
        "".join(f"BEGIN:VCARD\nVERSION:3.0\nFN:{n}\nTEL:{t}\nEND:VCARD\n" for n, t in cards)
    )
    # a terminal on stderr, so the progress bar is drawn
    main, tty = pty.openpty()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "contactsync.cli",
            "sync",
            str(first),
            "--region",
            "US",
            "--batch-size",
            "10",
        ],
        env={**env, "COLUMNS": "160"},
        stdout=subprocess.PIPE,
        stderr=tty,
        text=True,
        timeout=120,
    )
    os.close(tty)
    drawn = b""
    try:
        while chunk := os.read(main, 65536):
            drawn += chunk
    except OSError:
        pass
    os.close(main)
    assert proc.returncode == 0, proc.stdout
    bar = drawn.decode(errors="replace")
    assert "32 contacts: uploading" in bar, bar[-2000:]
    assert "/?" not in bar and "/s" in bar and "eta" in bar, bar[-2000:]
    out = " ".join(proc.stdout.split())
    assert "Friends found: Bob" in out, out
    assert "already synced by an earlier run" in out  # what "unchanged" means
    assert "invalid: \"Broken Number\": '12' (too_short)" in out, out
    # another file next time: said before anything is removed, and refused without --replace
    other = tmp_path / "other.vcf"
    other.write_text("BEGIN:VCARD\nVERSION:3.0\nFN:Zed\nTEL:+1 415 555 0399\nEND:VCARD\n")
    refused = cli("sync", str(other), "--region", "US", env=env)
    assert refused.returncode == 2
    assert "are removed from the server" in refused.stderr and "--replace" in refused.stderr
    with httpx.Client(base_url=server.url, timeout=10) as client:
        token = json.loads((tmp_path / "state" / "credentials.json").read_text())[server.url]
        book = client.get(
            "/v1/addressbook?limit=500", headers={"Authorization": f"Bearer {token['token']}"}
        ).json()["contacts"]
    assert len(book) == 31  # nothing removed
    replaced = cli("sync", str(other), "--region", "US", "--replace", env=env)
    assert replaced.returncode == 0, replaced.stderr
