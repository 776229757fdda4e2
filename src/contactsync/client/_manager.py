"""ContactsManager: keeps a device's contacts in sync with the server, incrementally; the
facade an application holds.

It owns the session (token check, the account's local store, logout) and wires three parts:
the address-book sync engine (`_book.AddressBookSync`: scan, plan, upload, watch the source),
the event router (`_router.EventRouter`: the event log to the local store and the callbacks)
and, when the server keeps no books, private discovery (`_private.PrivateDiscovery`). Profiles,
relations, conversations and preferences are handles on their own modules.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import httpx

from contactsync import phone as phones
from contactsync.client._book import AddressBookSync, ProgressCallback
from contactsync.client._conversations import Conversation, Conversations
from contactsync.client._errors import ApiError, AuthError, StateError
from contactsync.client._events import Callback
from contactsync.client._http import ApiClient, RetryPolicy
from contactsync.client._models import ManagerState, SyncMetrics, SyncSummary
from contactsync.client._preferences import Preferences
from contactsync.client._private import PrivateDiscovery
from contactsync.client._profiles import ContactSynchronizer, Profile
from contactsync.client._router import EventRouter
from contactsync.client._sources import ContactSource, content_key
from contactsync.client._store import LocalStore
from contactsync.client._tasks import Background
from contactsync.client._wire import answer, body
from contactsync.protocol import (
    DeviceSyncRequest,
    DiscoveryInfo,
    MeOut,
    OwnProfileOut,
    PatchProfile,
    SyncRequested,
)

T = TypeVar("T")


def default_state_dir() -> Path:
    """Where local stores live unless told otherwise (the user's data folder)."""
    env = os.environ.get("CONTACTSYNC_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "contactsync"


class _Part(Generic[T]):
    """An attribute of the manager kept by one of its parts (`_book`, `_events`): reading and
    setting it on the manager reads and sets the part's, which is what the part runs with."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Part[T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object | None, owner: type) -> _Part[T] | T:
        if obj is None:
            return self
        value: T = getattr(getattr(obj, self.part), self.name)
        return value

    def __set__(self, obj: object, value: T) -> None:
        setattr(getattr(obj, self.part), self.name, value)


class ContactsManager:
    """The async core. `await start()` (or `sync()`), then `force_sync()`, `logout()`, …"""

    # kept by the sync engine
    source: _Part[ContactSource] = _Part("_book")
    region: _Part[str | None] = _Part("_book")
    device_id: _Part[str | None] = _Part("_book")
    batch_size: _Part[int] = _Part("_book")
    on_progress: _Part[ProgressCallback | None] = _Part("_book")
    watch_interval: _Part[float | None] = _Part("_book")
    sync_interval: _Part[float | None] = _Part("_book")
    last_metrics: _Part[SyncMetrics | None] = _Part("_book")
    # kept by the event router
    answer_sync_requests: _Part[bool] = _Part("_events")
    last_sync_answer: _Part[SyncSummary | None] = _Part("_events")

    def __init__(
        self,
        source: ContactSource,
        *,
        server: str,
        token: str,
        region: str | None = None,
        device_id: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 5_000,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        on_progress: ProgressCallback | None = None,
        watch_interval: float | None = 1.0,
        sync_interval: float | None = None,
        events: bool = True,
        websocket: bool | None = None,
        poll_interval: float = 2.0,
        websocket_retry: float = 30.0,
        answer_sync_requests: bool = True,
        discovery: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if discovery not in (None, "stored", "private"):
            raise ValueError("discovery must be 'stored', 'private' or None (the server's mode)")
        valid_region = phones.valid_region(region) if region else None
        if region and valid_region is None:
            raise ValueError(f"unknown region {region!r}")
        # "private": numbers never leave the device (client/_private.py); None: as the
        # server advertises (GET /v1/discovery)
        self.discovery = discovery
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.events_enabled = events
        # an injected in-process transport cannot carry a WebSocket
        self.websocket = (transport is None) if websocket is None else websocket
        self.poll_interval = poll_interval
        self.websocket_retry = websocket_retry
        self.api = ApiClient(server, token, transport=transport, retry=retry)
        self.state = ManagerState.UNINITIALISED
        self.user: dict[str, Any] | None = None
        self.store: LocalStore | None = None
        self.conversations = Conversations(self.api, self._ready_store)
        self.preferences = Preferences(self.api, self._ready_store)
        self._book = AddressBookSync(
            self.api,
            source,
            region=valid_region,
            device_id=device_id,
            batch_size=batch_size,
            on_progress=on_progress,
            watch_interval=watch_interval,
            sync_interval=sync_interval,
        )
        self._events = EventRouter(
            self.api,
            self._store,
            self.conversations,
            self.preferences,
            me=lambda: self.user,
            answer_sync_requests=answer_sync_requests,
        )
        self._private: PrivateDiscovery | None = None
        self._watcher: Background | None = None
        self._lock = asyncio.Lock()

    # --- lifecycle -------------------------------------------------------------------

    @property
    def store_path(self) -> Path | None:
        return None if self.store is None else self.store.path

    async def initialize(self) -> None:
        """Check the token (GET /v1/me) and open this account's local store."""
        if self.state is ManagerState.CLOSED:
            raise StateError("the manager is closed")
        if self.state is not ManagerState.UNINITIALISED:
            return
        raw = await self.api.request("GET", "/v1/me")
        me = answer(MeOut, raw)
        self.user = raw
        if self.region is None:
            self.region = me.region or phones.region_of(me.phone) or None
        # one file per server, user and device: the session's device (two devices of one
        # user on one machine keep their own event cursor and conversations) and the
        # address book's device when books are per device
        account = content_key(self.api.server)[:12]
        devices = [d for d in (me.device_id, self.device_id) if d]
        device = f"-{content_key(*devices)[:12]}" if devices else ""
        path = self.state_dir / f"{account}-u{me.user_id}{device}.sqlite"
        self.store = LocalStore(path)
        if self.discovery is None:
            self.discovery = await self._server_mode()
        if self.discovery == "private" and self._private is None:
            self._private = PrivateDiscovery(
                self.api,
                self._ready_store,
                self._events.dispatch,
                interval=self.poll_interval if not self.websocket else 60.0,
            )
            self._events.private = self._private
        self.store.put_json(
            "session",
            {"server": self.api.server, "user_id": me.user_id, "device_id": self.device_id},
        )
        self.state = ManagerState.READY

    async def _server_mode(self) -> str:
        try:
            info = answer(DiscoveryInfo, await self.api.request("GET", "/v1/discovery"))
        except ApiError as exc:
            if exc.status == 404:
                return "stored"  # a server from before private discovery
            raise
        return info.mode

    async def start(self) -> SyncMetrics:
        """The app became active: initialise, listen for events and changes, sync now."""
        await self.initialize()
        if self.events_enabled:
            self._events.listen(
                websocket=self.websocket,
                poll_interval=self.poll_interval,
                websocket_retry=self.websocket_retry,
            )
        if self._private is not None:
            self._private.start()
        if self._watcher is None:
            run = self._book.watcher(self.sync, lambda: self.state is ManagerState.READY)
            self._watcher = Background(run, "contactsync-watch")
            self._watcher.start()
        return await self.sync()

    async def close(self) -> None:
        """Stop background work and close the store and the HTTP client (state is kept)."""
        await self._stop_background()
        if self.store is not None:
            self.store.close()
        await self.api.aclose()
        self.state = ManagerState.CLOSED

    async def __aenter__(self) -> ContactsManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def logout(self) -> None:
        """Revoke the token, delete the local store file and all sync state, stop listeners
        and background work. The manager is left uninitialised and without a token."""
        await self._stop_background()
        try:
            await self.api.request("DELETE", "/v1/me/session", retry=False)
        except AuthError:
            pass  # already revoked: the goal is reached
        finally:
            async with self._lock:
                if self.store is not None:
                    self.store.delete()
                self.store = None
                self._book.forget()
                if self._private is not None:
                    self._private.reset()  # the stored tags went with the file
                self.user = None
                self.api.token = None
                self.last_metrics = None
                self.last_sync_answer = None
                self.conversations.last_summary = None
                self.state = ManagerState.UNINITIALISED

    def drop_local_database_connection(self) -> None:
        """Close the store file (e.g. before the app is suspended); sync refuses until
        `reconnect_local_database()`."""
        if self.store is None:
            raise StateError("not initialised")
        self.store.close()
        self.state = ManagerState.DISCONNECTED

    def reconnect_local_database(self) -> None:
        if self.store is None:
            raise StateError("not initialised")
        if not self.store.is_open:
            self.store = LocalStore(self.store.path)
            self._book.forget()
        self.state = ManagerState.READY

    async def _stop_background(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await watcher.stop()
        await self._events.stop()
        if self._private is not None:
            await self._private.stop()

    def _store(self) -> LocalStore:
        if self.state is ManagerState.DISCONNECTED:
            raise StateError("the local database connection was dropped; reconnect it first")
        if self.store is None or self.state is not ManagerState.READY:
            raise StateError(f"the manager is {self.state.value}")
        return self.store

    async def _ready_store(self) -> LocalStore:
        await self.initialize()
        return self._store()

    # --- the address book --------------------------------------------------------------

    async def sync(self) -> SyncMetrics:
        """Upload what changed since the last acknowledged sync."""
        await self.initialize()
        async with self._lock:
            return await self._book.run(self._store(), force=False, private=self._private)

    async def force_sync(self) -> SyncMetrics:
        """Re-upload the whole book as a force upload: the server's book becomes exactly it."""
        await self.initialize()
        async with self._lock:
            return await self._book.run(self._store(), force=True, private=self._private)

    def notify_changed(self) -> None:
        """A custom source changed: sync soon (the background watcher picks it up)."""
        self._book.notify_changed()

    def private_matches(self) -> list[dict[str, Any]]:
        """Private discovery: the registered users among the book's numbers as the last sync
        (or a join since) found them: [{user_id, phone, profile}]."""
        if self._private is None:
            raise StateError("private discovery is not in use")
        return self._private.matches(self._store())

    # --- profiles and relations ---------------------------------------------------------

    def profile(self, user_or_phone: int | str) -> Profile:
        """Another user's profile and the caller's relation to it (`save()` sends changes)."""
        return Profile(self.api, user_or_phone)

    def synchronizer(self, **options: Any) -> ContactSynchronizer:
        """The bulk relation synchroniser (numbers read in this manager's region)."""
        options.setdefault("region", self.region)
        return ContactSynchronizer(self.api, **options)

    async def set_my_profile(self, fields: dict[str, tuple[Any, int] | None]) -> dict[str, Any]:
        """Set (value, level) per field of the caller's own profile; None removes a field."""
        patch = body(
            PatchProfile,
            {
                "fields": {
                    name: None if item is None else {"value": item[0], "level": item[1]}
                    for name, item in fields.items()
                }
            },
        )
        raw = await self.api.request("PATCH", "/v1/me/profile", json_body=patch)
        answer(OwnProfileOut, raw)
        return dict(raw)

    # --- conversations and preferences -------------------------------------------------

    def conversation(self, conversation_id: int) -> Conversation:
        """A handle on one conversation (`sync()`, `send()`, `messages()`, …)."""
        return self.conversations.get(conversation_id)

    async def send_sync_request(self, reason: str | None = None) -> dict[str, Any]:
        """Ask this user's other devices to sync now (`sync.requested`); a manager on such a
        device answers by syncing its conversations and preferences."""
        await self.initialize()
        request = None if reason is None else body(DeviceSyncRequest, {"reason": reason})
        raw = await self.api.request("POST", "/v1/devices/sync-request", json_body=request)
        answer(SyncRequested, raw)
        return dict(raw)

    # --- events ------------------------------------------------------------------------

    @property
    def listener_state(self) -> str:
        """How events arrive now: "websocket", "polling" or "stopped"."""
        return self._events.state

    def on(self, event_type: str, callback: Callback) -> None:
        """Call `callback(event)` for each event of this type ("*" for all)."""
        self._events.on(event_type, callback)

    def on_contact_joined(self, callback: Callback) -> None:
        self.on("contact.joined", callback)

    def on_contacts_registered(self, callback: Callback) -> None:
        self.on("contacts.registered", callback)

    def on_profile_updated(self, callback: Callback) -> None:
        self.on("profile.updated", callback)

    def on_relation_changed(self, callback: Callback) -> None:
        self.on("relation.changed", callback)

    def on_message(self, callback: Callback) -> None:
        self.on("message.created", callback)

    def on_conversation(self, callback: Callback) -> None:
        """A conversation the caller was added to (or created on another device)."""
        self.on("conversation.created", callback)

    def on_sync_requested(self, callback: Callback) -> None:
        self.on("sync.requested", callback)

    def on_event(self, callback: Callback) -> None:
        self.on("*", callback)

    async def poll_events(self) -> int:
        """Fetch and dispatch new events now (without the background listener)."""
        await self.initialize()
        return await self._events.poll_once()
