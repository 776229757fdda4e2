"""Private discovery end to end: a real `contactsync serve` in private mode, the real SDK, on
SQLite and PostgreSQL. The server learns nothing about the book's numbers that are not users'
(no table, no log line holds them in any format or plain hash), the matches are the stored
mode's, blockers and hidden users are misses, the quota counts evaluated numbers once, a key
rotation is followed, and joins arrive as `contact.joined` through the filter's deltas."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from contactsync.client import Contact, ContactsManager, Event, MemorySource
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess
from tests.e2e.test_sdk_sync import cli

pytestmark = pytest.mark.slow

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OWNER = "+14155550100"
FRIENDS = {"+14155550101": "Bob", "+14155550102": "Cy"}
BLOCKER, HIDDEN, LATER = "+14155550103", "+14155550104", "+14155550105"
# numbers of the book nobody registers, as the book writes them
STRANGERS = {
    "+14155550191": "(415) 555-0191",
    "+14155550192": "+1 415 555 0192",
    "+442079460958": "+44 20 7946 0958",
    "+4915123456789": "+49 151 23456789",
}


def written_forms(e164: str, raw: str) -> set[str]:
    """The number as text and its plain hashes: what a server that learnt it might keep."""
    digits = e164.lstrip("+")
    national = "".join(ch for ch in raw if ch.isdigit())
    texts = {e164, digits, national, digits[-10:], raw}
    hashes = set()
    for text in texts:
        for algorithm in ("md5", "sha1", "sha256", "sha512"):
            digest = hashlib.new(algorithm, text.encode()).digest()
            hashes |= {digest.hex(), base64.b64encode(digest).decode()}
    return texts | hashes


async def database_text(db_url: str, data_dir: Path) -> str:
    """Every value of every table, as text."""
    out: list[str] = []
    if db_url.startswith("sqlite"):
        path = db_url.split("///", 1)[1]
        with sqlite3.connect(path) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for row in db.execute(f'SELECT * FROM "{table}"'):
                    out.append(repr(row))
        return "\n".join(out)
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        for (table,) in tables:
            for row in await conn.fetch(f'SELECT * FROM "{table}"'):
                out.append(repr(tuple(row)))
    finally:
        await conn.close()
    return "\n".join(out)


async def admin_user(admin: httpx.AsyncClient, phone: str) -> tuple[int, str]:
    r = await admin.post("/v1/admin/users", json={"phone": phone})
    uid = int(r.json()["user_id"])
    r = await admin.post(f"/v1/admin/users/{uid}/tokens", json={"device_id": "d"})
    return uid, str(r.json()["token"])


def book() -> list[Contact]:
    contacts = [Contact(f"f{i}", name, (p,)) for i, (p, name) in enumerate(FRIENDS.items())]
    contacts += [
        Contact("blocker", "Blocker", (BLOCKER,)),
        Contact("hidden", "Hidden", (HIDDEN,)),
        Contact("later", "Later", (LATER,)),
    ]
    contacts += [
        Contact(f"s{i}", f"Stranger {i}", (raw,)) for i, raw in enumerate(STRANGERS.values())
    ]
    return contacts


def manager(server: ServerProcess, token: str, state: Path, **options: Any) -> ContactsManager:
    return ContactsManager(
        MemorySource(book()),
        server=server.url,
        token=token,
        region="US",
        state_dir=state,
        watch_interval=None,
        poll_interval=0.2,
        websocket_retry=0.5,
        **options,
    )


async def test_private_sync_keeps_non_users_numbers_from_the_server(
    tmp_path: Path, db_url: str
) -> None:
    database_url = db_url
    data = tmp_path / "data"
    server = ServerProcess(
        data, database_url, env={"CONTACTSYNC_DISCOVERY_MODE": "private"}
    ).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
            owner, token = await admin_user(admin, OWNER)
            friends = {p: (await admin_user(admin, p))[0] for p in FRIENDS}
            blocker, blocker_token = await admin_user(admin, BLOCKER)
            _, hidden_token = await admin_user(admin, HIDDEN)
            r = await admin.put(
                f"/v1/blocks/{owner}", headers={"Authorization": f"Bearer {blocker_token}"}
            )
            assert r.status_code in (200, 204), r.text
            r = await admin.put(
                "/v1/me/preferences",
                json={"discoverable_by": "nobody"},
                headers={"Authorization": f"Bearer {hidden_token}"},
            )
            assert r.status_code == 200, r.text
            r = await admin.put(
                "/v1/admin/settings",
                json={"discovery_quota": 100, "discovery_quota_refill_per_day": 1},
            )
            assert r.status_code == 200, r.text

        sdk = manager(server, token, tmp_path / "sdk")  # the mode comes from the server
        joined: asyncio.Queue[Event] = asyncio.Queue()
        sdk.on_contact_joined(joined.put_nowait)
        try:
            first = await sdk.start()
            assert sdk.discovery == "private"
            assert first.error is None, first.error
            assert first.uploaded == 0
            found = {(u["user_id"], u["phone"], u["name"]) for u in first.registered}
            assert found == {(friends[p], p, name) for p, name in FRIENDS.items()}
            # each number of the book (and variant form) was evaluated once
            assert first.evaluated >= len(book())

            # a re-sync evaluates nothing and costs no quota
            again = await sdk.sync()
            assert (again.evaluated, again.registered) == (0, [])

            # the server holds nothing of the strangers' numbers, nor the log
            text = await database_text(db_url, data) + server.log()
            for e164, raw in STRANGERS.items():
                for form in written_forms(e164, raw):
                    assert form not in text, (e164, form)
            # its quota counted the evaluated numbers once, the re-sync nothing
            left = await quota_left(db_url, owner)
            assert 100 - first.evaluated <= left < 100 - first.evaluated + 0.5

            # a join reaches on_contact_joined through the filter's deltas
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
                later = (await admin.post("/v1/admin/users", json={"phone": LATER})).json()
            event = await asyncio.wait_for(joined.get(), 10)
            latency = time.monotonic() - started
            assert event.data == {"user_id": later["user_id"], "phone": LATER, "name": "Later"}
            assert latency < 5, latency  # the target is 2 s; the bench measures it

            # a key rotation: the client evaluates again and finds the same users
            before = {(m["user_id"], m["phone"]) for m in sdk.private_matches()}
            async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
                r = await admin.post("/v1/admin/discovery/rotate-key")
                assert r.status_code == 200, r.text
            rotated = await sdk.sync()
            assert rotated.error is None and rotated.evaluated == first.evaluated
            assert {(m["user_id"], m["phone"]) for m in sdk.private_matches()} == before
            assert {p for _, p in before} == {*FRIENDS, LATER}
            store_path = sdk.store_path
            assert store_path is not None and store_path.exists()
            await sdk.logout()
            assert not store_path.exists()  # the stored tags went with it
        finally:
            await sdk.close()
        assert blocker not in {u["user_id"] for u in first.registered}
    finally:
        server.stop()

    # the same book and users in stored mode: the same matches (before LATER joined)
    stored = ServerProcess(data, database_url).start()
    try:
        async with httpx.AsyncClient(base_url=stored.url, headers=ADMIN) as admin:
            r = await admin.post(f"/v1/admin/users/{owner}/tokens", json={"device_id": "e"})
            token = r.json()["token"]
        sdk = manager(stored, token, tmp_path / "sdk-stored")
        try:
            metrics = await sdk.sync()
            assert sdk.discovery == "stored"
            stored_found = {(u["user_id"], u["phone"]) for u in metrics.registered}
            assert metrics.error is None, metrics
            assert stored_found == {(u, p) for u, p, _ in found} | {(later["user_id"], LATER)}
        finally:
            await sdk.close()
    finally:
        stored.stop()


async def test_in_private_mode_only_joins_announced_to_everybody_reach_on_contact_joined(
    tmp_path: Path, db_url: str
) -> None:
    """`announce_join_to` in private mode, as far as it applies: the server knows no holders
    and no books, so it cannot tell a mutual contact; a `contacts` join is announced to
    nobody, like a `nobody` one (docs/privacy.md), and the holders find both users at their
    next sync. An `everybody` join reaches `on_contact_joined`."""
    server = ServerProcess(
        tmp_path / "data", db_url, env={"CONTACTSYNC_DISCOVERY_MODE": "private"}
    ).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
            _, token = await admin_user(admin, OWNER)
        sdk = manager(server, token, tmp_path / "sdk")
        joined: asyncio.Queue[Event] = asyncio.Queue()
        sdk.on_contact_joined(joined.put_nowait)
        try:
            first = await sdk.start()
            assert first.error is None and first.registered == []
            async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
                made = {}
                for phone, audience in ((HIDDEN, "contacts"), (BLOCKER, "nobody"), (LATER, None)):
                    body = {"phone": phone, "announce_join_to": audience}
                    r = await admin.post(
                        "/v1/admin/users", json={k: v for k, v in body.items() if v}
                    )
                    assert r.status_code == 201, r.text
                    made[phone] = r.json()["user_id"]
            # had HIDDEN's or BLOCKER's join been announced, it would have come first (in an
            # earlier delta, or before LATER's in the same one: the SDK reports by number)
            event = await asyncio.wait_for(joined.get(), 10)
            assert event.data == {"user_id": made[LATER], "phone": LATER, "name": "Later"}
            assert joined.empty()
            again = await sdk.sync()
            assert again.error is None
            assert {(u["user_id"], u["phone"]) for u in again.registered} == {
                (made[HIDDEN], HIDDEN),
                (made[BLOCKER], BLOCKER),
            }
        finally:
            await sdk.close()
    finally:
        server.stop()


async def quota_left(db_url: str, owner: int) -> float:
    """The tokens left in the owner's discovery quota bucket (services/quota.py)."""
    query = "SELECT tokens FROM rate_buckets WHERE key = "
    key = f"discovery:{owner}"
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.split("///", 1)[1]) as db:
            return float(db.execute(query + "?", (key,)).fetchone()[0])
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return float(await conn.fetchval(query + "$1", key))
    finally:
        await conn.close()


def test_the_cli_shows_and_changes_the_controls_and_syncs_privately(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"CONTACTSYNC_DISCOVERY_MODE": "private"})
    server.start()
    try:
        with httpx.Client(base_url=server.url, headers=ADMIN) as admin:
            uid = admin.post("/v1/admin/users", json={"phone": OWNER}).json()["user_id"]
            friend = admin.post("/v1/admin/users", json={"phone": "+14155550101"}).json()
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
        shown = cli("privacy", "--server", server.url, "--state", str(state))
        assert shown.returncode == 0, shown.stderr
        assert "discoverable by: the app default" in shown.stdout
        assert "discovery: private" in shown.stdout
        changed = cli(
            "privacy",
            "--discoverable-by",
            "contacts",
            "--announce-join-to",
            "nobody",
            "--server",
            server.url,
            "--state",
            str(state),
        )
        assert changed.returncode == 0, changed.stderr
        assert "discoverable by: contacts" in changed.stdout
        assert "announce joining to: nobody" in changed.stdout
        bad = cli("privacy", "--discoverable-by", "all", "--state", str(state))
        assert bad.returncode == 2 and "all" in bad.stderr
        book = tmp_path / "book.vcf"
        book.write_text(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:1\r\nFN:Bob\r\nTEL:(415) 555-0101\r\nEND:VCARD\r\n"
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:2\r\nFN:Nobody\r\nTEL:(415) 555-0191\r\n"
            "END:VCARD\r\n"
        )
        synced = cli("sync", str(book), "--region", "US", "--state", str(state), "--json")
        assert synced.returncode == 0, synced.stderr
        metrics = json.loads(synced.stdout)
        assert metrics["uploaded"] == 0 and metrics["evaluated"] >= 2
        assert [u["user_id"] for u in metrics["registered"]] == [friend["user_id"]]
    finally:
        server.stop()
