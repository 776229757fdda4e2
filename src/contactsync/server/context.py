"""What a service call needs besides its arguments, wired once by `create_app`.

`Context.tx()` opens a write transaction and yields a `Tx`: the connection, the dialect, the
time of the request, and the notices of events appended in it. The notices go out on the bus
only after the transaction commits, so no process is woken for an event it cannot read yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncConnection

from contactsync.server.bus.base import Bus
from contactsync.server.cache import Caches
from contactsync.server.clock import Clock
from contactsync.server.config import Settings
from contactsync.server.store.database import Database

if TYPE_CHECKING:
    import asyncio

    from contactsync.server.edge import Limiter
    from contactsync.server.metrics import Metrics
    from contactsync.server.number_workers import NumberWorkers
    from contactsync.server.services.admin import AdminKey
    from contactsync.server.services.otp_senders import OtpSender
    from contactsync.server.services.private_discovery import FilterCache, KeyRing
    from contactsync.server.services.push import PushWorker
    from contactsync.server.services.retention import Trimmer
    from contactsync.server.ws import Hub


@dataclass
class Services:
    """The process's long-lived parts, one field each. `create_app` wires them (the admin key,
    the trimmer and private discovery's in its start-up); a Context made elsewhere (`prepare`,
    scripts, benchmarks) has only what it sets, so a service checks for None."""

    metrics: Metrics | None = None
    otp_sender: OtpSender | None = None
    ws: Hub | None = None
    push: PushWorker | None = None
    limiter: Limiter | None = None
    admin_key: AdminKey | None = None
    trimmer: Trimmer | None = None
    # Worker processes reading a big request's phone numbers (None: read in process).
    number_workers: NumberWorkers | None = None
    # Run in a transaction that changed the app settings, with the settings before and after
    # (private discovery re-lists users who follow a changed default).
    settings_changed: list[Callable[[Tx, Any, Any], Awaitable[None]]] = field(default_factory=list)
    otp_pepper: str | None = None  # read once a process (services/otp.py)
    discovery_keys: KeyRing | None = None
    discovery_filter: FilterCache | None = None
    discovery_backfill: asyncio.Task[int] | None = None
    # A key rotation under way in this process (one at a time), and the version it goes to.
    discovery_rotation_lock: asyncio.Lock | None = None
    discovery_rotation: asyncio.Task[int] | None = None
    discovery_rotating_to: int = 0
    # Set at stop: the tagging tasks end after the batch in hand (a cancelled transaction
    # would leave its connection to be reset while cancelled, which the pool logs as an error).
    discovery_stopping: asyncio.Event | None = None


@dataclass
class ReadTx:
    """A read transaction (`Context.read()`): what a service needs to read. Service functions
    that write take a `Tx`, so mypy refuses a write inside a read (on PostgreSQL a read has no
    BEGIN: a write there would commit at once, alone)."""

    conn: AsyncConnection
    dialect: str
    now: int
    # The app's process-local caches (None: read everything from the database).
    caches: Caches | None = None
    # The process's long-lived services (`Context.services`), for the few service functions
    # that need one (the OPRF keys at registration).
    services: Services = field(default_factory=Services)
    # What this transaction did, for the metrics ("joins", "event:contact.joined", "matches"),
    # reported once it has ended well.
    counts: Counter[str] = field(default_factory=Counter)

    def changed(self, kind: str) -> bool:
        """Whether this transaction changed something of `kind`: a read changes nothing."""
        return False


@dataclass
class Tx(ReadTx):
    latest: dict[int, int] = field(default_factory=dict)
    first: dict[int, int] = field(default_factory=dict)
    after_commit: list[Any] = field(default_factory=list)
    # Follow-up steps run in a new write transaction once this one has committed: for work
    # that must see what other transactions committed meanwhile (see joins.attach_late). On
    # PostgreSQL only: SQLite has one writer at a time (every write transaction holds the
    # file's write lock from its BEGIN IMMEDIATE, in any process), so a transaction there
    # sees all that committed before it began, and nothing commits beside it.
    then: list[Callable[[Tx], Awaitable[None]]] = field(default_factory=list)
    # The bus control messages to send once this transaction has committed (see `control`).
    controls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Bus keys to wake once committed without an event of their own (the discovery filter's
    # channel, `private_discovery.WAKE`), with the value they moved to.
    signals: dict[int, int] = field(default_factory=dict)

    def control(self, kind: str, **data: Any) -> None:
        """After the commit, tell every process that something it may cache changed."""
        if (kind, data) not in self.controls:
            self.controls.append((kind, data))

    def changed(self, kind: str) -> bool:
        """Whether this transaction changed something of `kind` (so its cache is stale here)."""
        return any(k == kind for k, _ in self.controls)

    def notify(self, user_id: int, seq: int) -> None:
        if seq > self.latest.get(user_id, 0):
            self.latest[user_id] = seq
        if seq < self.first.get(user_id, seq + 1):
            self.first[user_id] = seq


@dataclass
class Context:
    settings: Settings
    db: Database
    bus: Bus
    clock: Clock
    services: Services = field(default_factory=Services)
    # Run inside every write transaction that appended events, just before it commits (the
    # push outbox is filled here, so it commits or rolls back with the events themselves).
    before_commit: list[Callable[[Tx], Awaitable[None]]] = field(default_factory=list)
    caches: Caches | None = None

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        async with self.db.write() as conn:
            tx = self._tx(conn)
            yield tx
            if tx.latest:
                for hook in self.before_commit:
                    await hook(tx)
        for kind, data in tx.controls:
            await self.bus.control(kind, data)
        if tx.counts and self.services.metrics is not None:
            self.services.metrics.record(tx.counts)
        if tx.latest or tx.signals:
            await self.bus.publish({**tx.latest, **tx.signals})
        for callback in tx.after_commit:
            await callback()
        if tx.then and not self.db.is_sqlite:
            async with self.tx() as later:
                for step in tx.then:
                    await step(later)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTx]:
        async with self.db.read() as conn:
            tx = ReadTx(conn, self.db.dialect, self.clock.now_ms(), self.caches, self.services)
            yield tx
        if tx.counts and self.services.metrics is not None:
            self.services.metrics.record(tx.counts)

    def _tx(self, conn: AsyncConnection) -> Tx:
        return Tx(
            conn=conn,
            dialect=self.db.dialect,
            now=self.clock.now_ms(),
            caches=self.caches,
            services=self.services,
        )
