"""What the console pages show, read in one place: overview figures, user search, a user's page.

Read-only except `pair`/`unpair`, which follow the rule of `policy.pair_key` (one row per pair,
a_id < b_id). Figures that come from tables other features add (the push outbox, relations)
are read only when the table exists, so the console works on any schema version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from contactsync import phone as phones
from contactsync.errors import InvalidRequest
from contactsync.server.context import ReadTx, Tx
from contactsync.server.metrics import outbox_counts, table_exists
from contactsync.server.services import numbers, sessions, users
from contactsync.server.store.tables import (
    book_entries,
    conversation_members,
    conversations,
    event_counters,
    events,
    messages,
    pairs,
    upload_batches,
)
from contactsync.server.store.tables import (
    users as users_table,
)

HOUR_MS = 3600 * 1000
CHART_HOURS = 24
PAGE = 50

# Declared here, not in tables.py: the relations feature owns that table.
_relations = sa.table(
    "relations", sa.column("owner_id"), sa.column("target_id"), sa.column("phone")
)
_relations_table = sa.table(
    "relations",
    sa.column("id"),
    sa.column("owner_id"),
    sa.column("target_id"),
    sa.column("phone"),
    sa.column("contact"),
    sa.column("subscribe"),
)


@dataclass
class Overview:
    users: int
    book_entries: int
    joins_24h: int
    uploads_24h: int
    hours: list[int]  # start of each hour, ms, oldest first
    joins: list[int]
    uploads: list[int]
    outbox: dict[str, int] | None
    conversations: int = 0
    messages: int = 0


async def _per_hour(tx: ReadTx, column: sa.ColumnElement[Any], since: int) -> dict[int, int]:
    hour = (column // HOUR_MS).label("hour")
    rows = await tx.conn.execute(
        sa.select(hour, sa.func.count().label("n")).where(column >= since).group_by(hour)
    )
    return {int(row.hour): int(row.n) for row in rows}


async def overview(tx: ReadTx) -> Overview:
    first_hour = tx.now // HOUR_MS - (CHART_HOURS - 1)
    since = first_hour * HOUR_MS
    user_count = await tx.conn.scalar(sa.select(sa.func.count()).select_from(users_table))
    entries = await tx.conn.scalar(sa.select(sa.func.count()).select_from(book_entries))
    joins = await _per_hour(tx, users_table.c.created_at, since)
    # Every upload that changed a book or carried a batch_id leaves a row in upload_batches
    # (kept for days), so it counts them; a re-check that changed nothing is not counted.
    uploads = await _per_hour(tx, upload_batches.c.created_at, since)
    hours = [first_hour + i for i in range(CHART_HOURS)]
    return Overview(
        users=int(user_count or 0),
        book_entries=int(entries or 0),
        joins_24h=sum(joins.values()),
        uploads_24h=sum(uploads.values()),
        hours=[h * HOUR_MS for h in hours],
        joins=[joins.get(h, 0) for h in hours],
        uploads=[uploads.get(h, 0) for h in hours],
        outbox=await outbox_counts(tx.conn),
        conversations=int(
            await tx.conn.scalar(sa.select(sa.func.count()).select_from(conversations)) or 0
        ),
        messages=int(
            await tx.conn.scalar(
                sa.select(sa.func.count()).select_from(messages).where(messages.c.kind != "system")
            )
            or 0
        ),
    )


@dataclass(frozen=True)
class UserRow:
    id: int
    phone: str
    name: str | None
    restricted: bool
    created_at: int
    book_size: int


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _book_size(owner: sa.ColumnElement[Any]) -> sa.ScalarSelect[Any]:
    return (
        sa.select(sa.func.count())
        .select_from(book_entries)
        .where(book_entries.c.owner_id == owner)
        .scalar_subquery()
    )


async def search_users(
    tx: ReadTx, query: str, *, default_region: str | None, limit: int = PAGE
) -> list[UserRow]:
    """Users matching `query`, newest first.

    A query that reads as a phone number finds that number exactly; a run of digits finds
    numbers containing it; anything else matches names, case-insensitively. Empty: the newest.
    """
    u = users_table.c
    query = query.strip()[:100]
    conditions: list[sa.ColumnElement[bool]] = []
    if query:
        normalized = phones.try_normalize(query, default_region)
        digits = "".join(ch for ch in query if ch.isdigit())
        if normalized.e164 is not None:
            # A whole number: the unique index finds it; no scan for partial matches.
            conditions.append(u.phone == normalized.e164)
        elif len(digits) >= 3 and not any(ch.isalpha() for ch in query):
            conditions.append(u.phone.like(f"%{_like_escape(digits)}%", escape="\\"))
        if any(ch.isalpha() for ch in query) or not conditions:
            pattern = f"%{_like_escape(query.lower())}%"
            conditions.append(sa.func.lower(u.name).like(pattern, escape="\\"))
    statement = sa.select(
        u.id, u.phone, u.name, u.restricted, u.created_at, _book_size(u.id).label("book_size")
    )
    if conditions:
        statement = statement.where(sa.or_(*conditions))
    rows = await tx.conn.execute(statement.order_by(u.id.desc()).limit(limit))
    return [
        UserRow(r.id, r.phone, r.name, bool(r.restricted), r.created_at, int(r.book_size))
        for r in rows
    ]


@dataclass
class UserPage:
    user: users.User
    devices: list[dict[str, object]]
    book_size: int
    books: int
    events: int
    partners: list[UserRow]
    relations: dict[str, int] | None = field(default=None)
    book: list[dict[str, Any]] = field(default_factory=list)
    recent_events: list[dict[str, Any]] = field(default_factory=list)
    relation_rows: list[dict[str, Any]] = field(default_factory=list)
    conversations: list[dict[str, Any]] = field(default_factory=list)
    # who may find the user and who hears that they joined (None: the app default)
    privacy: dict[str, str | None] = field(default_factory=dict)


SHOWN = 50  # rows of each list on a user's page (the counts above them say how many in all)


async def _book(tx: ReadTx, user_id: int) -> list[dict[str, Any]]:
    """The first entries of the user's books, with whether each number is registered."""
    b = book_entries.c
    rows = await tx.conn.execute(
        sa.select(b.book, b.phone, b.name, users_table.c.id.label("user_id"))
        .select_from(book_entries.outerjoin(users_table, users_table.c.phone == b.phone))
        .where(b.owner_id == user_id)
        .order_by(b.book, b.name, b.phone)
        .limit(SHOWN)
    )
    return [dict(r._mapping) for r in rows]


async def _recent_events(tx: ReadTx, user_id: int) -> list[dict[str, Any]]:
    rows = await tx.conn.execute(
        sa.select(events.c.seq, events.c.type, events.c.at)
        .where(events.c.user_id == user_id)
        .order_by(events.c.seq.desc())
        .limit(20)
    )
    return [dict(r._mapping) for r in rows]


async def _relation_rows(tx: ReadTx, user_id: int) -> list[dict[str, Any]]:
    r = _relations_table.c
    rows = await tx.conn.execute(
        sa.select(r.target_id, r.phone, r.contact, r.subscribe, users_table.c.name)
        .select_from(_relations_table.outerjoin(users_table, users_table.c.id == r.target_id))
        .where(r.owner_id == user_id)
        .order_by(r.id)
        .limit(SHOWN)
    )
    return [dict(row._mapping) for row in rows]


async def _conversations(tx: ReadTx, user_id: int) -> list[dict[str, Any]]:
    """The user's conversations, most recently active first, each with its size, message
    count and (for a DM) the other member."""
    c, m = conversations.c, conversation_members.c
    others = conversation_members.alias("others")
    member_count = (
        sa.select(sa.func.count()).where(others.c.conversation_id == c.id).scalar_subquery()
    )
    message_count = (
        sa.select(sa.func.count())
        .where(messages.c.conversation_id == c.id, messages.c.kind != "system")
        .scalar_subquery()
    )
    rows = await tx.conn.execute(
        sa.select(
            c.id,
            c.kind,
            c.name,
            c.updated_at,
            m.consent,
            member_count.label("members"),
            message_count.label("messages"),
        )
        .select_from(conversations.join(conversation_members, m.conversation_id == c.id))
        .where(m.user_id == user_id)
        .order_by(c.updated_at.desc(), c.id.desc())
        .limit(SHOWN)
    )
    found = [dict(r._mapping) for r in rows]
    dms = [row["id"] for row in found if row["kind"] == "dm"]
    if dms:
        partner_rows = await tx.conn.execute(
            sa.select(m.conversation_id, users_table.c.id, users_table.c.name)
            .select_from(conversation_members.join(users_table, users_table.c.id == m.user_id))
            .where(m.conversation_id.in_(dms), m.user_id != user_id)
        )
        partners = {r.conversation_id: (r.id, r.name) for r in partner_rows}
        for row in found:
            if row["id"] in partners:
                row["with_id"], row["with_name"] = partners[row["id"]]
    return found


async def user_page(tx: ReadTx, user_id: int) -> UserPage:
    user = await users.get(tx, user_id)
    size = await tx.conn.scalar(
        sa.select(sa.func.count())
        .select_from(book_entries)
        .where(book_entries.c.owner_id == user_id)
    )
    books = await tx.conn.scalar(
        sa.select(sa.func.count(sa.distinct(book_entries.c.book))).where(
            book_entries.c.owner_id == user_id
        )
    )
    last_seq = await tx.conn.scalar(
        sa.select(event_counters.c.last_seq).where(event_counters.c.user_id == user_id)
    )
    partner_ids = (
        sa.select(pairs.c.b_id.label("other"))
        .where(pairs.c.a_id == user_id)
        .union(sa.select(pairs.c.a_id).where(pairs.c.b_id == user_id))
    )
    u = users_table.c
    partner_rows = await tx.conn.execute(
        sa.select(
            u.id, u.phone, u.name, u.restricted, u.created_at, _book_size(u.id).label("book_size")
        )
        .where(u.id.in_(partner_ids.scalar_subquery()))
        .order_by(u.id)
    )
    relations = None
    if await table_exists(tx.conn, "relations"):
        outgoing = await tx.conn.scalar(
            sa.select(sa.func.count())
            .select_from(_relations)
            .where(_relations.c.owner_id == user_id)
        )
        incoming = await tx.conn.scalar(
            sa.select(sa.func.count())
            .select_from(_relations)
            .where(sa.or_(_relations.c.target_id == user_id, _relations.c.phone == user.phone))
        )
        relations = {"outgoing": int(outgoing or 0), "incoming": int(incoming or 0)}
    return UserPage(
        user=user,
        devices=await sessions.list_devices(tx, user_id),
        book_size=int(size or 0),
        books=int(books or 0),
        events=int(last_seq or 0),
        partners=[
            UserRow(r.id, r.phone, r.name, bool(r.restricted), r.created_at, int(r.book_size))
            for r in partner_rows
        ],
        relations=relations,
        book=await _book(tx, user_id),
        recent_events=await _recent_events(tx, user_id),
        relation_rows=await _relation_rows(tx, user_id) if relations is not None else [],
        conversations=await _conversations(tx, user_id),
        privacy=await _privacy(tx, user_id),
    )


async def _privacy(tx: ReadTx, user_id: int) -> dict[str, str | None]:
    row = (
        await tx.conn.execute(
            sa.select(users_table.c.discoverable_by, users_table.c.announce_join_to).where(
                users_table.c.id == user_id
            )
        )
    ).one()
    return {"discoverable_by": row.discoverable_by, "announce_join_to": row.announce_join_to}


async def resolve_user(tx: Tx, text: str, *, default_region: str | None) -> users.User:
    """A user named by id (digits only) or by phone number (anything else)."""
    text = text.strip()
    if not text:
        raise InvalidRequest("Give a user id or a phone number.", details={"field": "other"})
    if text.isdigit() and len(text) <= 18:
        return await users.get(tx, int(text))
    e164 = numbers.normalize_phone(text, default_region, field="other")
    found = await users.find_by_phone(tx, e164)
    if found is None:
        raise InvalidRequest("No user has that number.", details={"field": "other"})
    return found
