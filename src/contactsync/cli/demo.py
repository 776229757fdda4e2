"""`contactsync demo`: an embedded server, simulated users with real address books, and
"X joined" arriving live on the first user's SDK as the others register."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import SecretStr

from contactsync.cli._extras import require_server
from contactsync.client._manager import ContactsManager
from contactsync.client._models import Contact, Event
from contactsync.client._sources import MemorySource

PEOPLE = [
    ("Alice", "+14155550101"),
    ("Bob", "+14155550102"),
    ("Chen Wei", "+442079460103"),
    ("Dmitri", "+4915123450104"),
    ("Élodie", "+33612340105"),
    ("Farah", "+919812340106"),
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_demo(users: int, delay: float, echo: Callable[[str], None]) -> None:
    require_server()
    import uvicorn

    from contactsync.server.app import create_app
    from contactsync.server.config import Settings

    people = PEOPLE[: max(2, min(users, len(PEOPLE)))]
    admin_key = "csadmin_demo-" + secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="contactsync-demo-") as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "server", admin_key=SecretStr(admin_key), port=_port()
        )
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"
            )
        )
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        url = f"http://127.0.0.1:{settings.port}"
        echo(f"embedded server on {url} (SQLite in {tmp})")
        admin = httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {admin_key}"})
        managers: list[ContactsManager] = []
        try:

            async def register(name: str, phone: str) -> str:
                user = (
                    await admin.post("/v1/admin/users", json={"phone": phone, "name": name})
                ).json()
                r = await admin.post(
                    f"/v1/admin/users/{user['user_id']}/tokens", json={"device_id": "demo"}
                )
                return str(r.json()["token"])

            first_name, first_phone = people[0]
            token = await register(first_name, first_phone)
            # everyone's book holds everyone else, in the forms people type them
            book = [
                Contact(str(i), name, (phone,))
                for i, (name, phone) in enumerate(people)
                if phone != first_phone
            ]
            arrived: asyncio.Queue[Event] = asyncio.Queue()
            alice = ContactsManager(
                MemorySource(book),
                server=url,
                token=token,
                state_dir=Path(tmp) / "sdk",
                poll_interval=0.2,
                watch_interval=None,
            )
            managers.append(alice)
            alice.on_contact_joined(arrived.put_nowait)
            metrics = await alice.start()
            echo(
                f"{first_name} synced {metrics.uploaded} contacts "
                f"in {metrics.duration * 1000:.0f} ms; "
                f"{len(metrics.registered)} already use the app"
            )
            for name, phone in people[1:]:
                await asyncio.sleep(delay)
                echo(f"… {name} installs the app and registers")
                await register(name, phone)
                event = await asyncio.wait_for(arrived.get(), 30)
                echo(
                    f'  {first_name}\'s phone: "{event.data.get("name")} joined" '
                    f"(event #{event.seq}, via {alice.listener_state})"
                )
            echo("done")
        finally:
            for manager in managers:
                await manager.close()
            await admin.aclose()
            server.should_exit = True
            with contextlib.suppress(Exception):
                await serving
