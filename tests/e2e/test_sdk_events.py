"""SDK event callbacks over the server's WebSocket, against a real server process: live
delivery, and after a server restart a reconnect from the stored cursor with no gap and no
duplicate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from contactsync.client import Contact, ContactsManager, Event, MemorySource
from tests.conftest import ADMIN_KEY
from tests.e2e.server import ServerProcess

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _next(queue: asyncio.Queue[Event], timeout: float = 10) -> Event:
    return await asyncio.wait_for(queue.get(), timeout)


async def test_joins_arrive_over_the_websocket_and_survive_a_restart(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
            uid = (await admin.post("/v1/admin/users", json={"phone": "+14155550100"})).json()
            token = (
                await admin.post(
                    f"/v1/admin/users/{uid['user_id']}/tokens", json={"device_id": "d"}
                )
            ).json()["token"]
        book = [Contact(str(i), f"Friend {i}", (f"+1415555010{i}",)) for i in range(1, 5)]
        manager = ContactsManager(
            MemorySource(book),
            server=server.url,
            token=token,
            state_dir=tmp_path / "sdk",
            watch_interval=None,
            poll_interval=0.2,
            websocket_retry=0.5,
        )
        joined: asyncio.Queue[Event] = asyncio.Queue()
        manager.on_contact_joined(joined.put_nowait)
        try:
            await manager.start()
            async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
                await admin.post("/v1/admin/users", json={"phone": "+14155550101"})
                first = await _next(joined)
                assert manager.listener_state == "websocket"
                assert (first.seq, first.data["name"]) == (1, "Friend 1")

            server.stop()
            await asyncio.sleep(0.5)
            server.start()
            async with httpx.AsyncClient(base_url=server.url, headers=ADMIN) as admin:
                for i in (2, 3):
                    await admin.post("/v1/admin/users", json={"phone": f"+1415555010{i}"})
            got = [await _next(joined), await _next(joined)]
            assert [(e.seq, e.data["name"]) for e in got] == [(2, "Friend 2"), (3, "Friend 3")]
            for _ in range(100):  # back on the socket once it is up again
                if manager.listener_state == "websocket":
                    break
                await asyncio.sleep(0.1)
            assert manager.listener_state == "websocket"
            await asyncio.sleep(0.5)
            assert joined.empty()  # nothing delivered twice
        finally:
            await manager.close()
    finally:
        server.stop()
