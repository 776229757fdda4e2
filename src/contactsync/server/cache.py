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
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from contactsync.server.bus.base import BUS_RESUBSCRIBED

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

SETTINGS_CHANGED = "settings.changed"
SESSIONS_CHANGED = "sessions.changed"


class _Controls(Protocol):
    def control(self, kind: str, **data: Any) -> None: ...


def sessions_changed(tx: _Controls, user_id: int) -> None:
    """After this transaction (a `Tx`) commits, every process forgets the user's cached
    sessions and re-checks the user's sockets (those whose token no longer works close)."""
    tx.control(SESSIONS_CHANGED, user_id=user_id)


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

    def on_control(self, kind: str, data: Mapping[str, Any]) -> None:
        if kind == SETTINGS_CHANGED:
            self.settings.drop()
        elif kind == SESSIONS_CHANGED:
            user_id = data.get("user_id")
            self.sessions.drop(lambda _hash, session: session.user_id == user_id)
        elif kind == BUS_RESUBSCRIBED:
            self.settings.drop()
            self.sessions.drop()
