"""The SDK's conversations against a real server process on loopback, through the blocking
wrapper: messages arriving live over the WebSocket land in the local store, and a message
written while the server is down is sent once when it is back."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from contactsync.client import (
    Event,
    MemorySource,
    NetworkError,
    RetryPolicy,
    SyncContactsManager,
)
from tests.e2e.test_sdk_sync import Server, _auth, cli

QUICK = RetryPolicy(attempts=2, base=0.01, cap=0.05)


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Any:
    s = Server(tmp_path, db_url)
    yield s
    s.close()


def manager(server: Server, token: str, state: Path, **options: Any) -> SyncContactsManager:
    options.setdefault("retry", QUICK)
    return SyncContactsManager(
        MemorySource([]),
        server=server.url,
        token=token,
        region="US",
        state_dir=state,
        watch_interval=None,
        poll_interval=0.2,
        **options,
    )


def wait_for(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_live_messages_and_a_send_across_a_server_restart(server: Server, tmp_path: Path) -> None:
    a_id, a_token = server.user("+14155550101", "A")
    b_id, b_token = server.user("+14155550102", "B")
    alice = manager(server, a_token, tmp_path / "a", events=False)
    bob = manager(server, b_token, tmp_path / "b")
    arrived: list[Event] = []
    got = threading.Event()

    def on_message(event: Event) -> None:
        arrived.append(event)
        got.set()

    bob.on_message(on_message)
    try:
        bob.start()  # follows events over the WebSocket
        wait_for(lambda: bob.manager.listener_state == "websocket")
        chat = alice.conversations.new_dm(b_id)
        sent = chat.send("hello over the socket")
        assert got.wait(15), "no live message"
        assert arrived[0].data["seq"] == sent.seq
        # the event was applied to Bob's store before his callback ran
        texts = [m.body for m in bob.conversation(chat.id).messages()]
        assert texts == ["hello over the socket"]
        summary = bob.conversations.sync_all(consent=["allowed", "unknown"])
        assert (summary.eligible, summary.synced, summary.messages) == (1, 0, 0)

        # the server goes away: the message waits in Alice's store
        server.process.stop()
        with pytest.raises(NetworkError):
            chat.send("written while the server was down")
        assert [m.pending for m in chat.messages()] == [False, True]
        server.process.start()
        summary = alice.conversations.sync_all()
        assert summary.sent == 1 and not any(m.pending for m in chat.messages())
        r = server.http.get(f"/v1/conversations/{chat.id}/messages", headers=_auth(a_token))
        bodies = [m["body"] for m in r.json()["messages"]]
        assert bodies == ["hello over the socket", "written while the server was down"]
        # Bob's socket reconnected after the restart and caught up from its cursor
        wait_for(lambda: len(arrived) == 2)
        assert [m.sender_id for m in bob.conversation(chat.id).messages()] == [a_id, a_id]
        assert b_id != a_id
    finally:
        alice.close()
        bob.close()


def test_cli_conversations_syncs_and_lists(server: Server, tmp_path: Path) -> None:
    _, a_token = server.user("+14155550101", "A")
    b_id, b_token = server.user("+14155550102", "B")
    r = server.http.post(
        "/v1/conversations",
        json={"kind": "group", "members": [b_id], "name": "Book club"},
        headers=_auth(a_token),
    )
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    for text in ("one", "two"):
        r = server.http.post(
            f"/v1/conversations/{cid}/messages",
            json={"body": text, "client_msg_id": text},
            headers=_auth(a_token),
        )
        assert r.status_code == 201, r.text
    common = ["--server", server.url, "--token", b_token, "--state", str(tmp_path / "s")]
    run = cli("conversations", *common, "--consent", "allowed,unknown", "--json")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert (out["summary"]["eligible"], out["summary"]["synced"]) == (1, 1)
    [row] = out["conversations"]
    assert (row["id"], row["name"], row["consent"], row["messages"]) == (
        cid,
        "Book club",
        "unknown",
        2,
    )
    again = json.loads(cli("conversations", *common, "--consent", "unknown", "--json").stdout)
    assert (again["summary"]["synced"], again["summary"]["messages"]) == (0, 0)
    table = cli("conversations", *common, "--consent", "allowed,unknown")
    assert table.returncode == 0 and "Book club" in table.stdout
    bad = cli("conversations", *common, "--consent", "maybe")
    assert bad.returncode == 2 and "consent must be" in bad.stderr
