"""Joining: when a number registers, everyone whose book holds it (or who related to the
number before it joined) hears "X joined".

One `contact.joined` per holder however many of their books hold the number, carrying the name
from the holder's own book (the global book's name first). Nobody is told when the app-wide
switch `notify_contact_joined` is off, holders who muted the notice are skipped, and a number
that joins, leaves and joins again within a day notifies once. A join creates no conversation.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from contactsync.server.context import Tx
from contactsync.server.services import app_settings, events
from contactsync.server.services.users import User
from contactsync.server.store import bulk
from contactsync.server.store.tables import book_entries, join_notices, users

DAY_MS = 24 * 3600 * 1000


async def holders(tx: Tx, user: User) -> dict[int, str | None]:
    """{owner_id: name in their book} for every other user whose book holds the number, or
    whose relation by number has just attached to the new user (no name then), and who
    wants join notices."""
    rows = await tx.conn.execute(
        sa.text(
            "SELECT h.owner_id, h.book, h.name FROM ("
            "SELECT owner_id, book, name FROM book_entries WHERE phone = :phone "
            "UNION ALL SELECT owner_id, NULL, NULL FROM relations WHERE target_id = :uid"
            ") AS h JOIN users u ON u.id = h.owner_id "
            "WHERE h.owner_id <> :uid AND u.notify_contact_joined"
        ),
        {"phone": user.phone, "uid": user.id},
    )
    names: dict[int, str | None] = {}
    for row in rows:
        # The global book's name wins; else the first named entry of any device book.
        if row.owner_id not in names or row.book == "" or names[row.owner_id] is None:
            names[row.owner_id] = row.name or names.get(row.owner_id)
    return names


async def _first_join_today(tx: Tx, phone: str) -> bool:
    """Record this join; False when the number already caused notices within a day."""
    last = await tx.conn.scalar(sa.select(join_notices.c.at).where(join_notices.c.phone == phone))
    await tx.conn.execute(sa.delete(join_notices).where(join_notices.c.at <= tx.now - DAY_MS))
    if last is not None and last > tx.now - DAY_MS:
        return False
    await tx.conn.execute(sa.delete(join_notices).where(join_notices.c.phone == phone))
    await tx.conn.execute(sa.insert(join_notices).values(phone=phone, at=tx.now))
    return True


async def on_user_joined(tx: Tx, user: User) -> set[int]:
    """Send `contact.joined` to the holders of the new user's number (runs after pending
    relations have attached, so their owners are holders too); returns who was told."""
    settings = await app_settings.load(tx)
    if not settings.notify_contact_joined:
        return set()
    if not await _first_join_today(tx, user.phone):
        return set()
    names = await holders(tx, user)
    await events.append(
        tx,
        [
            events.NewEvent(owner, "contact.joined", event_data(user, name))
            for owner, name in names.items()
        ],
    )
    return set(names)


async def on_relations_attached_late(tx: Tx, user: User, owners: set[int]) -> None:
    """`contact.joined` to owners whose relation by number attached only after the join (it
    was made while the number registered). Owners whose book holds the number heard at the
    join itself; muted owners hear nothing."""
    if not owners or not (await app_settings.load(tx)).notify_contact_joined:
        return
    rows = await tx.conn.execute(
        sa.select(users.c.id).where(
            bulk.member(users.c.id, sorted(owners), tx.dialect),
            users.c.notify_contact_joined,
            ~sa.exists().where(
                book_entries.c.owner_id == users.c.id, book_entries.c.phone == user.phone
            ),
        )
    )
    await events.append(
        tx,
        [events.NewEvent(owner, "contact.joined", event_data(user, None)) for (owner,) in rows],
    )


def event_data(user: User, name: str | None) -> dict[str, Any]:
    return {"user_id": user.id, "phone": user.phone, "name": name}
