"""The caller's preferences (shared by all of their devices), kept in the local store.

    prefs = await manager.preferences.sync()           # {"notify_contact_joined": True, …}
    await manager.preferences.update(notify_contact_joined=False)   # mute "X joined"

A change is recorded locally before it is sent; if the server cannot be reached it stays
pending and the next `sync()` sends it before reading the server's state, so a change made
offline is not lost and not overwritten by the older server value. Changes made on another
device arrive as `preferences.updated` events and replace the local copy.
"""

from __future__ import annotations

from typing import Any

from contactsync import protocol
from contactsync.client import _wire
from contactsync.client._conversations import Ready
from contactsync.client._errors import ApiError
from contactsync.client._http import ApiClient
from contactsync.client._models import Event

__all__ = ["Preferences"]

_PATH = "/v1/me/preferences"


class Preferences:
    def __init__(self, api: ApiClient, ready: Ready) -> None:
        self.api = api
        self._ready = ready

    async def get(self) -> dict[str, Any] | None:
        """The local copy with pending changes applied (None before the first sync)."""
        store = await self._ready()
        known = store.get_json("preferences")
        pending = store.get_json("preferences_pending") or {}
        if known is None and not pending:
            return None
        return {**(known or {}), **pending}

    async def update(self, **changes: Any) -> dict[str, Any]:
        """Change some preferences; returns all of them as the server now holds them."""
        store = await self._ready()
        with store.transaction():
            pending = store.get_json("preferences_pending") or {}
            store.put_json("preferences_pending", {**pending, **changes})
        return await self.sync()

    async def sync(self) -> dict[str, Any]:
        """Send pending changes, then read the server's preferences into the local store."""
        store = await self._ready()
        pending = store.get_json("preferences_pending")
        if pending:
            try:
                current = await self.api.request("PUT", _PATH, json_body=pending)
            except ApiError as exc:
                if exc.refused:
                    # refused (an unknown key, a wrong type): the server changed nothing,
                    # and neither does the device
                    store.put("preferences_pending", None)
                raise
        else:
            current = await self.api.request("GET", _PATH)
        _wire.answer(protocol.Preferences, current)
        with store.transaction():
            store.put_json("preferences", current)
            # only what was sent is settled: an update made meanwhile stays pending
            if store.get_json("preferences_pending") == pending:
                store.put("preferences_pending", None)
        return dict(current)

    async def apply(self, event: Event) -> None:
        """A `preferences.updated` event (from any device of the caller)."""
        if event.type != "preferences.updated" or "preferences" not in event.data:
            return
        store = await self._ready()
        store.put_json("preferences", event.data["preferences"])
