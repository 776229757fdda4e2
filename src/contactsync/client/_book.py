"""The address-book sync engine: keeps the server's copy of a device's book equal to the source.

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
uploaded or removed. With private discovery nothing is uploaded: the scan fills the local
store and `PrivateDiscovery.sync` matches it.

The engine knows nothing of events, conversations or the session: `ContactsManager` (the
facade) owns the store's lifecycle and serialises runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from contactsync import phone as phones
from contactsync.client._errors import (
    ApiError,
    AuthError,
    BookChanged,
    ClientError,
    QuotaExceeded,
    TooManyContacts,
)
from contactsync.client._http import ApiClient
from contactsync.client._models import (
    Contact,
    InvalidEntry,
    SourceProblem,
    SyncMetrics,
    SyncProgress,
)
from contactsync.client._numbers import Numbers, Result
from contactsync.client._private import PrivateDiscovery
from contactsync.client._sources import ContactSource, Records
from contactsync.client._store import LocalStore
from contactsync.client._tasks import cancel
from contactsync.client._wire import answer, body
from contactsync.protocol import MAX_NAME, AddressBookPage, AddressBookResult, AddressBookUpload

log = logging.getLogger("contactsync.client")

ProgressCallback = Callable[[SyncProgress], None]
_CHUNK = 5_000  # records parsed and stored per step, bounding memory for huge books
_BIG_SCAN = 20_000
_FIRST_CHUNK = 1_000  # a first sync's first chunk (the next ones double, up to _CHUNK)
_PREPARE_SLICE = 250  # records parsed and normalised between two turns of the event loop
_SLICE = 2_000  # records scanned between two turns of the event loop
_LISTING_ATTEMPTS = 5  # readings of the server's book that another device's upload may spoil
_CHECKPOINT_ROWS = 5_000  # rows written by a run after which it checkpoints the store's log


class AddressBookSync:
    """One device's book: `run()` syncs it once, `watch()` runs a sync on each trigger."""

    def __init__(
        self,
        api: ApiClient,
        source: ContactSource,
        *,
        region: str | None,
        device_id: str | None,
        batch_size: int,
        on_progress: ProgressCallback | None,
        watch_interval: float | None,
        sync_interval: float | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.clock = clock  # wall time, for the quota's resume_at (tests move it on)
        self.source = source
        self.region = region
        self.device_id = device_id
        self.batch_size = batch_size
        self.on_progress = on_progress
        self.watch_interval = watch_interval
        self.sync_interval = sync_interval
        self.last_metrics: SyncMetrics | None = None
        self._changed = asyncio.Event()
        self._planned = 0  # entries planned in the current run, for progress reports
        self._rewritten: list[dict[str, Any]] = []  # the current run's metrics.rewritten
        self._known: set[str] | None = None  # content keys in the store after the last scan

    def forget(self) -> None:
        """The store was closed or deleted: what the last scan left in memory is stale."""
        self._known = None

    # --- triggers ----------------------------------------------------------------------

    def notify_changed(self) -> None:
        """A custom source changed: sync soon (the watcher picks it up)."""
        self._changed.set()

    def watcher(
        self, sync: Callable[[], Awaitable[object]], ready: Callable[[], bool]
    ) -> Callable[[], Coroutine[Any, Any, None]]:
        """The watch loop for a background task; the state to compare against (the source's
        fingerprint and access) is taken now, not when the task first runs."""
        fingerprint, access = self.source.fingerprint(), self.source.has_access()
        return functools.partial(self._watch, fingerprint, access, sync, ready)

    async def _watch(
        self,
        last_fp: str | None,
        had_access: bool,
        sync: Callable[[], Awaitable[object]],
        ready: Callable[[], bool],
    ) -> None:
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
            if waited is not None and waited.waiting and self.clock() >= (waited.resume_at or 0):
                due = True  # the discovery quota has refilled: send what waited
            if due and ready():
                last_sync = time.monotonic()
                try:
                    await sync()
                except ClientError as exc:
                    log.warning("background sync failed: %s", exc)

    # --- a run -------------------------------------------------------------------------

    async def run(
        self, store: LocalStore, *, force: bool, private: PrivateDiscovery | None = None
    ) -> SyncMetrics:
        """Sync once (the caller holds the store open and runs one at a time)."""
        metrics = SyncMetrics(forced=force)
        self._rewritten = metrics.rewritten
        self._planned_now(store, metrics)  # what a crash left queued goes first
        started = time.perf_counter()
        bytes_before = self.api.bytes_sent
        changes_before = store.changes if store.is_open else 0
        try:
            if not self.source.has_access():
                metrics.error = "no_access"
                return metrics
            if private is not None:
                # nothing is uploaded: the book is matched through the OPRF filter
                await self._scan_and_send(store, metrics, force, upload=False)
                await private.sync(store, metrics, full=force)
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
                if store.changes - changes_before >= _CHECKPOINT_ROWS:
                    store.checkpoint()  # now, rather than in the next (small) run
        return metrics

    def _wait_for_quota(self, store: LocalStore, metrics: SyncMetrics, exc: QuotaExceeded) -> None:
        """Not a failure: the server checks no more new numbers for now. What it has not
        taken stays queued and goes on the first sync after `resume_at` (a started manager's
        background watcher runs that sync by itself)."""
        details = exc.details if isinstance(exc.details, dict) else {}
        wait = exc.retry_after or 0.0
        metrics.total = metrics.total or store.count_contacts()
        metrics.waiting = store.count_unsynced_contacts()
        metrics.retry_after = wait
        metrics.resume_at = self.clock() + wait
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
            page = answer(
                AddressBookPage,
                await self.api.request(
                    "GET",
                    "/v1/addressbook",
                    params={"device_id": self.device_id, "cursor": cursor, "limit": 5000},
                ),
            )
            book.extend((c.phone, c.name) for c in page.contacts)
            cursor = page.next_cursor
            if not cursor or not page.contacts:
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
        stored_region = store.get("region")
        if stored_region not in (None, region):
            # numbers without a country code now read differently: read everything again
            with store.transaction():
                store.refresh_entries(store.remove_contacts(list(store.contact_keys())))
                store.put("fingerprint", None)
            self._known = None
        if stored_region != region:
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
            # card (old version gone, new one added) is sent once, as a rename. With a
            # progress callback the whole scan is planned first instead: the total it is told
            # is then known before the first batch and never grows (issue 16.7)
            stream = upload and not force and not known and self.on_progress is None
            seen = await self._pipeline(store, metrics, known, send=stream, failure=failure)
            with store.transaction():
                gone = list(known - seen)
                store.refresh_entries(store.remove_contacts(gone))
                store.put("fingerprint", fingerprint)
            self._known = seen
            if len(seen) - len(known) > _BIG_SCAN:
                # the numbers are in the local store's cache now; the phone module's
                # process-wide LRU would keep a second copy of a huge book (~40 MB per 100k)
                phones.cache_clear()
            metrics.total = len(seen)
            metrics.unchanged = len(known) - len(gone)  # the records seen again
            if failure:
                # the source was still read to the end and stored: the next run only sends
                self._collect_invalid(store, metrics)
                raise failure[0]
        self._collect_invalid(store, metrics)
        if not upload:
            return
        with store.transaction():
            self._plan(store, force)
        self._planned_now(store, metrics)
        await self._send_outbox(store, metrics)

    def _planned_now(self, store: LocalStore, metrics: SyncMetrics) -> None:
        """The run's total for progress reports: what it sent, and what is queued to go."""
        if self.on_progress is not None:  # (a sum over the outbox's bodies: only if told)
            self._planned = metrics.uploaded + store.outbox_contacts()

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
        numbers = Numbers()
        pending: _Chunk | None = None
        try:
            scan = _Scan(self.source.scan_lists(), known)
            chunk: list[tuple[str, Any]] = []
            # a first sync sends each chunk as it is stored: the first is small so the server
            # starts early, the next ones double (fewer, larger requests cost the server less)
            size = min(chunk_size, _FIRST_CHUNK) if send else chunk_size
            # the numbers of chunk k+1 are read (on a worker process when the chunk is big)
            # while chunk k is stored and sent
            while True:
                done = await scan.read(chunk, size)
                if chunk:
                    if len(chunk) >= _FIRST_CHUNK and not done and numbers.parallel(chunk_size):
                        numbers.prepare()  # a big scan: have the worker ready by chunk 2
                    parsed = await self._parse(store, cached, region, chunk, numbers)
                    chunk = []
                    size = min(chunk_size, size * 2)
                    ready, pending = pending, parsed
                    if ready is not None:
                        await self._store_chunk(store, region, ready, sending, wake)
                    if not parsed.parallel:  # read in process: nothing to overlap with
                        pending = None
                        await self._store_chunk(store, region, parsed, sending, wake)
                if done:
                    break
            ready, pending = pending, None
            if ready is not None:
                await self._store_chunk(store, region, ready, sending, wake)
            reading = False
            wake.set()
            if sending is not None:
                await sending
            for exc in failure:
                if isinstance(exc, AuthError):
                    raise exc
            return scan.seen
        finally:
            await cancel(sending, pending.reading if pending is not None else None)
            await numbers.close()

    async def _parse(
        self,
        store: LocalStore,
        cached: bool,
        region: str,
        chunk: list[tuple[str, Any]],
        numbers: Numbers,
    ) -> _Chunk:
        """Parse records a few hundred at a time (the loop gets a turn in between), take
        what the store's cache knows of their numbers and start reading the rest."""
        parsed: list[tuple[str, Contact | SourceProblem]] = []
        for i in range(0, len(chunk), _PREPARE_SLICE):
            parsed += [
                (key, self.source.parse(record)) for key, record in chunk[i : i + _PREPARE_SLICE]
            ]
            await asyncio.sleep(0)
        raws = list({p: None for _, c in parsed if isinstance(c, Contact) for p in c.phones})
        known = store.cached_numbers(raws, region) if cached else {}
        todo = [raw for raw in raws if raw not in known]
        reading = asyncio.create_task(numbers.read(todo, region or None))
        return _Chunk(parsed, known, todo, reading, numbers.parallel(len(todo)))

    async def _store_chunk(
        self,
        store: LocalStore,
        region: str,
        chunk: _Chunk,
        sending: asyncio.Task[None] | None,
        wake: asyncio.Event,
    ) -> None:
        """Store a parsed chunk once its numbers are read; on a first sync, plan its upload
        and wake the sender."""
        results = chunk.known
        fresh = []
        for raw, (e164, reason, rewritten) in zip(chunk.todo, await chunk.reading, strict=True):
            results[raw] = (e164, reason)
            fresh.append((raw, e164, reason))
            if rewritten:
                self._rewritten.append({"phone": raw, "e164": e164})
        rows = _rows(chunk.parsed, results)
        with store.transaction():
            store.cache_numbers(region, fresh)
            numbers = store.add_contacts(rows)
            store.refresh_entries(numbers)
            if sending is not None and not sending.done():
                # this chunk's numbers only: the rest (renames of numbers in flight, removals
                # of what the server held before) is planned after the scan
                self._plan(store, False, numbers)
                wake.set()
        # back-pressure: when the server is slower than the scan, wait instead of piling the
        # whole book into the outbox
        while sending is not None and not sending.done() and store.outbox_rows() > 2:
            await asyncio.sleep(0.002)

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
                upload = body(
                    AddressBookUpload,
                    {
                        **base,
                        "contacts": [_contact(phone, name) for phone, name in part],
                        "force": True,
                        "final": final,
                        "batch_id": batch_id,
                    },
                )
                store.enqueue([(batch_id, True, final, upload.model_dump(exclude_unset=True))])
            return
        changes = store.take_dirty_entries(numbers)
        for i in range(0, len(changes), self.batch_size):
            batch_id = "b-" + uuid.uuid4().hex
            contacts = [
                _contact(phone, name) if want else {"phone": phone, "destroy": True}
                for phone, want, name in changes[i : i + self.batch_size]
            ]
            upload = body(AddressBookUpload, {**base, "contacts": contacts, "batch_id": batch_id})
            store.enqueue([(batch_id, False, True, upload.model_dump(exclude_unset=True))])

    async def _send_outbox(self, store: LocalStore, metrics: SyncMetrics) -> None:
        after = 0
        while (row := store.next_outbox(after)) is not None:
            seq, _batch_id, force, final, sending = row
            after = seq
            try:
                result = answer(
                    AddressBookResult,
                    await self.api.request("POST", "/v1/addressbook", json_body=sending),
                )
            except ApiError as exc:
                if isinstance(exc, TooManyContacts) and exc.max:
                    # the server's limit is lower than our batch size: plan again, smaller
                    self.batch_size = exc.max
                    with store.transaction():
                        store.clear_outbox()
                        store.unqueue_all()
                        self._plan(store, force)
                    self._planned_now(store, metrics)
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
                (c["phone"], 0 if c.get("destroy") else 1, c.get("name"))
                for c in sending["contacts"]
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
            metrics.created += result.created
            metrics.updated += result.updated
            metrics.deleted += result.deleted
            metrics.registered.extend(user.model_dump() for user in result.registered)
            for item in result.invalid:
                metrics.invalid.append(InvalidEntry(None, None, item.phone, item.reason, "server"))
            if self.on_progress is not None:
                # counted when the run's batches were planned, before the first was sent
                # (max: a caller who set on_progress during a first sync's streamed batches)
                total = max(self._planned, metrics.uploaded)
                self.on_progress(SyncProgress(metrics.uploaded, total, metrics.batches, metrics))


class _Scan:
    """The source's records as one scan reads them: the keys seen so far, and the records
    with a new key, taken into chunks. The source gives its records as lists (a file's
    cards): a record whose key is known is skipped without being looked at, so a resync's
    pass over every record of the book is a few whole-list steps."""

    def __init__(self, lists: Iterator[Records], known: set[str]) -> None:
        self.lists = lists
        self.known = known
        self.seen: set[str] = set()
        self.keys: list[str] = []  # the list being read, from `at`
        self.records: Sequence[Any] = ()
        self.at = 0

    async def read(self, chunk: list[tuple[str, Any]], size: int) -> bool:
        """Add new records to `chunk` until it holds `size`; True when the source is done.
        The loop is given a turn each _SLICE records scanned."""
        known = self.known
        scanned = 0
        while len(chunk) < size:
            if self.at >= len(self.keys):
                lists = next(self.lists, None)
                if lists is None:
                    return True
                self.keys, self.records = lists
                self.at = 0
                continue
            start = self.at
            self.at = end = min(len(self.keys), start + min(_SLICE - scanned, size - len(chunk)))
            keys = self.keys[start:end]
            self.seen.update(keys)
            if known:
                # the few new keys, then their places (in order, each found after the last)
                records, after = self.records, 0
                for key in itertools.filterfalse(known.__contains__, keys):
                    place = keys.index(key, after)
                    chunk.append((key, records[start + place]))
                    after = place + 1
            else:
                chunk += zip(keys, self.records[start:end], strict=True)
            scanned += end - start
            if scanned >= _SLICE and len(chunk) < size:
                scanned = 0
                await asyncio.sleep(0)
        return False


@dataclass
class _Chunk:
    """Parsed records whose numbers are being read."""

    parsed: list[tuple[str, Contact | SourceProblem]]
    known: dict[str, tuple[str | None, str | None]]  # raw -> (e164, reason), from the cache
    todo: list[str]  # the raws being read, in the order of `reading`'s results
    reading: asyncio.Task[list[Result]]
    parallel: bool  # read by the worker process


Row = tuple[str, str, str | None, list[str], list[Any] | None]


def _rows(
    parsed: list[tuple[str, Contact | SourceProblem]],
    results: dict[str, tuple[str | None, str | None]],
) -> list[Row]:
    """Rows for the store: (key, id, name, E.164 numbers, invalid entries) per record."""
    rows: list[Row] = []
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
    return rows


def _contact(phone: str, name: str | None) -> dict[str, Any]:
    # a name no store can hold (NUL) would have the whole batch refused: drop what cannot go
    name = (name or "").replace("\x00", "").strip()[:MAX_NAME]
    return {"phone": phone, "name": name} if name else {"phone": phone}
