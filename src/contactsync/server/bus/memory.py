"""The embedded bus: one process, wakes local watchers directly."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Collection, Mapping
from typing import Any

from contactsync.server.bus.base import ControlHandler

log = logging.getLogger("contactsync.bus")


class MemoryWatch:
    def __init__(self, bus: MemoryBus, user_id: int) -> None:
        self.user_id = user_id
        self._bus = bus
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float | None = None) -> bool:
        # asyncio.timeout rather than wait_for: no extra task per wait, which matters with
        # thousands of idle sockets each waiting here.
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self._bus._remove(self)


class MemoryBus:
    def __init__(self) -> None:
        self._watches: dict[int, set[MemoryWatch]] = defaultdict(set)
        self._control_handlers: list[ControlHandler] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for watches in list(self._watches.values()):
            for watch in list(watches):
                watch.wake()

    async def publish(self, latest: Mapping[int, int]) -> None:
        self.deliver_local(latest)

    def deliver_local(self, latest: Mapping[int, int]) -> None:
        for user_id in latest:
            for watch in self._watches.get(user_id, ()):
                watch.wake()

    async def control(self, kind: str, data: Mapping[str, Any]) -> None:
        self.deliver_control(kind, data)

    def on_control(self, handler: ControlHandler) -> None:
        self._control_handlers.append(handler)

    def deliver_control(self, kind: str, data: Mapping[str, Any]) -> None:
        for handler in list(self._control_handlers):
            try:
                handler(kind, data)
            except Exception:  # one broken handler must not keep the others from hearing
                log.exception("bus: control handler failed on %s", kind)

    @property
    def coherent(self) -> bool:
        return True

    def watch(self, user_id: int) -> MemoryWatch:
        watch = MemoryWatch(self, user_id)
        self._watches[user_id].add(watch)
        return watch

    def watched_users(self) -> set[int]:
        return {user_id for user_id, watches in self._watches.items() if watches}

    async def online(self, user_ids: Collection[int]) -> set[int]:
        return {user_id for user_id in user_ids if self._watches.get(user_id)}

    def _remove(self, watch: MemoryWatch) -> None:
        watches = self._watches.get(watch.user_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.user_id]
