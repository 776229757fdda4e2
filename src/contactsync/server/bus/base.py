"""The one small interface every bus implements."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol


class Watch(Protocol):
    """A live interest in one user's log; `wait` returns when it may have grown."""

    user_id: int

    async def wait(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...


class Bus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, latest: Mapping[int, int]) -> None:
        """Announce that each user in `latest` has events up to that seq."""
        ...

    def watch(self, user_id: int) -> Watch: ...

    def watched_users(self) -> set[int]:
        """Users with at least one live watcher in this process."""
        ...

    async def online(self, user_ids: Collection[int]) -> set[int]:
        """Which of these users hold a live connection in any process (best effort: when
        other processes cannot be asked, only this one's connections count)."""
        ...
