"""The event bus between server processes: it carries only "user U has events up to seq S".

The event log in the database is the source of truth; the bus just wakes whoever holds a live
connection for U, so a lost bus message delays delivery but never loses an event.
"""

from __future__ import annotations

from contactsync.server.bus.base import Bus, Watch
from contactsync.server.bus.memory import MemoryBus

__all__ = ["Bus", "MemoryBus", "Watch"]
