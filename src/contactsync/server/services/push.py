"""Push webhooks for users with no live connection: a durable outbox and its delivery worker.

Enqueue: inside every write transaction that appended events (a `Context.before_commit`
hook), the events whose type is in `push_event_types` and whose recipient has no live socket
(see `Bus.online`) are copied into `push_outbox` by one INSERT … SELECT, so the outbox commits
or rolls back with the events; nothing is queued while no webhook URL is set.

Deliver: each server process runs one `PushWorker`. It claims due rows (PostgreSQL: `FOR
UPDATE SKIP LOCKED`, so processes never claim the same row) by pushing their `next_attempt_at`
forward by a lease; a process that dies mid-delivery leaves rows that come due again when the
lease ends, so a restart loses nothing (delivery is at least once; receivers dedupe on `id`).
Rows of users who are online (in any process, see `Bus.online`) are dropped: the socket
delivers those. The rest go out in one POST per batch:

    {"deliveries": [{"id", "user_id", "attempt", "event": {"seq", "type", "at", "data"}}],
     "sent_at": <ms>}

with `X-Contactsync-Signature: sha256=<HMAC-SHA256 of the body with the webhook secret>`.
A 2xx answer deletes the rows; anything else (or no answer within `push_timeout_seconds`)
retries with exponential backoff, and after `push_max_attempts` the rows stay `failed` for
inspection (`GET /v1/admin/push/outbox`). At most `push_concurrency` POSTs are in flight, each
bounded by the timeout, so a receiver that never answers holds up nothing but its own pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass
from typing import Any

import httpx
import sqlalchemy as sa

from contactsync.errors import StoreUnavailable
from contactsync.server import outbound
from contactsync.server.bus.base import Bus
from contactsync.server.context import Context, ReadTx, Tx
from contactsync.server.services import app_settings
from contactsync.server.services.events import iso
from contactsync.server.services.secrets import sign
from contactsync.server.store.tables import events, push_outbox

log = logging.getLogger("contactsync.push")

PENDING = "pending"
FAILED = "failed"
STATES = (PENDING, FAILED)
# How long a stop waits to give back the rows of deliveries it cut short (they come due anyway
# when their lease ends).
RELEASE_WAIT_S = 2.0
NO_WEBHOOK_WAIT_S = 5.0  # how often a worker with no webhook set looks again

_ENQUEUE_PG = sa.text(
    """
    INSERT INTO push_outbox
        (user_id, seq, state, attempts, next_attempt_at, created_at, updated_at)
    SELECT e.user_id, e.seq, 'pending', 0, :now, :now, :now
    FROM events e
    JOIN unnest(CAST(:ids AS BIGINT[]), CAST(:firsts AS BIGINT[]), CAST(:lasts AS BIGINT[]))
        AS w(user_id, lo, hi)
      ON e.user_id = w.user_id AND e.seq BETWEEN w.lo AND w.hi
    WHERE e.type = ANY(CAST(:types AS TEXT[]))
    """
)

_ENQUEUE_SQLITE = sa.text(
    """
    INSERT INTO push_outbox
        (user_id, seq, state, attempts, next_attempt_at, created_at, updated_at)
    SELECT e.user_id, e.seq, 'pending', 0, :now, :now, :now
    FROM events e
    JOIN (
        SELECT json_extract(value, '$[0]') AS user_id, json_extract(value, '$[1]') AS lo,
               json_extract(value, '$[2]') AS hi
        FROM json_each(:ranges)
    ) AS w ON e.user_id = w.user_id AND e.seq BETWEEN w.lo AND w.hi
    WHERE e.type IN (SELECT value FROM json_each(:types))
    """
)

_CLAIM = """
    UPDATE push_outbox
    SET attempts = attempts + 1, next_attempt_at = :lease_until, updated_at = :now
    WHERE id IN (
        SELECT id FROM push_outbox
        WHERE state = 'pending' AND next_attempt_at <= :now
        ORDER BY next_attempt_at, id
        LIMIT :n {lock}
    )
    RETURNING id, user_id, seq, attempts
"""
_CLAIM_PG = sa.text(_CLAIM.format(lock="FOR UPDATE SKIP LOCKED"))
_CLAIM_SQLITE = sa.text(_CLAIM.format(lock=""))


@dataclass(frozen=True)
class Claimed:
    id: int
    user_id: int
    seq: int
    attempts: int


def backoff_seconds(
    attempts: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """Delay before the next try after `attempts` failed ones: base * 2^(n-1), capped, ±20%."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    jitter = (rng or random).uniform(0.8, 1.2)
    return min(cap, delay * jitter)


async def enqueue(tx: Tx, bus: Bus | None = None) -> int:
    """Queue this transaction's new events for push, except for users `bus` says are
    online (they get them over their sockets); returns how many rows were queued."""
    if not tx.latest:
        return 0
    settings = await app_settings.load(tx)
    if settings.push_webhook_url is None or not settings.push_event_types:
        return 0
    users = list(tx.latest)
    if bus is not None:
        online = await bus.online(users)
        users = [u for u in users if u not in online]
    if not users:
        return 0
    if tx.dialect == "postgresql":
        result = await tx.conn.execute(
            _ENQUEUE_PG,
            {
                "now": tx.now,
                "ids": users,
                "firsts": [tx.first.get(u, tx.latest[u]) for u in users],
                "lasts": [tx.latest[u] for u in users],
                "types": list(settings.push_event_types),
            },
        )
    else:
        ranges = [[u, tx.first.get(u, tx.latest[u]), tx.latest[u]] for u in users]
        result = await tx.conn.execute(
            _ENQUEUE_SQLITE,
            {
                "now": tx.now,
                "ranges": json.dumps(ranges),
                "types": json.dumps(list(settings.push_event_types)),
            },
        )
    return int(result.rowcount or 0)


async def listing(tx: ReadTx, state: str, after_id: int, limit: int) -> list[dict[str, Any]]:
    rows = await tx.conn.execute(
        sa.select(push_outbox)
        .where(push_outbox.c.state == state, push_outbox.c.id > after_id)
        .order_by(push_outbox.c.id)
        .limit(limit)
    )
    return [
        {
            "id": r.id,
            "user_id": r.user_id,
            "seq": r.seq,
            "state": r.state,
            "attempts": r.attempts,
            "next_attempt_at": r.next_attempt_at,
            "last_error": r.last_error,
            "created_at": r.created_at,
        }
        for r in rows
    ]


async def counts(tx: ReadTx) -> dict[str, int]:
    rows = await tx.conn.execute(
        sa.select(push_outbox.c.state, sa.func.count()).group_by(push_outbox.c.state)
    )
    found = {state: int(n) for state, n in rows}
    return {state: found.get(state, 0) for state in STATES}


async def retry_failed(tx: Tx, ids: list[int] | None) -> int:
    """Give failed rows (all, or those named) a fresh set of attempts, due now."""
    query = sa.update(push_outbox).where(push_outbox.c.state == FAILED)
    if ids is not None:
        query = query.where(push_outbox.c.id.in_(ids))
    result = await tx.conn.execute(
        query.values(state=PENDING, attempts=0, next_attempt_at=tx.now, updated_at=tx.now)
    )
    return int(result.rowcount or 0)


class PushWorker:
    """Delivers the outbox from this process; several processes share the work."""

    def __init__(self, ctx: Context, client: httpx.AsyncClient | None = None) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.timeout = settings.push_timeout_seconds
        self.base = settings.push_retry_base_seconds
        self.cap = settings.push_retry_max_seconds
        self.batch = settings.push_batch_size
        self.lease_ms = int((self.timeout + 30) * 1000)
        self._slots = asyncio.Semaphore(max(1, settings.push_concurrency))
        self._wake = asyncio.Event()
        self._client = client
        self._own_client = client is None
        self._task: asyncio.Task[None] | None = None
        # The deliveries in flight, each with the rows it holds leased and the lease's end (a
        # delivery a stop cut short stays until the stop has given its rows back).
        self._inflight: dict[asyncio.Task[None], tuple[list[int], int]] = {}
        self.delivered = 0  # counters for tests, benchmarks and logs
        self.skipped_online = 0

    async def enqueue(self, tx: Tx) -> None:
        """The `before_commit` hook: queue the events of users with no live socket, wake
        this worker once committed. Presence is asked here, when the event is written, and
        again at delivery: a user who was online then has it (or gets it on reconnect) and
        must not be pushed later for something already seen, however long the queue."""
        if await enqueue(tx, self.ctx.bus):
            tx.after_commit.append(self.wake)

    async def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        # The first look is the start's own read: a worker that looked from its task would, at
        # every start, hold a second pooled connection beside the start's.
        delay = 0.0
        with contextlib.suppress(Exception):  # (the store may be down: the task looks again)
            async with self.ctx.read() as tx:
                if (await app_settings.load(tx)).push_webhook_url is None:
                    delay = NO_WEBHOOK_WAIT_S
        self._task = asyncio.create_task(self._run(delay), name="push-worker")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        await self._release(list(self._inflight.values()))
        self._inflight.clear()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self, delay: float) -> None:
        while True:
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                self._wake.clear()
            try:
                delay = await self._tick()
            except StoreUnavailable:
                log.warning("push: database unavailable; retrying in 5 s")
                delay = 5.0
            except Exception:
                log.exception("push: worker step failed")
                delay = 5.0

    async def _tick(self) -> float:
        """Claim and start one batch; the seconds to wait before the next look."""
        await self._slots.acquire()
        started = False
        try:
            async with self.ctx.read() as tx:
                settings = await app_settings.load(tx)
            if settings.push_webhook_url is None:
                return NO_WEBHOOK_WAIT_S
            claimed, lease_until = await self._claim()
            if not claimed:
                return await self._until_next_due()
            task = asyncio.create_task(
                self._deliver(
                    claimed,
                    str(settings.push_webhook_url),
                    settings.push_webhook_secret or "",
                    settings.push_max_attempts,
                )
            )
            self._inflight[task] = ([c.id for c in claimed], lease_until)
            task.add_done_callback(self._done)
            started = True
            return 0.0
        finally:
            if not started:
                self._slots.release()

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            self._inflight.pop(task, None)

    async def _claim(self) -> tuple[list[Claimed], int]:
        """Up to a batch of due rows, leased to this process; and when the lease ends."""
        async with self.ctx.tx() as tx:
            query = _CLAIM_PG if tx.dialect == "postgresql" else _CLAIM_SQLITE
            lease_until = tx.now + self.lease_ms
            rows = await tx.conn.execute(
                query, {"now": tx.now, "lease_until": lease_until, "n": self.batch}
            )
            return [Claimed(r.id, r.user_id, r.seq, r.attempts) for r in rows], lease_until

    async def _release(self, leases: list[tuple[list[int], int]]) -> None:
        """Give back the rows of deliveries a stop cut short: due at once, that try not
        counted, so the next process to start delivers them without waiting out the lease. A
        row whose lease moved on (another try was recorded) is left as it is."""
        if not leases:
            return
        try:
            async with asyncio.timeout(RELEASE_WAIT_S), self.ctx.tx() as tx:
                for ids, lease_until in leases:
                    await tx.conn.execute(
                        sa.update(push_outbox)
                        .where(
                            push_outbox.c.id.in_(ids),
                            push_outbox.c.state == PENDING,
                            push_outbox.c.next_attempt_at == lease_until,
                        )
                        .values(
                            next_attempt_at=tx.now,
                            attempts=push_outbox.c.attempts - 1,
                            updated_at=tx.now,
                        )
                    )
        except Exception:  # (a database that does not answer holds up no stop for long)
            log.warning("push: could not give back %d leased deliveries at stop", len(leases))

    async def _until_next_due(self) -> float:
        async with self.ctx.read() as tx:
            due = await tx.conn.scalar(
                sa.select(sa.func.min(push_outbox.c.next_attempt_at)).where(
                    push_outbox.c.state == PENDING
                )
            )
            now = tx.now
        if due is None:
            return 5.0
        return min(5.0, max(0.01, (int(due) - now) / 1000))

    async def _deliver(
        self, claimed: list[Claimed], url: str, secret: str, max_attempts: int
    ) -> None:
        try:
            online = await self.ctx.bus.online({c.user_id for c in claimed})
            live = [c for c in claimed if c.user_id in online]
            rest = [c for c in claimed if c.user_id not in online]
            if live:
                await self._delete([c.id for c in live])
                self.skipped_online += len(live)
            if not rest:
                return
            body = await self._body(rest)
            if body is None:
                await self._delete([c.id for c in rest])
                return
            error = await self._post(url, secret, body)
            metrics = self.ctx.services.metrics
            if error is None:
                await self._delete([c.id for c in rest])
                self.delivered += len(rest)
                if metrics is not None:
                    metrics.events_delivered.labels("webhook").inc(len(rest))
            else:
                if metrics is not None:
                    metrics.webhook_failures.inc()
                await self._failed(rest, error, max_attempts)
        except StoreUnavailable:
            # The rows stay leased and come due again when the lease ends.
            log.warning("push: database unavailable during delivery; will retry")
        except Exception:
            log.exception("push: delivery step failed; will retry")
        finally:
            self._slots.release()
            self._wake.set()

    async def _body(self, rows: list[Claimed]) -> bytes | None:
        async with self.ctx.read() as tx:
            found = await tx.conn.execute(
                sa.select(events.c.user_id, events.c.seq, events.c.type, events.c.at, events.c.data)
                .select_from(
                    events.join(
                        push_outbox,
                        sa.and_(
                            push_outbox.c.user_id == events.c.user_id,
                            push_outbox.c.seq == events.c.seq,
                        ),
                    )
                )
                .where(push_outbox.c.id.in_([r.id for r in rows]))
            )
            by_key = {(r.user_id, r.seq): r for r in found}
            now = tx.now
        deliveries = []
        for row in rows:
            event = by_key.get((row.user_id, row.seq))
            if event is None:
                continue  # the event is gone with its user
            deliveries.append(
                {
                    "id": row.id,
                    "user_id": row.user_id,
                    "attempt": row.attempts,
                    "event": {
                        "seq": event.seq,
                        "type": event.type,
                        "at": iso(event.at),
                        "data": event.data,
                    },
                }
            )
        if not deliveries:
            return None
        return json.dumps(
            {"deliveries": deliveries, "sent_at": now}, separators=(",", ":"), ensure_ascii=False
        ).encode()

    async def _post(self, url: str, secret: str, body: bytes) -> str | None:
        """POST one batch; None on success, else a short description of the failure."""
        if self._client is None:  # made at the first delivery: most processes never push
            self._client = outbound.client(timeout=self.timeout)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "contactsync-push",
            "X-Contactsync-Signature": sign(secret, body),
        }
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.post(url, content=body, headers=headers)
        except TimeoutError:
            return "timeout"
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"

    async def _delete(self, ids: list[int]) -> None:
        async with self.ctx.tx() as tx:
            await tx.conn.execute(sa.delete(push_outbox).where(push_outbox.c.id.in_(ids)))

    async def _failed(self, rows: list[Claimed], error: str, max_attempts: int) -> None:
        log.warning("push: %d deliveries failed (%s)", len(rows), error)
        async with self.ctx.tx() as tx:
            give_up = [r.id for r in rows if r.attempts >= max_attempts]
            if give_up:
                await tx.conn.execute(
                    sa.update(push_outbox)
                    .where(push_outbox.c.id.in_(give_up))
                    .values(state=FAILED, last_error=error[:200], updated_at=tx.now)
                )
            retry = [r for r in rows if r.attempts < max_attempts]
            # One backoff for the whole batch: its rows have the same history.
            if retry:
                delay = backoff_seconds(max(r.attempts for r in retry), self.base, self.cap)
                await tx.conn.execute(
                    sa.update(push_outbox)
                    .where(push_outbox.c.id.in_([r.id for r in retry]))
                    .values(
                        next_attempt_at=tx.now + int(delay * 1000),
                        last_error=error[:200],
                        updated_at=tx.now,
                    )
                )
