"""Process-local caches of what nearly every request reads: the run-time app settings and the
session behind a bearer token.

Each value is kept for at most a few seconds and dropped at once when a bus control message
says it changed (`settings.changed`, `sessions.changed`): the process that made the change
sends it after its commit, every process (itself first) drops the entry. So a settings change
or a revoked token applies on every process within the bus's latency, and the TTL only bounds
how long a lost message can matter.

Two rules keep a dropped value from coming back:

- A reader takes a `stamp()` before it reads the database and `put`s with it; any drop in
  between moves the generation on, and the stale read is not stored.
- While the bus cannot hear other processes (Redis down, subscription lost), nothing is
  served from the cache or stored in it; when it hears again, everything is dropped, because
  messages may have been missed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Hashable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from contactsync.server.bus.base import BUS_RESUBSCRIBED

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

SETTINGS_CHANGED = "settings.changed"
SESSIONS_CHANGED = "sessions.changed"
BOOKS_FORGET = "books.forget"


class _Controls(Protocol):
    def control(self, kind: str, **data: Any) -> None: ...


def sessions_changed(tx: _Controls, user_id: int) -> None:
    """After this transaction (a `Tx`) commits, every process forgets the user's cached
    sessions and re-checks the user's sockets (those whose token no longer works close)."""
    tx.control(SESSIONS_CHANGED, user_id=user_id)


def books_forget(tx: _Controls, owner_id: int) -> None:
    """After this transaction commits, every process forgets the books it keeps of the user
    (their books were cleared, or the user deleted)."""
    tx.control(BOOKS_FORGET, owner_id=owner_id)


class BookCache:
    """The address books that big uploads read whole, kept in the process: {(owner, book):
    (version, {number: name})} (services/addressbook.py).

    It is never trusted: an upload uses an entry only when the version the book has now, read
    in the upload's own statement, is the one the entry was read at (every change to a book's
    numbers or names raises its version, in the changing transaction). So it needs no bus to
    be right. The bus only makes it forget sooner: a cleared book or a deleted user's books
    leave every process's memory at once (`books_forget`); else an entry lives at most
    `ttl_seconds`. At most `max_numbers` numbers are kept in all, the least recently used
    books going first."""

    def __init__(
        self,
        max_numbers: int = 200_000,
        ttl_seconds: float = 600.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_numbers = max_numbers
        self.ttl = ttl_seconds
        self._now = now
        self._entries: dict[tuple[int, str], tuple[float, int, dict[str, str | None]]] = {}
        self._numbers = 0

    def get(self, owner_id: int, book: str, version: int) -> dict[str, str | None] | None:
        """The book's {number: name} as it was at `version`, if kept (never to be changed)."""
        key = (owner_id, book)
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        if entry[1] != version or entry[0] <= self._now():
            self._numbers -= len(entry[2])
            return None
        self._entries[key] = entry  # the most recently used, last
        return entry[2]

    def put(self, owner_id: int, book: str, version: int, names: dict[str, str | None]) -> None:
        """Keep the book as read (committed) at `version`; the caller changes `names` no more."""
        self.forget(owner_id, book)
        # (an empty book is kept too: the first upload into it knows the whole book after)
        if len(names) > self.max_numbers:
            return
        while self._entries and self._numbers + len(names) > self.max_numbers:
            _, _, oldest = self._entries.pop(next(iter(self._entries)))
            self._numbers -= len(oldest)
        self._entries[(owner_id, book)] = (self._now() + self.ttl, version, names)
        self._numbers += len(names)

    def advance(
        self,
        owner_id: int,
        book: str,
        version: int,
        now_version: int,
        names: Mapping[str, str | None],
        gone: Collection[str],
    ) -> None:
        """After a commit that took the book from `version` to `now_version` by setting
        `names` and removing `gone`: the kept copy follows (a new dict: readers in flight keep
        theirs); if the kept copy is of another version, it is forgotten."""
        entry = self._entries.get((owner_id, book))
        if entry is None:
            return
        if entry[1] != version:
            self.forget(owner_id, book)
            return
        book_now = {**entry[2], **names}
        for number in gone:
            book_now.pop(number, None)
        self.put(owner_id, book, now_version, book_now)

    def forget(self, owner_id: int, book: str | None = None) -> None:
        """Forget one book of the owner's, or all of them."""
        keys = (
            [(owner_id, book)]
            if book is not None
            else [k for k in self._entries if k[0] == owner_id]
        )
        for key in keys:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._numbers -= len(entry[2])

    def clear(self) -> None:
        self._entries.clear()
        self._numbers = 0

    def __len__(self) -> int:
        return self._numbers


class LocalCache(Generic[K, V]):
    def __init__(
        self,
        ttl_seconds: float,
        *,
        max_entries: int = 10_000,
        usable: Callable[[], bool] = lambda: True,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.usable = usable
        self._now = now
        self._entries: dict[K, tuple[float, V]] = {}
        self._generation = 0

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._now() or not self.usable():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def stamp(self) -> int:
        """Take before reading the source; give to `put`."""
        return self._generation

    def put(self, key: K, value: V, stamp: int) -> None:
        if stamp != self._generation or self.ttl <= 0 or not self.usable():
            return
        if len(self._entries) >= self.max_entries:
            now = self._now()
            for old in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[old]
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]  # the oldest
        self._entries[key] = (self._now() + self.ttl, value)

    def drop(self, match: Callable[[K, V], bool] | None = None) -> None:
        """Forget every entry (or those `match` selects); reads in flight store nothing."""
        self._generation += 1
        if match is None:
            self._entries.clear()
            return
        for key in [k for k, (_, v) in self._entries.items() if match(k, v)]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


class Caches:
    """The caches of one app; `on_control` is registered with the app's bus."""

    def __init__(self, ttl_seconds: float, usable: Callable[[], bool] = lambda: True) -> None:
        # {"": AppSettings}
        self.settings: LocalCache[str, Any] = LocalCache(ttl_seconds, usable=usable)
        # {token hash: sessions.Session}
        self.sessions: LocalCache[str, Any] = LocalCache(ttl_seconds, usable=usable)
        self.books = BookCache()

    def on_control(self, kind: str, data: Mapping[str, Any]) -> None:
        if kind == SETTINGS_CHANGED:
            self.settings.drop()
        elif kind == SESSIONS_CHANGED:
            user_id = data.get("user_id")
            self.sessions.drop(lambda _hash, session: session.user_id == user_id)
        elif kind == BOOKS_FORGET:
            self.books.forget(int(data["owner_id"]))
        elif kind == BUS_RESUBSCRIBED:
            self.settings.drop()
            self.sessions.drop()
            self.books.clear()  # (a forget may have been missed)
