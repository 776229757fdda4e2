"""ContactsManager: keeps a device's contacts in sync with the server, incrementally.

A sync run:
1. resends what the outbox still holds (a crash mid-sync left it there; the same batch_id
   makes the server apply it once);
2. on a new store, reads the server's book once so stale entries get removed;
3. scans the source: records whose content key is known are skipped untouched, new ones are
   parsed and their numbers normalised once (cached by raw string and region), vanished ones
   are forgotten; this updates what the server should have per number;
4. plans batches of the differences (add, rename, destroy) — or, for a force sync, of the
   whole book with `force` and one shared batch_id — writes them to the outbox, sends them,
   and records each as acknowledged only when the server answered.
On a first sync, 3 and 4 overlap: the client parses and normalises the next chunk while the
server works on the last one. A source that denies access is never read as empty: nothing is
uploaded or removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from contactsync import phone as phones
from contactsync.client._conversations import Conversation, Conversations
from contactsync.client._errors import (
    ApiError,
    AuthError,
    BookChanged,
    ClientError,
    QuotaExceeded,
    StateError,
    TooManyContacts,
)
from contactsync.client._events import Callback, EventListener, call
from contactsync.client._http import ApiClient, RetryPolicy
from contactsync.client._models import (
    Contact,
    Event,
    InvalidEntry,
    ManagerState,
    SourceProblem,
    SyncMetrics,
    SyncProgress,
    SyncSummary,
)
from contactsync.client._preferences import Preferences
from contactsync.client._private import PrivateDiscovery
from contactsync.client._profiles import ContactSynchronizer, Profile
from contactsync.client._sources import ContactSource, content_key
from contactsync.client._store import LocalStore
from contactsync.client._tasks import cancel
from contactsync.protocol import MAX_NAME

log = logging.getLogger("contactsync.client")

ProgressCallback = Callable[[SyncProgress], None]
_CHUNK = 5_000  # records parsed and stored per step, bounding memory for huge books
_BIG_SCAN = 20_000
_FIRST_CHUNK = 1_000  # a first sync's first chunk (the next ones double, up to _CHUNK)
_PREPARE_SLICE = 250  # records parsed and normalised between two turns of the event loop
_SLICE = 2_000  # records scanned between two turns of the event loop
_LISTING_ATTEMPTS = 5  # readings of the server's book that another device's upload may spoil


def default_state_dir() -> Path:
    """Where local stores live unless told otherwise (the user's data folder)."""
    env = os.environ.get("CONTACTSYNC_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "contactsync"


class ContactsManager:
    """The async core. `await start()` (or `sync()`), then `force_sync()`, `logout()`, …"""

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
        # "private": numbers never leave the device (client/_private.py); None: as the
        # server advertises (GET /v1/discovery)
        self.discovery = discovery
        self._private: PrivateDiscovery | None = None
        self.source = source
        self.region = phones.valid_region(region) if region else None
        if region and self.region is None:
            raise ValueError(f"unknown region {region!r}")
        self.device_id = device_id
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.batch_size = batch_size
        self.on_progress = on_progress
        self.watch_interval = watch_interval
        self.sync_interval = sync_interval
        self.events_enabled = events
        # an injected in-process transport cannot carry a WebSocket
        self.websocket = (transport is None) if websocket is None else websocket
        self.poll_interval = poll_interval
        self.websocket_retry = websocket_retry
        self.api = ApiClient(server, token, transport=transport, retry=retry)
        self.state = ManagerState.UNINITIALISED
        self.user: dict[str, Any] | None = None
        self.store: LocalStore | None = None
        self.last_metrics: SyncMetrics | None = None
        self._lock = asyncio.Lock()
        self._callbacks: dict[str, list[Callback]] = {}
        self._listener: EventListener | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._changed = asyncio.Event()
        self._planned = 0  # entries planned in the current run, for progress reports
        self._rewritten: list[dict[str, Any]] = []  # the current run's metrics.rewritten
        self._known: set[str] | None = None  # content keys in the store after the last scan
        self.conversations = Conversations(self.api, self._ready_store)
        self.preferences = Preferences(self.api, self._ready_store)
        self.answer_sync_requests = answer_sync_requests
        self.last_sync_answer: SyncSummary | None = None
        self._answers: set[asyncio.Task[None]] = set()

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
        me = await self.api.request("GET", "/v1/me")
        self.user = me
        if self.region is None:
            self.region = me.get("region") or phones.region_of(me["phone"]) or None
        # one file per server, user and device: the session's device (two devices of one
        # user on one machine keep their own event cursor and conversations) and the
        # address book's device when books are per device
        account = content_key(self.api.server)[:12]
        devices = [d for d in (me.get("device_id"), self.device_id) if d]
        device = f"-{content_key(*devices)[:12]}" if devices else ""
        path = self.state_dir / f"{account}-u{me['user_id']}{device}.sqlite"
        self.store = LocalStore(path)
        if self.discovery is None:
            self.discovery = await self._server_mode()
        if self.discovery == "private" and self._private is None:
            self._private = PrivateDiscovery(
                self.api,
                self._ready_store,
                self._dispatch,
                interval=self.poll_interval if not self.websocket else 60.0,
            )
        self.store.put_json(
            "session",
            {"server": self.api.server, "user_id": me["user_id"], "device_id": self.device_id},
        )
        self.state = ManagerState.READY

    async def _server_mode(self) -> str:
        try:
            info = await self.api.request("GET", "/v1/discovery")
        except ApiError as exc:
            if exc.status == 404:
                return "stored"  # a server from before private discovery
            raise
        return str(info.get("mode") or "stored")

    async def start(self) -> SyncMetrics:
        """The app became active: initialise, listen for events and changes, sync now."""
        await self.initialize()
        if self.events_enabled and self._listener is None:
            self._listener = EventListener(
                self.api,
                load_cursor=self._load_cursor,
                save_cursor=self._save_cursor,
                dispatch=self._dispatch,
                websocket=self.websocket,
                poll_interval=self.poll_interval,
                websocket_retry=self.websocket_retry,
                on_trimmed=self._resync,
                on_frame=self._on_frame,
            )
            self._listener.start()
        if self._private is not None:
            self._private.start()
        if not self._tasks:
            # the state to compare against is taken now, not when the task first runs
            watch = self._watch(self.source.fingerprint(), self.source.has_access())
            self._tasks.append(asyncio.create_task(watch, name="contactsync-watch"))
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
                self._known = None
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
            self._known = None
        self.state = ManagerState.READY

    async def _stop_background(self) -> None:
        tasks, self._tasks = self._tasks + list(self._answers), []
        self._answers.clear()
        await cancel(*tasks)
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._private is not None:
            await self._private.stop()

    # --- triggers ----------------------------------------------------------------------

    def notify_changed(self) -> None:
        """A custom source changed: sync soon (the background watcher picks it up)."""
        self._changed.set()

    async def _watch(self, last_fp: str | None, had_access: bool) -> None:
        """File changes, access granted, the optional interval: each triggers a sync."""
        interval = self.watch_interval or 1.0
        last_sync = time.monotonic()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), interval)
            due = self._changed.is_set()
            self._changed.clear()
            access = self.source.has_access()
            if access and not had_access:
                due = True
            had_access = access
            if self.watch_interval is not None:
                fp = self.source.fingerprint()
                if fp is not None and fp != last_fp:
                    due = True
                last_fp = fp
            if (
                self.sync_interval is not None
                and time.monotonic() - last_sync >= self.sync_interval
            ):
                due = True
            waited = self.last_metrics
            if waited is not None and waited.waiting and time.time() >= (waited.resume_at or 0):
                due = True  # the discovery quota has refilled: send what waited
            if due and self.state is ManagerState.READY:
                last_sync = time.monotonic()
                try:
                    await self.sync()
                except ClientError as exc:
                    log.warning("background sync failed: %s", exc)

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
        body = {
            name: None if item is None else {"value": item[0], "level": item[1]}
            for name, item in fields.items()
        }
        return dict(await self.api.request("PATCH", "/v1/me/profile", json_body={"fields": body}))

    # --- conversations and preferences -------------------------------------------------

    def conversation(self, conversation_id: int) -> Conversation:
        """A handle on one conversation (`sync()`, `send()`, `messages()`, …)."""
        return self.conversations.get(conversation_id)

    async def send_sync_request(self, reason: str | None = None) -> dict[str, Any]:
        """Ask this user's other devices to sync now (`sync.requested`); a manager on such a
        device answers by syncing its conversations and preferences."""
        await self.initialize()
        body = {"reason": reason} if reason is not None else None
        return dict(await self.api.request("POST", "/v1/devices/sync-request", json_body=body))

    async def _ready_store(self) -> LocalStore:
        await self.initialize()
        return self._store()

    def _asked_to_sync(self, event: Event) -> bool:
        if event.type != "sync.requested" or not self.answer_sync_requests:
            return False
        mine = (self.user or {}).get("device_id")
        asked = event.data.get("devices")
        return event.data.get("device_id") != mine and (not asked or mine in asked)

    async def _answer_sync_request(self) -> None:
        try:
            summary = await self.conversations.sync_all(consent=("allowed", "unknown"))
            await self.preferences.sync()
            self.last_sync_answer = summary
        except ClientError as exc:
            log.warning("answering a sync request failed: %s", exc)

    # --- events ------------------------------------------------------------------------

    @property
    def listener_state(self) -> str:
        """How events arrive now: "websocket", "polling" or "stopped"."""
        return "stopped" if self._listener is None else self._listener.state.value

    def on(self, event_type: str, callback: Callback) -> None:
        """Call `callback(event)` for each event of this type ("*" for all)."""
        self._callbacks.setdefault(event_type, []).append(callback)

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
        listener = self._listener or EventListener(
            self.api,
            load_cursor=self._load_cursor,
            save_cursor=self._save_cursor,
            dispatch=self._dispatch,
            websocket=False,
            on_trimmed=self._resync,
        )
        return await listener.poll_once()

    async def _resync(self) -> None:
        """The server's event log was trimmed past our cursor (retention): fetch in full what
        the lost events would have brought (conversations of every consent with their
        messages, preferences); then the listener follows from the log's end."""
        await self.conversations.sync_all(consent=["allowed", "unknown", "denied"])
        await self.preferences.sync()

    def _load_cursor(self) -> int:
        return int(self._store().get("event_cursor") or 0)

    def private_matches(self) -> list[dict[str, Any]]:
        """Private discovery: the registered users among the book's numbers as the last sync
        (or a join since) found them: [{user_id, phone, profile}]."""
        if self._private is None:
            raise StateError("private discovery is not in use")
        return self._private.matches(self._store())

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        """Socket frames that are not events: the private-discovery filter moved."""
        if self._private is not None and frame.get("op") in ("ready", "discovery.changed"):
            self._private.changed()

    def _save_cursor(self, seq: int) -> None:
        self._store().put("event_cursor", str(seq))

    async def _dispatch(self, event: Event) -> None:
        # the local store first, so a callback reading it sees the event applied
        await self.conversations.apply(event)
        await self.preferences.apply(event)
        if self._asked_to_sync(event):
            task = asyncio.create_task(self._answer_sync_request(), name="contactsync-answer")
            self._answers.add(task)
            task.add_done_callback(self._answers.discard)
        for callback in self._callbacks.get(event.type, []) + self._callbacks.get("*", []):
            await call(callback, event)

    # --- sync --------------------------------------------------------------------------

    def _store(self) -> LocalStore:
        if self.state is ManagerState.DISCONNECTED:
            raise StateError("the local database connection was dropped; reconnect it first")
        if self.store is None or self.state is not ManagerState.READY:
            raise StateError(f"the manager is {self.state.value}")
        return self.store

    async def sync(self) -> SyncMetrics:
        """Upload what changed since the last acknowledged sync."""
        await self.initialize()
        async with self._lock:
            return await self._run(force=False)

    async def force_sync(self) -> SyncMetrics:
        """Re-upload the whole book as a force upload: the server's book becomes exactly it."""
        await self.initialize()
        async with self._lock:
            return await self._run(force=True)

    async def _run(self, *, force: bool) -> SyncMetrics:
        store = self._store()
        metrics = SyncMetrics(forced=force)
        self._rewritten = metrics.rewritten
        self._planned = store.outbox_contacts()
        started = time.perf_counter()
        bytes_before = self.api.bytes_sent
        try:
            if not self.source.has_access():
                metrics.error = "no_access"
                return metrics
            if self._private is not None:
                # nothing is uploaded: the book is matched through the OPRF filter
                await self._scan_and_send(store, metrics, force, upload=False)
                await self._private.sync(store, metrics, full=force)
                return metrics
            interrupted_force = store.has_force_outbox()
            await self._send_outbox(store, metrics)  # what a crash left behind
            store.unqueue_all()
            if force and interrupted_force:
                # The force upload a crash interrupted is complete now: the server's book is
                # the whole book as planned then. Uploading it all again would send it twice;
                # what changed since goes out as a normal diff.
                force = False
            if store.get("seeded") is None:
                await self._seed(store)
            await self._scan_and_send(store, metrics, force)
        except AuthError:
            raise
        except QuotaExceeded as exc:
            if store.is_open:
                self._wait_for_quota(store, metrics, exc)
            else:
                metrics.error = str(exc)
        except ClientError as exc:
            metrics.error = str(exc)
        finally:
            if metrics.error and metrics.error != "no_access" and store.is_open:
                # Contacts of the book the server has not acknowledged (they stay queued for
                # the next run): counted like `total`, in contacts, so never more than it.
                # (records the source could not read count as failed too)
                unreadable = sum(1 for entry in metrics.invalid if entry.phone is None)
                metrics.total = metrics.total or store.count_contacts()
                metrics.failed = store.count_unsynced_contacts() + unreadable
            metrics.duration = time.perf_counter() - started
            metrics.bytes = self.api.bytes_sent - bytes_before
            self.last_metrics = metrics
            if store.is_open:
                store.put_json("last_metrics", metrics.as_dict())
        return metrics

    @staticmethod
    def _wait_for_quota(store: LocalStore, metrics: SyncMetrics, exc: QuotaExceeded) -> None:
        """Not a failure: the server checks no more new numbers for now. What it has not
        taken stays queued and goes on the first sync after `resume_at` (a started manager's
        background watcher runs that sync by itself)."""
        details = exc.details if isinstance(exc.details, dict) else {}
        wait = exc.retry_after or 0.0
        metrics.total = metrics.total or store.count_contacts()
        metrics.waiting = store.count_unsynced_contacts()
        metrics.retry_after = wait
        metrics.resume_at = time.time() + wait
        metrics.quota = details or None

    async def _seed(self, store: LocalStore) -> None:
        """A new store: learn the server's current book, so the diff can remove stale entries."""
        for attempt in range(_LISTING_ATTEMPTS):
            try:
                book = await self._server_book()
                break
            except ApiError as exc:
                # the book changed while we paged through it (another device's upload):
                # a listing mixing both versions would be wrong, so read it again
                if not isinstance(exc, BookChanged) or attempt + 1 == _LISTING_ATTEMPTS:
                    raise
        with store.transaction():
            store.seed_server_book(book)
            store.put("seeded", "1")

    async def _server_book(self) -> list[tuple[str, str | None]]:
        """The server's book, page by page, all of one version of it (409 book_changed if it
        changed meanwhile)."""
        cursor: str | None = None
        book: list[tuple[str, str | None]] = []
        while True:
            page = await self.api.request(
                "GET",
                "/v1/addressbook",
                params={"device_id": self.device_id, "cursor": cursor, "limit": 5000},
            )
            book.extend((c["phone"], c.get("name")) for c in page["contacts"])
            cursor = page.get("next_cursor")
            if not cursor or not page["contacts"]:
                return book

    async def _scan_and_send(
        self, store: LocalStore, metrics: SyncMetrics, force: bool, *, upload: bool = True
    ) -> None:
        """Scan the source and upload the differences, overlapping the two.

        New records are read, parsed and normalised chunk by chunk (the CPU-bound part, in
        slices between which the event loop gets a turn), each chunk is stored, and a sender
        task sends its batches, so the server works on one chunk while the client prepares
        the next. Each chunk commits on its own: a crash keeps what was stored, and the next
        run resumes from there.
        """
        region = self.region or ""
        if store.get("region") not in (None, region):
            # numbers without a country code now read differently: read everything again
            with store.transaction():
                store.refresh_entries(store.remove_contacts(list(store.contact_keys())))
                store.put("fingerprint", None)
            self._known = None
        store.put("region", region)
        fingerprint = self.source.fingerprint()
        if not force and fingerprint is not None and fingerprint == store.get("fingerprint"):
            metrics.total = metrics.unchanged = store.count_contacts()
        else:
            # the keys stored by the last scan are kept in memory: reading 100,000 of them
            # back from SQLite on every resync would cost more than the scan itself
            known = self._known if self._known is not None else store.contact_keys()
            self._known = None  # until this scan has completed
            failure: list[ClientError] = []
            # batches go out while the source is read only on a first scan, where everything
            # is an addition; later scans first learn which records vanished, so an edited
            # card (old version gone, new one added) is sent once, as a rename
            stream = upload and not force and not known
            seen = await self._pipeline(store, metrics, known, send=stream, failure=failure)
            with store.transaction():
                gone = [key for key in known if key not in seen]
                store.refresh_entries(store.remove_contacts(gone))
                store.put("fingerprint", fingerprint)
            self._known = seen
            if len(seen) - len(known) > _BIG_SCAN:
                # the numbers are in the local store's cache now; the phone module's
                # process-wide LRU would keep a second copy of a huge book (~40 MB per 100k)
                phones.cache_clear()
            metrics.total = len(seen)
            metrics.unchanged = len(seen & known)
            if failure:
                # the source was still read to the end and stored: the next run only sends
                self._collect_invalid(store, metrics)
                raise failure[0]
        self._collect_invalid(store, metrics)
        if not upload:
            return
        with store.transaction():
            self._plan(store, force)
        await self._send_outbox(store, metrics)

    def _collect_invalid(self, store: LocalStore, metrics: SyncMetrics) -> None:
        for cid, name, bad in store.invalid_entries():
            for item in bad:
                metrics.invalid.append(
                    InvalidEntry(cid, name, item.get("phone"), item["reason"], item.get("where"))
                )
                if item.get("phone") is None:
                    # a record the source could not read (not a number the phone module
                    # refused): whatever numbers it held are not synced, so it failed
                    metrics.failed += 1

    async def _pipeline(
        self,
        store: LocalStore,
        metrics: SyncMetrics,
        known: set[str],
        *,
        send: bool,
        failure: list[ClientError],
    ) -> set[str]:
        region = self.region or ""
        chunk_size = min(_CHUNK, self.batch_size)
        # a first sync on a new store has nothing cached: skip the look-ups
        cached = store.has_numbers(region)

        # a sender task drains the outbox while this loop reads and stores the next chunk
        wake = asyncio.Event()
        reading = True

        async def sender() -> None:
            while True:
                await wake.wait()
                wake.clear()
                try:
                    while store.has_outbox():
                        await self._send_outbox(store, metrics)
                except ClientError as exc:  # keep reading the source; send next time
                    failure.append(exc)
                    return
                if not reading:
                    return

        sending = asyncio.create_task(sender()) if send else None
        try:
            seen: set[str] = set()
            chunk: list[tuple[str, Any]] = []
            # a first sync sends each chunk as it is stored: the first is small so the server
            # starts early, the next ones double (fewer, larger requests cost the server less)
            size = min(chunk_size, _FIRST_CHUNK) if send else chunk_size
            records = iter(self.source.scan())
            while True:
                done = await self._read(records, seen, known, chunk, size)
                if chunk:
                    rows, fresh = await self._prepare_in_slices(cached, region, chunk)
                    chunk = []
                    size = min(chunk_size, size * 2)
                    with store.transaction():
                        store.cache_numbers(region, fresh)
                        numbers = store.add_contacts(rows)
                        store.refresh_entries(numbers)
                        if sending is not None and not sending.done():
                            # this chunk's numbers only: the rest (renames of numbers in
                            # flight, removals of what the server held before) is planned
                            # after the scan
                            self._plan(store, False, numbers)
                            wake.set()
                    # back-pressure: when the server is slower than the scan, wait instead
                    # of piling the whole book into the outbox
                    while sending is not None and not sending.done() and store.outbox_rows() > 2:
                        await asyncio.sleep(0.002)
                if done:
                    break
            reading = False
            wake.set()
            if sending is not None:
                await sending
            for exc in failure:
                if isinstance(exc, AuthError):
                    raise exc
            return seen
        finally:
            await cancel(sending)

    @staticmethod
    async def _read(
        records: Iterator[tuple[str, Any]],
        seen: set[str],
        known: set[str],
        chunk: list[tuple[str, Any]],
        size: int,
    ) -> bool:
        """Add new records to `chunk` until it holds `size`; True when the source is done.
        The loop is given a turn every _SLICE records (a request in flight goes on)."""
        count = 0
        for key, record in records:
            seen.add(key)
            if key not in known:
                chunk.append((key, record))
                if len(chunk) >= size:
                    return False
            count += 1
            if count % _SLICE == 0:
                await asyncio.sleep(0)
        return True

    async def _prepare_in_slices(
        self, cached: bool, region: str, chunk: list[tuple[str, Any]]
    ) -> tuple[list[tuple[str, str, str | None, list[str], list[Any] | None]], list[Any]]:
        """`_prepare` a few hundred records at a time, giving the loop a turn in between:
        parsing and normalising is the client's CPU-bound part, and it runs on the event loop
        (a worker thread would fight the loop for the GIL: every SQLite call and socket
        operation of the loop would wait for it to let go, milliseconds each time)."""
        rows: list[tuple[str, str, str | None, list[str], list[Any] | None]] = []
        fresh: list[Any] = []
        for i in range(0, len(chunk), _PREPARE_SLICE):
            part_rows, part_fresh = self._prepare(cached, region, chunk[i : i + _PREPARE_SLICE])
            rows += part_rows
            fresh += part_fresh
            await asyncio.sleep(0)
        return rows, fresh

    def _prepare(
        self, cached: bool, region: str, chunk: list[tuple[str, Any]]
    ) -> tuple[list[tuple[str, str, str | None, list[str], list[Any] | None]], list[Any]]:
        """Parse records and normalise their numbers (cache first): rows for the store."""
        parsed: list[tuple[str, Contact | SourceProblem]] = [
            (key, self.source.parse(record)) for key, record in chunk
        ]
        raws = {p for _, c in parsed if isinstance(c, Contact) for p in c.phones}
        results = self._store().cached_numbers(list(raws), region) if cached else {}
        fresh = []
        for raw in raws:
            if raw not in results:
                outcome = phones.try_normalize(raw, region or None)
                results[raw] = (outcome.e164, outcome.reason)
                fresh.append((raw, outcome.e164, outcome.reason))
                if outcome.rewritten:
                    self._rewritten.append({"phone": raw, "e164": outcome.e164})
        rows: list[tuple[str, str, str | None, list[str], list[Any] | None]] = []
        for key, item in parsed:
            if isinstance(item, SourceProblem):
                bad = [
                    {
                        "phone": None,
                        "reason": item.reason,
                        "where": item.where,
                        "message": item.message,
                    }
                ]
                rows.append((key, item.where, item.name, [], bad))
                continue
            good: list[str] = []
            invalid: list[dict[str, Any]] = []
            for raw in item.phones:
                e164, reason = results[raw]
                if e164 is None:
                    invalid.append(phones.invalid_entry(raw, reason or "invalid_number"))
                elif e164 not in good:
                    good.append(e164)
            rows.append((key, item.id, item.name, good, invalid or None))
        return rows, fresh

    def _plan(self, store: LocalStore, force: bool, numbers: set[str] | None = None) -> None:
        base: dict[str, Any] = {"region": self.region, "device_id": self.device_id}
        base = {k: v for k, v in base.items() if v is not None}
        if force:
            wanted = store.wanted_entries()
            batch_id = "f-" + uuid.uuid4().hex
            count = max(1, -(-len(wanted) // self.batch_size))
            for i in range(count):
                part = wanted[i * self.batch_size : (i + 1) * self.batch_size]
                final = i == count - 1
                body = {
                    **base,
                    "contacts": [_contact(phone, name) for phone, name in part],
                    "force": True,
                    "final": final,
                    "batch_id": batch_id,
                }
                store.enqueue([(batch_id, True, final, body)])
            self._planned += len(wanted)
            return
        changes = store.take_dirty_entries(numbers)
        for i in range(0, len(changes), self.batch_size):
            batch_id = "b-" + uuid.uuid4().hex
            contacts = [
                _contact(phone, name) if want else {"phone": phone, "destroy": True}
                for phone, want, name in changes[i : i + self.batch_size]
            ]
            body = {**base, "contacts": contacts, "batch_id": batch_id}
            store.enqueue([(batch_id, False, True, body)])
        self._planned += len(changes)

    async def _send_outbox(self, store: LocalStore, metrics: SyncMetrics) -> None:
        after = 0
        while (row := store.next_outbox(after)) is not None:
            seq, _batch_id, force, final, body = row
            after = seq
            try:
                result = await self.api.request("POST", "/v1/addressbook", json_body=body)
            except ApiError as exc:
                if isinstance(exc, TooManyContacts) and exc.max:
                    # the server's limit is lower than our batch size: plan again, smaller
                    self.batch_size = exc.max
                    with store.transaction():
                        store.clear_outbox()
                        store.unqueue_all()
                        self._plan(store, force)
                    await self._send_outbox(store, metrics)
                    return
                if not exc.refused:
                    raise
                # refused for good (ApiError.refused): drop it, the entries stay
                # dirty for the next run, and their contacts are reported as failed
                metrics.error = str(exc)
                with store.transaction():
                    store.dequeue(seq)
                continue
            sent = [
                (c["phone"], 0 if c.get("destroy") else 1, c.get("name")) for c in body["contacts"]
            ]
            with store.transaction():
                if force:
                    if final:
                        store.acknowledge_force()
                else:
                    store.acknowledge(sent)
                store.dequeue(seq)
            metrics.batches += 1
            metrics.uploaded += len(sent)
            metrics.created += int(result.get("created", 0))
            metrics.updated += int(result.get("updated", 0))
            metrics.deleted += int(result.get("deleted", 0))
            metrics.registered.extend(result.get("registered", []))
            for item in result.get("invalid", []):
                metrics.invalid.append(
                    InvalidEntry(None, None, item.get("phone"), str(item.get("reason")), "server")
                )
            if self.on_progress is not None:
                # the total grows while the scan finds more to send
                total = max(self._planned, metrics.uploaded)
                self.on_progress(SyncProgress(metrics.uploaded, total, metrics.batches, metrics))


def _contact(phone: str, name: str | None) -> dict[str, Any]:
    name = (name or "").strip()[:MAX_NAME]
    return {"phone": phone, "name": name} if name else {"phone": phone}
