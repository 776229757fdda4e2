"""The event router: every event the server sends, to each part of the SDK that holds state,
then to the application's callbacks.

An event reaches, in order: the local store's conversations and preferences (so a callback
reading them sees it applied), the answer to a `sync.requested` meant for this device (synced
conversations and preferences, in a task of its own), then the callbacks registered for its
type and for "*". The cursor is saved after each event (`EventListener` delivers each once).
Socket frames that carry no event ("ready", "discovery.changed") tell private discovery that
its filter may have moved; a trimmed log makes the router resync conversations and
preferences in full.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from contactsync.client._conversations import Conversations
from contactsync.client._errors import ClientError
from contactsync.client._events import Callback, EventListener, call
from contactsync.client._http import ApiClient
from contactsync.client._models import Event, SyncSummary
from contactsync.client._preferences import Preferences
from contactsync.client._private import PrivateDiscovery
from contactsync.client._store import LocalStore
from contactsync.client._tasks import cancel

log = logging.getLogger("contactsync.client")


class EventRouter:
    """Routes events for one manager; `listen()` follows them in the background."""

    def __init__(
        self,
        api: ApiClient,
        store: Callable[[], LocalStore],
        conversations: Conversations,
        preferences: Preferences,
        *,
        me: Callable[[], dict[str, Any] | None],
        answer_sync_requests: bool = True,
    ) -> None:
        self.api = api
        self._store = store
        self._me = me
        self.conversations = conversations
        self.preferences = preferences
        self.answer_sync_requests = answer_sync_requests
        self.last_sync_answer: SyncSummary | None = None
        self.private: PrivateDiscovery | None = None
        self.listener: EventListener | None = None
        self._callbacks: dict[str, list[Callback]] = {}
        self._answers: set[asyncio.Task[None]] = set()

    def on(self, event_type: str, callback: Callback) -> None:
        """Call `callback(event)` for each event of this type ("*" for all)."""
        self._callbacks.setdefault(event_type, []).append(callback)

    @property
    def state(self) -> str:
        """How events arrive now: "websocket", "polling" or "stopped"."""
        return "stopped" if self.listener is None else self.listener.state.value

    # --- following the log -----------------------------------------------------------

    def listen(self, *, websocket: bool, poll_interval: float, websocket_retry: float) -> None:
        """Follow the event log in the background (the socket, else polling) until `stop()`."""
        if self.listener is None:
            self.listener = self._listener(websocket, poll_interval, websocket_retry)
            self.listener.start()

    async def stop(self) -> None:
        """Stop the listener and any sync-request answer under way."""
        answers = list(self._answers)
        self._answers.clear()
        await cancel(*answers)
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None

    async def poll_once(self) -> int:
        """Fetch and route what is new now; returns how many events were delivered."""
        listener = self.listener or self._listener(False, 2.0, 30.0)
        return await listener.poll_once()

    def _listener(
        self, websocket: bool, poll_interval: float, websocket_retry: float
    ) -> EventListener:
        return EventListener(
            self.api,
            load_cursor=self.load_cursor,
            save_cursor=self.save_cursor,
            dispatch=self.dispatch,
            websocket=websocket,
            poll_interval=poll_interval,
            websocket_retry=websocket_retry,
            on_trimmed=self._resync,
            on_frame=self._on_frame,
        )

    def load_cursor(self) -> int:
        return int(self._store().get("event_cursor") or 0)

    def save_cursor(self, seq: int) -> None:
        self._store().put("event_cursor", str(seq))

    # --- routing -----------------------------------------------------------------------

    async def dispatch(self, event: Event) -> None:
        # the local store first, so a callback reading it sees the event applied
        await self.conversations.apply(event)
        await self.preferences.apply(event)
        if self._asked_to_sync(event):
            task = asyncio.create_task(self._answer_sync_request(), name="contactsync-answer")
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)
        for callback in self._callbacks.get(event.type, []) + self._callbacks.get("*", []):
            await call(callback, event)

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        """Socket frames that are not events: the private-discovery filter moved."""
        if self.private is not None and frame.get("op") in ("ready", "discovery.changed"):
            self.private.changed()

    async def _resync(self) -> None:
        """The server's event log was trimmed past our cursor (retention): fetch in full what
        the lost events would have brought (conversations of every consent with their
        messages, preferences); then the listener follows from the log's end."""
        await self.conversations.sync_all(consent=["allowed", "unknown", "denied"])
        await self.preferences.sync()

    def _asked_to_sync(self, event: Event) -> bool:
        if event.type != "sync.requested" or not self.answer_sync_requests:
            return False
        mine = (self._me() or {}).get("device_id")
        asked = event.data.get("devices")
        return event.data.get("device_id") != mine and (not asked or mine in asked)

    async def _answer_sync_request(self) -> None:
        try:
            summary = await self.conversations.sync_all(consent=("allowed", "unknown"))
            await self.preferences.sync()
            self.last_sync_answer = summary
        except ClientError as exc:
            log.warning("answering a sync request failed: %s", exc)
