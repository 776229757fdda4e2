"""The event bus between server processes: it carries "user U has events up to seq S", and
small control messages ("the app settings changed", "user U's sessions changed") that tell
every process to drop what it cached.

The event log in the database is the source of truth; the bus just wakes whoever holds a live
connection for U, so a lost bus message delays delivery but never loses an event.
"""

from __future__ import annotations

from contactsync.server.bus.base import Bus, Watch
from contactsync.server.bus.memory import MemoryBus

__all__ = ["Bus", "MemoryBus", "Watch"]
