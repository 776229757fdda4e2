"""The durable per-user event log: every notification is a row here before it goes anywhere.

Each user has a counter row; appending locks the counters of the recipients (in user-id order,
so concurrent fan-outs cannot deadlock), advances them, and inserts the events with the new
`seq` values, all inside the caller's transaction. Because a user's counter row stays locked
until commit, a user's events commit in `seq` order: a reader that has seen seq N will never
later find a smaller one appear.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from contactsync.server.context import ReadTx, Tx
from contactsync.server.store.bulk import checked_rows
from contactsync.server.store.tables import events

MAX_PAGE = 1000


@dataclass(frozen=True)
class NewEvent:
    user_id: int
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    at: int
    data: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "at": iso(self.at), "data": self.data}


def iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


_ADVANCE_PG = sa.text(
    """
    WITH wanted AS (
        SELECT unnest(CAST(:ids AS BIGINT[])) AS user_id, unnest(CAST(:ns AS BIGINT[])) AS n
    ), locked AS (
        SELECT c.user_id FROM event_counters c JOIN wanted w ON w.user_id = c.user_id
        ORDER BY c.user_id FOR UPDATE OF c
    )
    UPDATE event_counters AS c SET last_seq = c.last_seq + w.n
    FROM wanted w, locked l
    WHERE c.user_id = w.user_id AND l.user_id = w.user_id
    RETURNING c.user_id, c.last_seq
    """
)

_INSERT_PG = sa.text(
    """
    INSERT INTO events (user_id, seq, type, at, data)
    SELECT u, s, t, :at, CAST(d AS JSON)
    FROM unnest(CAST(:users AS BIGINT[]), CAST(:seqs AS BIGINT[]), CAST(:types AS TEXT[]),
                CAST(:datas AS TEXT[])) AS x(u, s, t, d)
    """
)

# SQLite has one writer at a time, so no lock ordering is needed.
_ADVANCE_SQLITE = sa.text(
    """
    UPDATE event_counters SET last_seq = last_seq + w.n
    FROM (
        SELECT json_extract(value, '$[0]') AS user_id, json_extract(value, '$[1]') AS n
        FROM json_each(:pairs)
    ) AS w
    WHERE event_counters.user_id = w.user_id
    RETURNING event_counters.user_id, event_counters.last_seq
    """
)


async def append(tx: Tx, new: Sequence[NewEvent]) -> list[tuple[int, int]]:
    """Append events to their recipients' logs; returns (user_id, seq) for each one written.

    Events for users that no longer exist are dropped. The recipients' processes are woken
    after the transaction commits (see `Context.tx`).
    """
    if not new:
        return []
    counts = Counter(event.user_id for event in new)
    if tx.dialect == "postgresql":
        result = await tx.conn.execute(
            _ADVANCE_PG, {"ids": list(counts), "ns": list(counts.values())}
        )
    else:
        result = await tx.conn.execute(
            _ADVANCE_SQLITE, {"pairs": json.dumps([[u, n] for u, n in counts.items()])}
        )
    next_seq = {row.user_id: row.last_seq - counts[row.user_id] for row in result}
    rows: list[dict[str, Any]] = []
    written: list[tuple[int, int]] = []
    for event in new:
        if event.user_id not in next_seq:
            continue
        next_seq[event.user_id] += 1
        seq = next_seq[event.user_id]
        rows.append(
            {
                "user_id": event.user_id,
                "seq": seq,
                "type": event.type,
                "at": tx.now,
                "data": event.data,
            }
        )
        written.append((event.user_id, seq))
        tx.notify(event.user_id, seq)
        tx.counts["event:" + event.type] += 1
    if rows:
        if tx.dialect == "postgresql":
            # One statement for the whole fan-out; a data dict shared by many recipients (a
            # group message) is serialised once.
            encoded: dict[int, str] = {}
            for row in rows:
                key = id(row["data"])
                if key not in encoded:
                    encoded[key] = json.dumps(row["data"], separators=(",", ":"))
            async with checked_rows(tx.conn, tx.dialect, len(rows)):
                await tx.conn.execute(
                    _INSERT_PG,
                    {
                        "users": [r["user_id"] for r in rows],
                        "seqs": [r["seq"] for r in rows],
                        "types": [r["type"] for r in rows],
                        "at": tx.now,
                        "datas": [encoded[id(r["data"])] for r in rows],
                    },
                )
        else:
            await tx.conn.execute(sa.insert(events), rows)
    return written


async def read(tx: ReadTx, user_id: int, after: int, limit: int) -> list[Event]:
    rows = await tx.conn.execute(
        sa.select(events.c.seq, events.c.type, events.c.at, events.c.data)
        .where(events.c.user_id == user_id, events.c.seq > after)
        .order_by(events.c.seq)
        .limit(min(limit, MAX_PAGE))
    )
    return [Event(r.seq, r.type, r.at, r.data) for r in rows]


async def last_seq(tx: ReadTx, user_id: int) -> int:
    value = await tx.conn.scalar(
        sa.text("SELECT last_seq FROM event_counters WHERE user_id = :u"), {"u": user_id}
    )
    return int(value or 0)
