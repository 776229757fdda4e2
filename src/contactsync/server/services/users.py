"""Users: registration (idempotent on the phone number), changes and real deletion."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from contactsync import phone as phones
from contactsync.errors import InvalidPhone, InvalidRegion, NotFound
from contactsync.server.context import Tx
from contactsync.server.services import sessions
from contactsync.server.store.tables import event_counters, users


@dataclass(frozen=True)
class User:
    id: int
    phone: str
    name: str | None
    region: str | None
    restricted: bool
    created_at: int


def resolve_region(region: str | None, *fallbacks: str | None) -> str | None:
    """The first usable region: the request's (which must be valid), else the fallbacks."""
    if region:
        code = phones.valid_region(region)
        if code is None:
            raise InvalidRegion(details={"region": region})
        return code
    for candidate in fallbacks:
        if candidate:
            return candidate
    return None


def normalize_phone(raw: str, region: str | None, field: str = "phone") -> str:
    try:
        return phones.normalize(raw, region)
    except phones.InvalidNumber as exc:
        raise InvalidPhone(exc.reason, field=field) from None


def _row_to_user(row: sa.Row) -> User:
    return User(
        id=row.id,
        phone=row.phone,
        name=row.name,
        region=row.region,
        restricted=bool(row.restricted),
        created_at=row.created_at,
    )


async def get(tx: Tx, user_id: int) -> User:
    row = (await tx.conn.execute(sa.select(users).where(users.c.id == user_id))).first()
    if row is None:
        raise NotFound("No such user.", details={"user_id": user_id})
    return _row_to_user(row)


async def find_by_phone(tx: Tx, e164: str) -> User | None:
    row = (await tx.conn.execute(sa.select(users).where(users.c.phone == e164))).first()
    return None if row is None else _row_to_user(row)


async def register(
    tx: Tx, raw_phone: str, *, name: str | None, region: str | None, default_region: str | None
) -> tuple[User, bool]:
    """Create the user for a number, or return the existing one. True when created."""
    region = resolve_region(region, default_region)
    e164 = normalize_phone(raw_phone, region)
    existing = await find_by_phone(tx, e164)
    if existing is not None:
        return existing, False
    user_region = phones.region_of(e164)
    user_id = await tx.conn.scalar(
        sa.insert(users)
        .values(phone=e164, name=name, region=user_region, restricted=False, created_at=tx.now)
        .returning(users.c.id)
    )
    assert user_id is not None
    await tx.conn.execute(sa.insert(event_counters).values(user_id=user_id, last_seq=0))
    user = User(user_id, e164, name, user_region, False, tx.now)
    tx.counts["joins"] += 1
    # Imported here: both build on this module. Address-book holders hear first; relations
    # stored on the number then attach, and their owners not told yet get contact.joined.
    from contactsync.server.services import discovery, relations

    await relations.attach_pending(tx, user)
    await discovery.on_user_joined(tx, user)
    # A relation by this number made at this very moment may commit after the attach above
    # looked: look again once this registration is visible to every transaction.
    tx.then.append(lambda later: relations.attach_late(later, [user]))
    return user, True


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
        values["region"] = resolve_region(region) if region else None
    if values:
        await tx.conn.execute(sa.update(users).where(users.c.id == user_id).values(**values))
        sessions.changed(tx, user_id)  # a session carries name, region and restricted
    return await get(tx, user_id)


async def delete(tx: Tx, user_id: int) -> None:
    """Delete the user and, through ON DELETE CASCADE, everything that belongs to them."""
    result = await tx.conn.execute(sa.delete(users).where(users.c.id == user_id))
    if result.rowcount == 0:
        raise NotFound("No such user.", details={"user_id": user_id})
    sessions.changed(tx, user_id)  # its tokens went with it: end its sockets everywhere
