"""Plain data the SDK hands to applications: contacts, problems, metrics, progress, events."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Contact:
    """One contact as a source sees it: a stable id, a display name and raw phone numbers."""

    id: str
    name: str | None
    phones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """A record a source could not read (a malformed vCard or CSV row); `where` is file:line."""

    where: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class InvalidEntry:
    """A number that was not synced, and why (a `contactsync.phone.REASONS` code or a source
    problem code such as `malformed_vcard`)."""

    contact_id: str | None
    name: str | None
    phone: str | None
    reason: str
    where: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SyncMetrics:
    """What one sync run did. `uploaded` counts address-book entries (numbers) sent: additions,
    renames and removals; `unchanged` counts contacts already synced and left alone."""

    total: int = 0
    uploaded: int = 0
    unchanged: int = 0
    invalid: list[InvalidEntry] = field(default_factory=list)
    failed: int = 0
    batches: int = 0
    bytes: int = 0
    duration: float = 0.0
    registered: list[dict[str, Any]] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    deleted: int = 0
    forced: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's `--json` output)."""
        out = asdict(self)
        out["invalid"] = [entry.as_dict() for entry in self.invalid]
        out["duration"] = round(self.duration, 4)
        return out


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Reported after each acknowledged batch: entries done out of entries to send."""

    done: int
    total: int
    batches: int
    metrics: SyncMetrics


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the caller's durable event log."""

    seq: int
    type: str
    at: str
    data: dict[str, Any]

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Event:
        return cls(int(raw["seq"]), str(raw["type"]), str(raw.get("at", "")), raw.get("data") or {})


class ManagerState(enum.Enum):
    """Lifecycle of a ContactsManager; methods check it and refuse illegal uses."""

    UNINITIALISED = "uninitialised"
    READY = "ready"
    DISCONNECTED = "disconnected"  # local database connection dropped on purpose
    CLOSED = "closed"
