"""Users: the user row (created idempotently on the phone number), changes and real deletion.

Imports no other service: everything a registration sets off lives in `joins.py`, the region
and number rules in `numbers.py`."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from contactsync import phone as phones
from contactsync.errors import NotFound
from contactsync.server.cache import books_forget, sessions_changed
from contactsync.server.context import ReadTx, Tx
from contactsync.server.store.tables import book_entries, event_counters, users


@dataclass(frozen=True)
class User:
    id: int
    phone: str
    name: str | None
    region: str | None
    restricted: bool
    created_at: int


def _row_to_user(row: sa.Row) -> User:
    return User(
        id=row.id,
        phone=row.phone,
        name=row.name,
        region=row.region,
        restricted=bool(row.restricted),
        created_at=row.created_at,
    )


async def get(tx: ReadTx, user_id: int) -> User:
    row = (await tx.conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    if row is None:
        raise NotFound("No such user.", details={"user_id": user_id})
    return _row_to_user(row)


async def find_by_phone(tx: Tx, e164: str) -> User | None:
    row = (await tx.conn.execute(sa.select(users).where(users.c.phone == e164))).first()
    return None if row is None else _row_to_user(row)


async def create(
    tx: Tx,
    e164: str,
    *,
    name: str | None,
    discoverable_by: str | None = None,
    announce_join_to: str | None = None,
) -> tuple[User, bool]:
    """Create the user for a normalised number, or return the existing one. True when created.

    Only the user's own rows: what a registration sets off (pending relations attaching,
    "X joined") is `joins.register`'s."""
    existing = await find_by_phone(tx, e164)
    if existing is not None:
        return existing, False
    user_region = phones.region_of(e164)
    user_id = await tx.conn.scalar(
        sa.insert(users)
        .values(
            phone=e164,
            name=name,
            region=user_region,
            restricted=False,
            created_at=tx.now,
            discoverable_by=discoverable_by,
            announce_join_to=announce_join_to,
        )
        .returning(users.c.id)
    )
    assert user_id is not None
    await tx.conn.execute(sa.insert(event_counters).values(user_id=user_id, last_seq=0))
    return User(user_id, e164, name, user_region, False, tx.now), True


async def joined_since(tx: Tx, since_ms: int) -> list[User]:
    """The users created at or after this time (a few: it is meant for the last minute)."""
    rows = await tx.conn.execute(sa.select(users).where(users.c.created_at >= since_ms))
    return [_row_to_user(row) for row in rows]


async def update(
    tx: Tx,
    user_id: int,
    *,
    name: str | None = None,
    restricted: bool | None = None,
    region: str | None = None,
    fields_set: frozenset[str] = frozenset(),
) -> User:
    await get(tx, user_id)
    values: dict[str, object] = {}
    if "name" in fields_set:
        values["name"] = name
    if "restricted" in fields_set and restricted is not None:
        values["restricted"] = restricted
    if "region" in fields_set:
        values["region"] = region or None  # checked by the caller (numbers.check_region)
    if values:
        await tx.conn.execute(sa.update(users).where(users.c.id == user_id).values(**values))
        sessions_changed(tx, user_id)  # a session carries name, region and restricted
    return await get(tx, user_id)


async def delete(tx: Tx, user_id: int) -> None:
    """Delete the user and, through ON DELETE CASCADE, everything that belongs to them; their
    book entries, which hold no foreign key (tables.py), afterwards: the cascade to their
    book versions waits for any upload of theirs still writing, so this statement sees what
    it wrote."""
    result = await tx.conn.execute(sa.delete(users).where(users.c.id == user_id))
    if result.rowcount == 0:
        raise NotFound("No such user.", details={"user_id": user_id})
    await tx.conn.execute(sa.delete(book_entries).where(book_entries.c.owner_id == user_id))
    sessions_changed(tx, user_id)  # its tokens went with it: end its sockets everywhere
    books_forget(tx, user_id)  # and its books: no process keeps a copy
