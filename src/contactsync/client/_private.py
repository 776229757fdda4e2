"""Private discovery in the SDK: the book's numbers never leave the device, plain or hashed.

A sync (the manager has scanned the source into the local store first):
1. the filter: downloaded whole once (binary), then only the changes after its version;
2. each number (and its variant forms) without a tag for the key version in force is blinded,
   evaluated by the server and unblinded to its tag F_k(n), kept in the local store, so a
   number costs quota once per key version. Batches overlap: while the server evaluates one,
   the client blinds the next and unblinds the last (libsodium runs outside the GIL);
3. the tags are matched against the filter locally, and the matches alone are resolved to
   users (id and visible profile).
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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from contactsync import oprf, tagfilter
from contactsync import phone as phones
from contactsync.client._errors import ApiError, ClientError, DiscoveryKeyChanged
from contactsync.client._http import ApiClient
from contactsync.client._models import Event, SyncMetrics
from contactsync.client._store import LocalStore
from contactsync.client._tasks import Background, cancel

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
"""


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
        if store.get("private_schema") is None:
            db.executescript(_SCHEMA)
            store.put("private_schema", "1")
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
        """Bring the filter up to date; returns the announced additions' keys in the delta."""
        db = self._db(store)
        state = self._load(store)
        version = store.get("private_version")
        key_version = store.get("private_key_version")
        params: dict[str, Any] = {}
        if state is not None and version is not None and key_version is not None:
            params = {"since": int(version), "key_version": int(key_version)}
        response = await self.api.request_response("GET", "/v1/discovery/filter", params=params)
        announced: list[int] = []
        if response.headers.get("content-type", "").startswith(FILTER_TYPE):
            base = tagfilter.Filter.decode(response.content)
            state = tagfilter.FilterState(base)
            with store.transaction():
                db.execute(
                    "INSERT OR REPLACE INTO private_filter (id, data) VALUES (1, ?)",
                    (response.content,),
                )
                db.execute("DELETE FROM private_changes")
                if str(base.key_version) != key_version:
                    # another key: every tag is stale, every match is to be found again
                    db.execute("DELETE FROM private_tags")
                store.put("private_version", str(base.version))
                store.put("private_key_version", str(base.key_version))
            self._state = state
            # the base is as of its version: the changes since follow as a delta
            return await self.refresh(store)
        body = response.json()
        changes = list(tagfilter.decode_changes(base64.b64decode(body["changes"])))
        assert state is not None
        state.apply(changes)
        with store.transaction():
            db.executemany(
                "INSERT OR REPLACE INTO private_changes (fkey, added) VALUES (?, ?)",
                [(key, int(added)) for key, added, _ in changes],
            )
            store.put("private_version", str(body["version"]))
        announced = [key for key, added, announce in changes if added and announce]
        return announced

    # --- evaluate, match, resolve ----------------------------------------------------------

    async def _evaluate(
        self, store: LocalStore, numbers: Sequence[str], key_version: int, metrics: SyncMetrics
    ) -> None:
        """Tags for `numbers`, stored as each batch comes back."""
        db = self._db(store)
        queue: asyncio.Queue[tuple[list[str], list[tuple[bytes, bytes]]] | None] = asyncio.Queue(2)

        async def blind_all() -> None:
            for i in range(0, len(numbers), self.batch_size):
                part = list(numbers[i : i + self.batch_size])
                await queue.put((part, await asyncio.to_thread(_blind, part)))
            await queue.put(None)

        async def finish(part: list[str], blinded: list[tuple[bytes, bytes]], answer: Any) -> None:
            points = [base64.b64decode(p) for p in answer["points"]]
            tags = await asyncio.to_thread(_unblind, part, blinded, points)
            with store.transaction():
                db.executemany(
                    "INSERT OR REPLACE INTO private_tags (number, key_version, tag, fkey) "
                    "VALUES (?, ?, ?, ?)",
                    [
                        (n, key_version, t.hex(), oprf.filter_key(t))
                        for n, t in zip(part, tags, strict=True)
                    ],
                )
            metrics.evaluated += len(part)

        producer = asyncio.create_task(blind_all())
        pending: asyncio.Task[None] | None = None
        try:
            while (item := await queue.get()) is not None:
                part, blinded = item
                body = {
                    "key_version": key_version,
                    "points": [base64.b64encode(p).decode() for _, p in blinded],
                }
                answer = await self.api.request("POST", "/v1/discovery/evaluate", json_body=body)
                if pending is not None:
                    await pending
                pending = asyncio.create_task(finish(part, blinded, answer))
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
            body = {"key_version": key_version, "tags": items[i : i + self.batch_size]}
            answer = await self.api.request("POST", "/v1/discovery/resolve", json_body=body)
            for user in answer["users"]:
                found[user["tag"]] = user
        return found

    async def sync(self, store: LocalStore, metrics: SyncMetrics) -> None:
        """Evaluate what is new, match everything against the filter, resolve the matches."""
        async with self._lock:
            for attempt in range(2):
                try:
                    await self._sync(store, metrics)
                    return
                except ApiError as exc:
                    if not isinstance(exc, DiscoveryKeyChanged) or attempt:
                        raise
                    # the key rotated between the filter and our request: start again

    async def _sync(self, store: LocalStore, metrics: SyncMetrics) -> None:
        await self.refresh(store)
        db = self._db(store)
        key_version = int(store.get("private_key_version") or 0)
        book = {phone: name for phone, name in store.wanted_entries()}
        wanted = {form: phone for phone in book for form in forms(phone)}
        known = {
            number
            for (number,) in db.execute(
                "SELECT number FROM private_tags WHERE key_version = ?", (key_version,)
            )
        }
        missing = [n for n in wanted if n not in known]
        if missing:
            await self._evaluate(store, missing, key_version, metrics)
        state = self._state
        assert state is not None
        rows = db.execute(
            "SELECT number, tag, fkey FROM private_tags WHERE key_version = ?", (key_version,)
        ).fetchall()
        matched = {
            tag: number for number, tag, fkey in rows if number in wanted and state.contains(fkey)
        }
        found = (
            await self._resolve(store, dict.fromkeys(matched, ""), key_version) if matched else {}
        )
        before = {phone for (phone,) in db.execute("SELECT phone FROM private_matches")}
        now: dict[str, dict[str, Any]] = {}
        for tag, user in found.items():
            phone = wanted[matched[tag]]
            now.setdefault(phone, user)
        with store.transaction():
            db.execute("DELETE FROM private_matches")
            db.executemany(
                "INSERT INTO private_matches (phone, user_id, profile) VALUES (?, ?, ?)",
                [(p, u["user_id"], json.dumps(u.get("profile") or {})) for p, u in now.items()],
            )
        metrics.registered.extend(
            {"user_id": u["user_id"], "phone": p, "name": book.get(p)}
            for p, u in sorted(now.items())
            if p not in before
        )

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
        Returns how many `contact.joined` were reported."""
        store = await self._ready()
        async with self._lock:
            if store.get("private_version") is None:
                return 0  # no private sync yet: nothing to match against
            announced = await self.refresh(store)
            if not announced:
                return 0
            db = self._db(store)
            key_version = int(store.get("private_key_version") or 0)
            rows = db.execute(
                "SELECT number, tag FROM private_tags WHERE key_version = ? AND fkey IN "
                "(SELECT value FROM json_each(?))",
                (key_version, json.dumps(announced)),
            ).fetchall()
            if not rows:
                return 0
            book = {phone: name for phone, name in store.wanted_entries()}
            wanted = {form: phone for phone in book for form in forms(phone)}
            tags = {tag: number for number, tag in rows if number in wanted}
            found = await self._resolve(store, dict.fromkeys(tags, ""), key_version)
            joined: list[tuple[str, dict[str, Any]]] = []
            with store.transaction():
                for tag, user in found.items():
                    phone = wanted[tags[tag]]
                    exists = db.execute(
                        "SELECT 1 FROM private_matches WHERE phone = ?", (phone,)
                    ).fetchone()
                    if exists is None:
                        db.execute(
                            "INSERT INTO private_matches (phone, user_id, profile) "
                            "VALUES (?, ?, ?)",
                            (phone, user["user_id"], json.dumps(user.get("profile") or {})),
                        )
                        joined.append((phone, user))
        for phone, user in joined:
            at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            data = {"user_id": user["user_id"], "phone": phone, "name": book.get(phone)}
            await self._dispatch(Event(0, "contact.joined", at, data))
        return len(joined)


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
