"""Private discovery in the SDK: the book's numbers never leave the device, plain or hashed.

A sync (the manager has scanned the source into the local store first):
1. the filter: downloaded whole once (binary), then only the changes after its version, in a
   task that runs beside the blinding of the new numbers;
2. each number (and its variant forms) without a tag for the key version in force is blinded,
   evaluated by the server and unblinded to its tag F_k(n), kept in the local store, so a
   number costs quota once per key version. Batches overlap: while the server evaluates one,
   the client blinds the next and unblinds the last (libsodium runs outside the GIL);
3. the tags are matched locally against the filter and against the caller's own list (the
   users discoverable by their contacts who let the caller find them), and the matches alone
   are resolved to users (id and visible profile).
A sync is incremental: the numbers of the book as last matched are kept (`private_book`), and
only the numbers added since, plus those whose filter keys changed in the deltas since
(`private_pending`), are matched and resolved again; earlier matches stay in the store. A
whole filter (a new key, or deltas the server no longer has) or `force_sync` matches all.
"X joined": on `discovery.changed` (pushed on the event socket), at start and every
`interval` seconds, the changes after the stored version are fetched; an announced addition
whose key is one of the stored tags is resolved and reported as `contact.joined`, with the
name from the local book.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from contactsync import oprf, tagfilter
from contactsync import phone as phones
from contactsync.client._errors import ApiError, ClientError, DiscoveryKeyChanged
from contactsync.client._http import ApiClient
from contactsync.client._models import Event, SyncMetrics
from contactsync.client._store import LocalStore
from contactsync.client._tasks import Background, cancel
from contactsync.client._wire import answer, body
from contactsync.protocol import (
    DiscoveryContacts,
    EvaluateIn,
    EvaluateOut,
    FilterDelta,
    ResolveIn,
    ResolveOut,
)

log = logging.getLogger("contactsync.client.private")

Ready = Callable[[], Awaitable[LocalStore]]
Dispatch = Callable[[Event], Awaitable[None]]

FILTER_TYPE = "application/vnd.contactsync.filter"
_BATCH = 1_000  # points per evaluate request: small enough for the batches to overlap
_SCHEMA = """
CREATE TABLE IF NOT EXISTS private_tags (
    number TEXT PRIMARY KEY, key_version INTEGER NOT NULL, tag TEXT NOT NULL,
    fkey INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS private_tags_fkey ON private_tags (fkey);
CREATE TABLE IF NOT EXISTS private_matches (
    phone TEXT PRIMARY KEY, user_id INTEGER NOT NULL, profile TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS private_filter (
    id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS private_changes (fkey INTEGER PRIMARY KEY, added INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS private_book (phone TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS private_pending (
    fkey INTEGER PRIMARY KEY, announce INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS private_own (fkey INTEGER PRIMARY KEY);
"""
_SCHEMA_VERSION = "2"


def forms(e164: str) -> list[str]:
    """The number and the other forms the same line may be registered under."""
    variants = getattr(phones, "variants", None)
    return [e164, *(variants(e164) if variants is not None else ())]


class PrivateDiscovery:
    """The private-discovery side of one manager (one local store)."""

    def __init__(
        self,
        api: ApiClient,
        ready: Ready,
        dispatch: Dispatch,
        *,
        interval: float = 60.0,
        batch_size: int = _BATCH,
    ) -> None:
        self.api = api
        self._ready = ready
        self._dispatch = dispatch
        self.interval = interval
        self.batch_size = batch_size
        self._state: tagfilter.FilterState | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._task = Background(self._follow, "contactsync-private")

    # --- the local store ---------------------------------------------------------------

    @staticmethod
    def _db(store: LocalStore) -> sqlite3.Connection:
        db = store.db
        if store.get("private_schema") != _SCHEMA_VERSION:
            db.executescript(_SCHEMA)
            # a store from before incremental syncs: its first one matches the whole book
            store.put("private_full", "1")
            store.put("private_schema", _SCHEMA_VERSION)
        return db

    def reset(self) -> None:
        """Forget what is in memory (the store file itself goes with `logout()`)."""
        self._state = None

    # --- the filter ----------------------------------------------------------------------

    def _load(self, store: LocalStore) -> tagfilter.FilterState | None:
        if self._state is None and store.get("private_version") is not None:
            db = self._db(store)
            row = db.execute("SELECT data FROM private_filter WHERE id = 1").fetchone()
            if row is not None:
                state = tagfilter.FilterState(tagfilter.Filter.decode(bytes(row[0])))
                state.overrides = {
                    int(k): bool(a) for k, a in db.execute("SELECT * FROM private_changes")
                }
                self._state = state
        return self._state

    async def refresh(self, store: LocalStore) -> list[int]:
        """Bring the filter up to date; returns the announced additions' keys in the delta.
        Every key the delta changes is kept in `private_pending` (its tags are matched again
        by the next sync); a whole filter sets `private_full` (all of them are)."""
        db = self._db(store)
        state = self._load(store)
        version = store.get("private_version")
        key_version = store.get("private_key_version")
        params: dict[str, Any] = {}
        if state is not None and version is not None and key_version is not None:
            params = {"since": int(version), "key_version": int(key_version)}
        response = await self.api.request_response("GET", "/v1/discovery/filter", params=params)
        if response.headers.get("content-type", "").startswith(FILTER_TYPE):
            base = await asyncio.to_thread(tagfilter.Filter.decode, response.content)
            state = tagfilter.FilterState(base)
            with store.transaction():
                db.execute(
                    "INSERT OR REPLACE INTO private_filter (id, data) VALUES (1, ?)",
                    (response.content,),
                )
                db.execute("DELETE FROM private_changes")
                db.execute("DELETE FROM private_pending")
                if str(base.key_version) != key_version:
                    # another key: every tag is stale, every match is to be found again
                    db.execute("DELETE FROM private_tags")
                store.put("private_version", str(base.version))
                store.put("private_key_version", str(base.key_version))
                store.put("private_full", "1")
            self._state = state
            # the base is as of its version: the changes since follow as a delta
            return await self.refresh(store)
        delta = answer(FilterDelta, response.json())
        changes = list(tagfilter.decode_changes(base64.b64decode(delta.changes)))
        assert state is not None
        state.apply(changes)
        with store.transaction():
            db.executemany(
                "INSERT OR REPLACE INTO private_changes (fkey, added) VALUES (?, ?)",
                [(key, int(added)) for key, added, _ in changes],
            )
            db.executemany(
                "INSERT INTO private_pending (fkey, announce) VALUES (?, ?) ON CONFLICT (fkey) "
                "DO UPDATE SET announce = max(announce, excluded.announce)",
                [(key, int(added and announce)) for key, added, announce in changes],
            )
            store.put("private_version", str(delta.version))
        return [key for key, added, announce in changes if added and announce]

    async def _fetch_own(self, key_version: int) -> set[int]:
        """The caller's own list: the filter keys of the users discoverable by their contacts
        who let the caller find them (`GET /v1/discovery/contacts`)."""
        try:
            raw = await self.api.request(
                "GET", "/v1/discovery/contacts", params={"key_version": key_version}
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            return set()  # a server from before the list
        return {int(k, 16) for k in answer(DiscoveryContacts, raw).keys}

    def _keep_own(self, store: LocalStore, now: set[int]) -> None:
        """Store the own list; a key that came or went since is pending like a change of the
        filter."""
        db = self._db(store)
        before = {k for (k,) in db.execute("SELECT fkey FROM private_own")}
        if now == before:
            return
        with store.transaction():
            db.execute("DELETE FROM private_own")
            db.executemany("INSERT INTO private_own (fkey) VALUES (?)", [(k,) for k in now])
            db.executemany(
                "INSERT OR IGNORE INTO private_pending (fkey, announce) VALUES (?, 0)",
                [(k,) for k in now ^ before],
            )

    @staticmethod
    def _book(db: sqlite3.Connection, phones: Iterable[str] | None) -> dict[str, str | None]:
        """{number: name} of the book (the local store's wanted entries), or of those of
        `phones` that are in it."""
        if phones is None:
            return dict(db.execute("SELECT phone, want_name FROM entries WHERE want = 1"))
        return dict(
            db.execute(
                "SELECT phone, want_name FROM entries WHERE want = 1 "
                "AND phone IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(set(phones))),),
            )
        )

    # --- evaluate, match, resolve ----------------------------------------------------------

    async def _evaluate(
        self,
        store: LocalStore,
        numbers: Sequence[str],
        key_version: Callable[[], Awaitable[int]],
        metrics: SyncMetrics,
    ) -> None:
        """Tags for `numbers`, stored as each batch comes back. Blinding needs no key, so it
        starts at once; the first request waits for `key_version()` (the filter's)."""
        db = self._db(store)
        queue: asyncio.Queue[tuple[list[str], list[tuple[bytes, bytes]]] | None] = asyncio.Queue(2)
        # a small book in a few batches too, so that blinding, the server and unblinding
        # overlap (one batch of 1,000 would run them one after the other)
        size = max(100, min(self.batch_size, -(-len(numbers) // 4)))

        async def blind_all() -> None:
            for i in range(0, len(numbers), size):
                part = list(numbers[i : i + size])
                await queue.put((part, await asyncio.to_thread(_blind, part)))
            await queue.put(None)

        async def finish(
            part: list[str],
            blinded: list[tuple[bytes, bytes]],
            evaluated: EvaluateOut,
            version: int,
        ) -> None:
            points = [base64.b64decode(p) for p in evaluated.points]
            tags = await asyncio.to_thread(_unblind, part, blinded, points)
            with store.transaction():
                db.executemany(
                    "INSERT OR REPLACE INTO private_tags (number, key_version, tag, fkey) "
                    "VALUES (?, ?, ?, ?)",
                    [
                        (n, version, t.hex(), oprf.filter_key(t))
                        for n, t in zip(part, tags, strict=True)
                    ],
                )
            metrics.evaluated += len(part)

        producer = asyncio.create_task(blind_all())
        pending: asyncio.Task[None] | None = None
        try:
            version: int | None = None
            while (item := await queue.get()) is not None:
                part, blinded = item
                if version is None:
                    version = await key_version()
                request = body(
                    EvaluateIn,
                    {
                        "key_version": version,
                        "points": [base64.b64encode(p).decode() for _, p in blinded],
                    },
                )
                evaluated = answer(
                    EvaluateOut,
                    await self.api.request("POST", "/v1/discovery/evaluate", json_body=request),
                )
                if pending is not None:
                    await pending
                pending = asyncio.create_task(finish(part, blinded, evaluated, version))
            if pending is not None:
                await pending
            await producer
        finally:
            await cancel(producer, pending)

    async def _resolve(
        self, store: LocalStore, tags: dict[str, str], key_version: int
    ) -> dict[str, dict[str, Any]]:
        """{tag: {user_id, profile}} for the matched tags the server resolves."""
        found: dict[str, dict[str, Any]] = {}
        items = list(tags)
        for i in range(0, len(items), self.batch_size):
            request = body(
                ResolveIn, {"key_version": key_version, "tags": items[i : i + self.batch_size]}
            )
            resolved = answer(
                ResolveOut,
                await self.api.request("POST", "/v1/discovery/resolve", json_body=request),
            )
            for user in resolved.users:
                found[user.tag] = user.model_dump()
        return found

    async def sync(self, store: LocalStore, metrics: SyncMetrics, *, full: bool = False) -> None:
        """Evaluate what is new, match it (and what the filter's changes touch) against the
        filter, resolve the matches. `full`: match and resolve the whole book again."""
        async with self._lock:
            for attempt in range(2):
                try:
                    await self._sync(store, metrics, full=full)
                    return
                except ApiError as exc:
                    if not isinstance(exc, DiscoveryKeyChanged) or attempt:
                        raise
                    # the key rotated between the filter and our request: start again

    async def _sync(self, store: LocalStore, metrics: SyncMetrics, *, full: bool) -> None:
        db = self._db(store)
        stored_key = int(store.get("private_key_version") or 0)
        # the filter and the own list come while the new numbers are blinded
        refreshing = asyncio.create_task(self.refresh(store))
        own = asyncio.create_task(self._fetch_own(stored_key)) if stored_key else None
        try:
            if full or store.get("private_full") is not None:
                new = set(self._book(db, None))
            else:
                new = {
                    phone
                    for (phone,) in db.execute(
                        "SELECT phone FROM entries WHERE want = 1 "
                        "EXCEPT SELECT phone FROM private_book"
                    )
                }
            first = self._missing(db, new, stored_key)

            async def key_version() -> int:
                await refreshing
                return int(store.get("private_key_version") or 0)

            if first:
                await self._evaluate(store, first, key_version, metrics)
            key = await key_version()
            own_keys: set[int] | None = None
            if own is not None:
                with contextlib.suppress(DiscoveryKeyChanged):
                    own_keys = await own
        finally:
            await cancel(refreshing, own)
        if store.get("private_full") is not None:
            new = set(self._book(db, None))  # a whole filter came: match every number again
        # numbers the first pass did not cover: another key came with the filter
        rest = self._missing(db, new, key)
        if rest:
            await self._evaluate(store, rest, key_version, metrics)
        if own_keys is None or key != stored_key:
            own_keys = await self._fetch_own(key)
        self._keep_own(store, own_keys)
        await self._match(store, new, key, metrics=metrics)

    @staticmethod
    def _missing(db: sqlite3.Connection, phones: set[str], key_version: int) -> list[str]:
        """The forms of these numbers without a tag under `key_version`."""
        wanted = {form for phone in sorted(phones) for form in forms(phone)}
        if not wanted:
            return []
        known = {
            number
            for (number,) in db.execute(
                "SELECT number FROM private_tags WHERE key_version = ? "
                "AND number IN (SELECT value FROM json_each(?))",
                (key_version, json.dumps(sorted(wanted))),
            )
        }
        return sorted(wanted - known)

    async def _match(
        self,
        store: LocalStore,
        phones: set[str],
        key_version: int,
        *,
        metrics: SyncMetrics | None = None,
        announced_only: bool = False,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Match `phones` again, and the book's numbers whose filter keys are pending; resolve
        what matches and keep the result in `private_matches`. Returns the new matches.
        `announced_only`: only the pending keys of announced joins (a sync takes the rest),
        and nothing else of the book changes."""
        db = self._db(store)
        state = self._state
        assert state is not None
        pending_query = "SELECT fkey FROM private_pending" + (
            " WHERE announce = 1" if announced_only else ""
        )
        pending = [k for (k,) in db.execute(pending_query)]
        # the book's numbers one of whose forms has a pending key (forms are symmetric)
        near: set[str] = set()
        if pending:
            for (number,) in db.execute(
                "SELECT number FROM private_tags WHERE key_version = ? "
                "AND fkey IN (SELECT value FROM json_each(?))",
                (key_version, json.dumps(pending)),
            ):
                near.update(forms(number))
        check = phones | set(self._book(db, near - phones)) if near else set(phones)
        own = {k for (k,) in db.execute("SELECT fkey FROM private_own")}
        numbers = sorted({form for phone in check for form in forms(phone)})
        rows = (
            db.execute(
                "SELECT number, tag, fkey FROM private_tags WHERE key_version = ? "
                "AND number IN (SELECT value FROM json_each(?))",
                (key_version, json.dumps(numbers)),
            ).fetchall()
            if numbers
            else []
        )
        matched = {tag: number for number, tag, fkey in rows if fkey in own or state.contains(fkey)}
        found = (
            await self._resolve(store, dict.fromkeys(matched, ""), key_version) if matched else {}
        )
        now = _once_per_user(check, {matched[tag]: user for tag, user in found.items()})
        gone: list[str] = []
        if not announced_only:
            gone = [
                phone
                for (phone,) in db.execute(
                    "SELECT phone FROM private_book EXCEPT SELECT phone FROM entries WHERE want = 1"
                )
            ]
        before = {
            phone
            for (phone,) in db.execute(
                "SELECT phone FROM private_matches WHERE phone IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(check)),),
            )
        }
        drop = sorted(now) if announced_only else sorted(check | set(gone))
        with store.transaction():
            db.execute(
                "DELETE FROM private_matches WHERE phone IN (SELECT value FROM json_each(?))",
                (json.dumps(drop),),
            )
            db.executemany(
                "INSERT INTO private_matches (phone, user_id, profile) VALUES (?, ?, ?)",
                [(p, u["user_id"], json.dumps(u.get("profile") or {})) for p, u in now.items()],
            )
            db.executemany("DELETE FROM private_pending WHERE fkey = ?", [(k,) for k in pending])
            if not announced_only:
                db.execute(
                    "DELETE FROM private_book WHERE phone IN (SELECT value FROM json_each(?))",
                    (json.dumps(gone),),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO private_book (phone) VALUES (?)", [(p,) for p in phones]
                )
                store.put("private_full", None)
        added = [(p, u) for p, u in sorted(now.items()) if p not in before]
        if metrics is not None and added:
            names = self._book(db, [p for p, _ in added])
            metrics.registered.extend(
                {"user_id": u["user_id"], "phone": p, "name": names.get(p)} for p, u in added
            )
        return added

    def matches(self, store: LocalStore) -> list[dict[str, Any]]:
        """The registered users among the book's numbers, as the last sync found them."""
        db = self._db(store)
        return [
            {"user_id": uid, "phone": phone, "profile": json.loads(profile)}
            for phone, uid, profile in db.execute(
                "SELECT phone, user_id, profile FROM private_matches ORDER BY phone"
            )
        ]

    # --- "X joined" through the filter's deltas --------------------------------------------

    def changed(self) -> None:
        """The server said the filter moved (`discovery.changed`): fetch the delta soon."""
        self._changed.set()

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._changed.wait()
            self._changed.clear()
            try:
                await self.follow_once()
            except ClientError as exc:
                log.info("private discovery: filter update failed: %s", exc)

    async def follow_once(self) -> int:
        """Apply the filter's changes; report announced joins of numbers in the book.
        Returns how many `contact.joined` were reported. (Other changes are matched by the
        next sync: they are no joins.)"""
        store = await self._ready()
        async with self._lock:
            if store.get("private_version") is None:
                return 0  # no private sync yet: nothing to match against
            announced = await self.refresh(store)
            if not announced or store.get("private_full") is not None:
                return 0
            key_version = int(store.get("private_key_version") or 0)
            joined = await self._match(store, set(), key_version, announced_only=True)
            book = self._book(self._db(store), [phone for phone, _ in joined])
        for phone, user in joined:
            at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            data = {"user_id": user["user_id"], "phone": phone, "name": book.get(phone)}
            await self._dispatch(Event(0, "contact.joined", at, data))
        return len(joined)


def _once_per_user(
    phones: Iterable[str], users: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """{book number: user} as stored mode matches (server/services/matching.py): a number is
    the user registered under it, else under one of its variants; each user once, under
    their own number when the book holds it, else under the first number that matched."""
    hits: dict[str, tuple[dict[str, Any], str]] = {}
    for phone in phones:
        for form in forms(phone):  # the number itself first
            if (user := users.get(form)) is not None:
                hits[phone] = (user, form)
                break
    best: dict[int, str] = {}
    for phone, (user, form) in sorted(hits.items()):
        if user["user_id"] not in best or phone == form:
            best[user["user_id"]] = phone
    return {phone: hits[phone][0] for phone in best.values()}


def _blind(numbers: list[str]) -> list[tuple[bytes, bytes]]:
    return [oprf.blind(n) for n in numbers]


def _unblind(
    numbers: list[str], blinded: list[tuple[bytes, bytes]], points: list[bytes]
) -> list[bytes]:
    if len(points) != len(numbers):
        raise ClientError("the server answered a different number of points")
    return [
        oprf.finalize(n, oprf.unblind(r, p))
        for n, (r, _), p in zip(numbers, blinded, points, strict=True)
    ]
