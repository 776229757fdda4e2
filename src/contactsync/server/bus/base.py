"""The one small interface every bus implements."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

# Sent by a bus to its own process when it (re)subscribes: messages may have been missed.
BUS_RESUBSCRIBED = "bus.resubscribed"

# Called with (kind, data) for every control message, this process's own included.
ControlHandler = Callable[[str, Mapping[str, Any]], None]


class Watch(Protocol):
    """A live interest in one user's log; `wait` returns when it may have grown."""

    user_id: int

    async def wait(self, timeout: float | None = None) -> bool: ...

    def wake(self) -> None:
        """Make the current or next `wait` return True at once."""
        ...

    def close(self) -> None: ...


class Bus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, latest: Mapping[int, int]) -> None:
        """Announce that each user in `latest` has events up to that seq."""
        ...

    async def control(self, kind: str, data: Mapping[str, Any]) -> None:
        """Tell every process, this one first, that something they may cache changed
        (`settings.changed`, `sessions.changed` with a `user_id`): a small JSON object."""
        ...

    def on_control(self, handler: ControlHandler) -> None:
        """Call `handler(kind, data)` for every control message that reaches this process."""
        ...

    @property
    def coherent(self) -> bool:
        """Whether control messages from every process reach this one now: only then may a
        process serve what it cached."""
        ...

    def watch(self, user_id: int) -> Watch: ...

    def watched_users(self) -> set[int]:
        """Users with at least one live watcher in this process."""
        ...

    async def online(self, user_ids: Collection[int]) -> set[int]:
        """Which of these users hold a live connection in any process (best effort: when
        other processes cannot be asked, only this one's connections count)."""
        ...
