"""SDK fixtures: managers driving the real app in process through httpx.ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from contactsync.client import ContactsManager, ContactSource, RetryPolicy
from tests.conftest import Api

FAST_RETRY = RetryPolicy(attempts=4, base=0.001, cap=0.01)
Factory = Callable[..., ContactsManager]


async def book(api: Api, headers: dict[str, str], device_id: str | None = None) -> dict[str, Any]:
    """The server's book for these credentials: {phone: name}."""
    url = "/v1/addressbook?limit=5000" + (f"&device_id={device_id}" if device_id else "")
    r = await api.client.get(url, headers=headers)
    assert r.status_code == 200, r.text
    return {c["phone"]: c.get("name") for c in r.json()["contacts"]}


def bearer(headers: dict[str, str]) -> str:
    return headers["Authorization"].split(" ", 1)[1]


@pytest.fixture
async def managers(api: Api, tmp_path: Path) -> AsyncIterator[Factory]:
    """`managers(source, headers, **options)` -> a manager on this test's app; all closed after."""
    made: list[ContactsManager] = []

    def make(
        source: ContactSource,
        headers: dict[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> ContactsManager:
        options.setdefault("region", "US")
        options.setdefault("state_dir", tmp_path / "state")
        options.setdefault("events", False)
        options.setdefault("watch_interval", None)
        options.setdefault("retry", FAST_RETRY)
        manager = ContactsManager(
            source,
            server="http://testserver",
            token=bearer(headers),
            transport=transport or httpx.ASGITransport(app=api.app),
            **options,
        )
        made.append(manager)
        return manager

    yield make
    for manager in made:
        if manager.state.value != "closed":
            await manager.close()
