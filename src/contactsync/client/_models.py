"""Plain data the SDK hands to applications: contacts, problems, metrics, progress, events,
conversations and messages."""

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
    """A record a source could not read (a malformed vCard or CSV row); `where` is file:line,
    `name` the contact's name when it can still be made out (so the user knows whom to fix)."""

    where: str
    reason: str
    message: str
    name: str | None = None


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
    renames and removals; `unchanged` counts contacts already synced and left alone; when the
    run stopped on an `error`, `failed` counts the contacts of the book (of `total`) the server
    has not acknowledged yet: the next run sends them."""

    total: int = 0
    uploaded: int = 0
    unchanged: int = 0
    invalid: list[InvalidEntry] = field(default_factory=list)
    failed: int = 0
    batches: int = 0
    bytes: int = 0
    duration: float = 0.0
    registered: list[dict[str, Any]] = field(default_factory=list)
    # numbers read in an old form of a renumbered plan and synced as the current number
    # ({"phone": as written, "e164": the current number}; docs/numbers.md), the first time read
    rewritten: list[dict[str, Any]] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    deleted: int = 0
    forced: bool = False
    error: str | None = None
    # the discovery quota stopped the upload for now (not an error): `waiting` contacts stay
    # queued and go on the first sync after `resume_at` (epoch seconds); `quota` is the
    # server's account of it (setting, limit, remaining, refill_per_day, retry_after)
    waiting: int = 0
    retry_after: float | None = None
    resume_at: float | None = None
    quota: dict[str, Any] | None = None
    # private discovery: numbers (and variant forms) evaluated through the OPRF in this run
    evaluated: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's `--json` output)."""
        out = asdict(self)
        out["invalid"] = [entry.as_dict() for entry in self.invalid]
        out["duration"] = round(self.duration, 4)
        return out


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Reported after each acknowledged batch: entries done out of entries to send. The
    total is counted before the run's first batch goes and is the same in every report (with
    a progress callback, a first sync plans its whole book before sending rather than sending
    while the source is read)."""

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


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation (`kind` "system" records a group change in `data`).
    `seq` is None for a message still waiting to be sent (`pending`)."""

    conversation_id: int
    seq: int | None
    kind: str
    sender_id: int | None
    body: str | None
    sent_at: int | None
    client_msg_id: str | None = None
    data: dict[str, Any] | None = None

    @property
    def pending(self) -> bool:
        return self.seq is None

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Message:
        return cls(
            int(raw["conversation_id"]),
            int(raw["seq"]),
            str(raw.get("kind", "text")),
            raw.get("sender_id"),
            raw.get("body"),
            raw.get("sent_at"),
            raw.get("client_msg_id"),
            raw.get("data"),
        )


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A conversation as the local store holds it. `consent` and `role` are the caller's own;
    `member` is False once the caller left or was removed (the history stays readable);
    `cursor` is the last seq this device holds (None: no messages synced yet)."""

    id: int
    kind: str
    name: str | None
    description: str | None
    created_by: int | None
    created_at: int
    updated_at: int
    last_seq: int
    consent: str
    role: str
    member_ids: tuple[int, ...]
    member_count: int
    joined_seq: int
    member: bool = True
    cursor: int | None = None

    @classmethod
    def from_wire(
        cls, raw: dict[str, Any], *, member: bool = True, cursor: int | None = None
    ) -> ConversationView:
        return cls(
            id=int(raw["id"]),
            kind=str(raw["kind"]),
            name=raw.get("name"),
            description=raw.get("description"),
            created_by=raw.get("created_by"),
            created_at=int(raw.get("created_at", 0)),
            updated_at=int(raw.get("updated_at", 0)),
            last_seq=int(raw.get("last_seq", 0)),
            consent=str(raw.get("consent", "unknown")),
            role=str(raw.get("role", "member")),
            member_ids=tuple(int(m["user_id"]) for m in raw.get("members") or ()),
            member_count=int(raw.get("member_count", 0)),
            joined_seq=int(raw.get("joined_seq", 0)),
            member=member,
            cursor=cursor,
        )


@dataclass
class SyncSummary:
    """What `conversations.sync_all()` did: `eligible` conversations in the consent filter,
    `synced` those that had something new, `messages` stored, `excluded` the ones the device
    knew that left the filter (their new consent) or that the caller no longer belongs to."""

    eligible: int = 0
    synced: int = 0
    messages: int = 0
    sent: int = 0  # messages that were waiting to be sent and went out first
    requests: int = 0
    excluded: list[dict[str, Any]] = field(default_factory=list)
    duration: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["duration"] = round(self.duration, 4)
        return out


class ManagerState(enum.Enum):
    """Lifecycle of a ContactsManager; methods check it and refuse illegal uses."""

    UNINITIALISED = "uninitialised"
    READY = "ready"
    DISCONNECTED = "disconnected"  # local database connection dropped on purpose
    CLOSED = "closed"
