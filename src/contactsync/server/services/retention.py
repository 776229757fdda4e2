"""How long events stay in the log, and a deleted user's data in other users' logs.

- Retention: events older than `event_retention_days` (admin setting, default 30) are
  trimmed in the background (`Trimmer`, every `event_trim_interval_seconds`). Each user's
  counter keeps `trimmed_seq`, the highest seq removed, so a replay from before it is refused
  with 410 `events_trimmed` (`check_replay`) instead of silently skipping events: the client
  resyncs everything, then follows from `last_seq`.
- Deletion: when a user is deleted, the events others hold about them go (`contact.joined`,
  `profile.updated`, `relation.changed` naming them, their `message.created`, whose messages
  the deletion removes too), they leave `contacts.registered` lists, and names and
  descriptions they gave groups are blanked (`forget_user`). Ids stay: they are not personal
  data and the conversation still has the member.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import sqlalchemy as sa

from contactsync.errors import EventsTrimmed
from contactsync.server.context import Context, ReadTx, Tx
from contactsync.server.services import app_settings
from contactsync.server.store import bulk
from contactsync.server.store.tables import event_counters, events

log = logging.getLogger("contactsync.retention")
DAY_MS = 24 * 3600 * 1000


async def _cutoff(tx: ReadTx) -> int:
    """Events from before this time (ms) are past the retention period."""
    return tx.now - (await app_settings.load(tx)).event_retention_days * DAY_MS


async def due(tx: ReadTx) -> bool:
    """Whether any event is past the retention period. A read: most rounds trim nothing,
    and need neither wait for nor hold a write lock (SQLite's is the whole file's) to learn
    that."""
    cutoff = await _cutoff(tx)
    return bool(await tx.conn.scalar(sa.select(sa.exists().where(events.c.at < cutoff))))


async def trim(tx: Tx) -> int:
    """Remove events older than the retention period; returns how many went."""
    cutoff = await _cutoff(tx)
    rows = [
        (int(user), int(seq))
        for user, seq in await tx.conn.execute(
            sa.select(events.c.user_id, sa.func.max(events.c.seq))
            .where(events.c.at < cutoff)
            .group_by(events.c.user_id)
        )
    ]
    if not rows:
        return 0
    source, params = bulk.rows_source(
        tx.dialect, [("user_id", "bigint"), ("seq", "bigint")], rows, "v"
    )
    await tx.conn.execute(
        sa.text(
            f"UPDATE event_counters SET trimmed_seq = v.seq FROM {source} "
            "WHERE event_counters.user_id = v.user_id AND event_counters.trimmed_seq < v.seq"
        ),
        params,
    )
    # Only up to each user's trimmed point, so nothing beyond what the counter says is gone.
    gone = await tx.conn.execute(
        sa.text(
            "DELETE FROM events WHERE at < :cutoff AND seq <= (SELECT c.trimmed_seq FROM "
            "event_counters c WHERE c.user_id = events.user_id)"
        ),
        {"cutoff": cutoff},
    )
    return int(gone.rowcount or 0)


async def check_replay(tx: ReadTx, user_id: int, after: int) -> None:
    """EventsTrimmed when events after `after` were already trimmed from the user's log."""
    row = (
        await tx.conn.execute(
            sa.select(event_counters.c.trimmed_seq, event_counters.c.last_seq).where(
                event_counters.c.user_id == user_id
            )
        )
    ).first()
    if row is not None and after < row.trimmed_seq:
        raise EventsTrimmed(
            details={"after": after, "trimmed_seq": row.trimmed_seq, "last_seq": row.last_seq}
        )


# --- a deleted user's data in other users' logs ---------------------------------------------


def _field(dialect: str, *path: str) -> str:
    """The JSON value at `path` in events.data, as text."""
    return bulk.json_text(dialect, "events.data", *path)


async def forget_user(tx: Tx, user_id: int) -> None:
    """Remove the user's personal data from the events other users hold (run before the user
    row goes; their own log goes with it by cascade)."""
    uid = str(user_id)
    d = tx.dialect
    await tx.conn.execute(
        sa.text(
            "DELETE FROM events WHERE user_id <> :uid_int AND ("
            f"(type IN ('contact.joined', 'profile.updated', 'relation.changed') "
            f"AND {_field(d, 'user_id')} = :uid) "
            f"OR (type = 'message.created' AND {_field(d, 'sender_id')} = :uid))"
        ),
        {"uid": uid, "uid_int": user_id},
    )
    if d == "postgresql":
        listed = (
            "EXISTS (SELECT 1 FROM json_array_elements(events.data->'users') AS u "
            "WHERE u->>'user_id' = :uid)"
        )
    else:
        listed = (
            "EXISTS (SELECT 1 FROM json_each(events.data, '$.users') "
            "WHERE json_extract(value, '$.user_id') = :uid_int)"
        )
    rows = await tx.conn.execute(
        sa.text(
            "SELECT user_id, seq, type, data FROM events WHERE user_id <> :uid_int AND ("
            f"(type = 'contacts.registered' AND {listed}) "
            f"OR (type = 'conversation.created' AND {_field(d, 'conversation', 'created_by')} "
            "= :uid) "
            f"OR (type = 'conversation.updated' AND {_field(d, 'by')} = :uid))"
        ),
        {"uid": uid, "uid_int": user_id},
    )
    for owner, seq, kind, raw in rows.all():
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)  # text on SQLite
        cleaned = _cleaned(kind, data, user_id)
        where = sa.and_(events.c.user_id == owner, events.c.seq == seq)
        if cleaned is None:
            await tx.conn.execute(sa.delete(events).where(where))
        elif cleaned != data:
            await tx.conn.execute(sa.update(events).where(where).values(data=cleaned))


def _cleaned(kind: str, data: dict[str, Any], user_id: int) -> dict[str, Any] | None:
    """The event's data without the user's personal data; None when nothing is left."""
    if kind == "contacts.registered":
        users = [u for u in data.get("users", []) if u.get("user_id") != user_id]
        return {**data, "users": users} if users else None
    if kind == "conversation.created":
        conversation = dict(data.get("conversation", {}))
        if conversation.get("kind") == "group":
            conversation.update(name=None, description=None)
        return {**data, "conversation": conversation}
    # conversation.updated by the user: the names they gave go
    return {k: (None if k in ("name", "description") else v) for k, v in data.items()}


class Trimmer:
    """Trims the event log in the background, once at start and then every `interval` s."""

    def __init__(self, ctx: Context, interval: float) -> None:
        self.ctx = ctx
        self.interval = interval
        self.runs = 0  # for tests: completed trims
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """The start's round is looked at here, before serving: most find nothing (a read), and
        then the task first waits an interval; a look made by the task itself would, at every
        start, hold a second pooled connection beside the start's. A round with events to trim
        runs in the task at once, so a big trim never holds the start up."""
        try:
            async with self.ctx.read() as check:
                pending = await due(check)
        except Exception:  # the store may be down: the task tries at once
            pending = True
        if not pending:
            self.runs += 1
        self._task = asyncio.create_task(
            self._run(first_wait=0.0 if pending else self.interval), name="contactsync-trim"
        )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def round(self) -> int:
        """One trim; how many events went. Most rounds find nothing to trim, which is learnt
        in a read: only a round with events to remove takes a write transaction."""
        async with self.ctx.read() as check:
            pending = await due(check)
        if not pending:
            return 0
        async with self.ctx.tx() as tx:
            return await trim(tx)

    async def _run(self, first_wait: float) -> None:
        await asyncio.sleep(first_wait)
        while True:
            try:
                gone = await self.round()
                if gone:
                    log.info("trimmed %d events past the retention period", gone)
            except Exception:  # the store may be down: try again next round
                log.warning("event trim failed", exc_info=True)
            self.runs += 1
            await asyncio.sleep(self.interval)
