"""A thin synchronous wrapper: the async manager on an event loop in a background thread,
so listeners and file watching keep running between calls from plain synchronous code."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from contactsync.client._conversations import Conversation, Conversations
from contactsync.client._events import Callback
from contactsync.client._manager import ContactsManager
from contactsync.client._models import ManagerState, SyncMetrics
from contactsync.client._preferences import Preferences
from contactsync.client._sources import ContactSource

T = TypeVar("T")


class SyncContactsManager:
    """Same arguments and methods as :class:`ContactsManager`, without `await`."""

    def __init__(self, source: ContactSource, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="contactsync-sdk", daemon=True
        )
        self._thread.start()

        async def build() -> ContactsManager:
            return ContactsManager(source, **kwargs)

        self.manager = self._call(build())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def state(self) -> ManagerState:
        return self.manager.state

    @property
    def last_metrics(self) -> SyncMetrics | None:
        return self.manager.last_metrics

    def start(self) -> SyncMetrics:
        return self._call(self.manager.start())

    def sync(self) -> SyncMetrics:
        return self._call(self.manager.sync())

    def force_sync(self) -> SyncMetrics:
        return self._call(self.manager.force_sync())

    def poll_events(self) -> int:
        return self._call(self.manager.poll_events())

    def notify_changed(self) -> None:
        self._loop.call_soon_threadsafe(self.manager.notify_changed)

    def on(self, event_type: str, callback: Callback) -> None:
        self.manager.on(event_type, callback)

    def on_contact_joined(self, callback: Callback) -> None:
        self.manager.on_contact_joined(callback)

    def on_event(self, callback: Callback) -> None:
        self.manager.on_event(callback)

    def on_message(self, callback: Callback) -> None:
        self.manager.on_message(callback)

    def on_profile_updated(self, callback: Callback) -> None:
        self.manager.on_profile_updated(callback)

    @property
    def conversations(self) -> Any:
        """`manager.conversations` with blocking methods (`sync_all()`, `list()`, …)."""
        return _Blocking(self.manager.conversations, self._call)

    @property
    def preferences(self) -> Any:
        return _Blocking(self.manager.preferences, self._call)

    def conversation(self, conversation_id: int) -> Any:
        return _Blocking(self.manager.conversation(conversation_id), self._call)

    def send_sync_request(self, reason: str | None = None) -> dict[str, Any]:
        return self._call(self.manager.send_sync_request(reason))

    def drop_local_database_connection(self) -> None:
        self._call(_run(self.manager.drop_local_database_connection))

    def reconnect_local_database(self) -> None:
        self._call(_run(self.manager.reconnect_local_database))

    def logout(self) -> None:
        self._call(self.manager.logout())

    def close(self) -> None:
        """Close the manager and stop the background loop."""
        if self._loop.is_closed():
            return
        self._call(self.manager.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncContactsManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    result = fn(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


_WRAPPED = (Conversations, Conversation, Preferences)


class _Blocking:
    """An SDK object whose methods run on the manager's loop and block until done; objects of
    the SDK they return (a new Conversation, say) come wrapped the same way."""

    def __init__(self, target: Any, call: Any) -> None:
        self._target = target
        self._call = call

    def __repr__(self) -> str:
        return f"Blocking({self._target!r})"

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def method(*args: Any, **kwargs: Any) -> Any:
            result = self._call(_run(attr, *args, **kwargs))
            return _Blocking(result, self._call) if isinstance(result, _WRAPPED) else result

        return method
