"""Live events for the SDK: the WebSocket with the stored cursor, falling back to polling.

The server's log is durable and ordered, so the client only needs its last seen `seq`: it
connects with `after=seq`, and whatever it missed is replayed. When the WebSocket is not
available (an older server, a proxy that drops upgrades, an in-process transport) the
listener polls `GET /v1/events` instead and tries the socket again later.

When the cursor is older than the server's retention period (410 `events_trimmed`, or that
error frame on the socket), events were lost for good: `on_trimmed` resyncs what the log
would have told (the manager syncs conversations and preferences) and the listener carries
on from the server's `last_seq`.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from contactsync.client._errors import ApiError, AuthError, ClientError, EventsTrimmed
from contactsync.client._http import ApiClient
from contactsync.client._models import Event
from contactsync.client._tasks import Background
from contactsync.client._wire import answer
from contactsync.protocol import EventsPage

log = logging.getLogger("contactsync.client.events")

Callback = Callable[[Event], Awaitable[None] | None]


class ListenerState(enum.Enum):
    STOPPED = "stopped"
    WEBSOCKET = "websocket"
    POLLING = "polling"


class EventListener:
    """Feeds `dispatch` every new event once, in seq order, saving the cursor after each."""

    def __init__(
        self,
        api: ApiClient,
        *,
        load_cursor: Callable[[], int],
        save_cursor: Callable[[int], None],
        dispatch: Callable[[Event], Awaitable[None]],
        websocket: bool = True,
        poll_interval: float = 2.0,
        websocket_retry: float = 30.0,
        on_trimmed: Callable[[], Awaitable[None]] | None = None,
        on_frame: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.api = api
        self.on_trimmed = on_trimmed
        self.load_cursor = load_cursor
        self.save_cursor = save_cursor
        self.dispatch = dispatch
        self.websocket = websocket
        self.poll_interval = poll_interval
        self.websocket_retry = websocket_retry
        self.on_frame = on_frame
        self.state = ListenerState.STOPPED
        self._task = Background(self._run, "contactsync-events")

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()
        self.state = ListenerState.STOPPED

    async def _deliver(self, raw: dict[str, Any]) -> None:
        event = Event.from_wire(raw)
        if event.seq <= self.load_cursor():
            return  # a replay overlap: every event reaches the app once
        await self.dispatch(event)
        self.save_cursor(event.seq)

    async def poll_once(self, limit: int = 500) -> int:
        """Read and deliver what is new; returns how many events were delivered."""
        delivered = 0
        while True:
            try:
                page = answer(
                    EventsPage,
                    await self.api.request(
                        "GET", "/v1/events", params={"after": self.load_cursor(), "limit": limit}
                    ),
                )
            except ApiError as exc:
                if not isinstance(exc, EventsTrimmed):
                    raise
                await self._trimmed(exc.details)
                continue
            events = page.events
            for event in events:
                await self._deliver(event.model_dump())
                delivered += 1
            if len(events) < limit:
                return delivered

    async def _trimmed(self, details: Any) -> None:
        """The log no longer reaches back to our cursor: resync, then follow from its end."""
        last = int(details["last_seq"]) if isinstance(details, dict) else 0
        log.info("events before seq %s were trimmed by the server; resyncing", last)
        if self.on_trimmed is not None:
            await self.on_trimmed()
        self.save_cursor(last)

    async def _run(self) -> None:
        while True:
            if self.websocket:
                try:
                    await self._websocket()
                    # a clean close (server restart, 1001/1012): reconnect from the cursor
                    await asyncio.sleep(0.2)
                    continue
                except AuthError:
                    raise
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any socket failure: poll for a while instead
                    log.info("event socket unavailable (%s); polling", type(exc).__name__)
            await self._poll_for(self.websocket_retry if self.websocket else float("inf"))

    async def _poll_for(self, seconds: float) -> None:
        self.state = ListenerState.POLLING
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            try:
                await self.poll_once()
            except AuthError:
                raise
            except ClientError as exc:
                log.info("event poll failed: %s", exc)
            await asyncio.sleep(self.poll_interval)

    async def _websocket(self) -> None:
        from websockets.asyncio.client import connect

        base = self.api.server.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        url = f"{base}/v1/events/ws?after={self.load_cursor()}"
        headers = {"Authorization": f"Bearer {self.api.token}"} if self.api.token else {}
        async with connect(url, additional_headers=headers, open_timeout=10) as ws:
            self.state = ListenerState.WEBSOCKET
            async for message in ws:
                body = json.loads(message)
                items = (
                    body.get("events") if isinstance(body, dict) and "events" in body else [body]
                )
                error = body.get("error") if isinstance(body, dict) else None
                if isinstance(error, dict) and error.get("code") == "events_trimmed":
                    await self._trimmed(error.get("details"))
                    return  # reconnect from the new cursor
                for item in items or []:
                    # event frames are {"op": "event", seq, type, at, data}; "ready", "ping"
                    # and the like carry no event
                    if (
                        isinstance(item, dict)
                        and item.get("op", "event") == "event"
                        and "seq" in item
                        and "type" in item
                    ):
                        await self._deliver(item)
                    elif isinstance(item, dict) and self.on_frame is not None:
                        await self.on_frame(item)  # "ready", "discovery.changed", ...


async def call(callback: Callback, event: Event) -> None:
    """Run an application callback, sync or async; its failure must not stop the stream."""
    try:
        result = callback(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("event callback failed for %s #%s", event.type, event.seq)
