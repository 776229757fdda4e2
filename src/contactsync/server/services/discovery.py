"""Joining: when a number registers, everyone whose book holds it (in any form that may be the
same line: services/matching) or who related to the number before it joined hears "X joined".

One `contact.joined` per holder however many of their books hold the number, carrying the name
from the holder's own book (the global book's name first). Nobody is told when the app-wide
switch `notify_contact_joined` is off, holders who muted the notice are skipped, and a number
that joins, leaves and joins again within a day notifies once. A join creates no conversation.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from contactsync.server.context import Tx
from contactsync.server.services import app_settings, events, matching
from contactsync.server.services.users import User
from contactsync.server.store import bulk
from contactsync.server.store.tables import book_entries, join_notices, users

DAY_MS = 24 * 3600 * 1000


async def holders(tx: Tx, user: User) -> dict[int, str | None]:
    """{owner_id: name in their book} for every other user whose book holds the number, or
    whose relation by number has just attached to the new user (no name then), and who
    wants join notices."""
    return {owner: name for owner, (name, _) in (await _holders(tx, user)).items()}


async def _holders(tx: Tx, user: User) -> dict[int, tuple[str | None, str]]:
    """`holders`, with the form of the number each holder's book holds (a variant, maybe)."""
    forms = await matching.forms_held(tx, user.id, user.phone)
    held, params = (
        ("phone = :phone", {"phone": user.phone})
        if len(forms) == 1
        else bulk.in_list(tx.dialect, "phone", forms, "forms")
    )
    rows = await tx.conn.execute(
        sa.text(
            "SELECT h.owner_id, h.book, h.name, h.phone FROM ("
            f"SELECT owner_id, book, name, phone FROM book_entries WHERE {held} "
            "UNION ALL SELECT owner_id, NULL, NULL, NULL FROM relations WHERE target_id = :uid"
            ") AS h JOIN users u ON u.id = h.owner_id "
            "WHERE h.owner_id <> :uid AND u.notify_contact_joined"
        ),
        {"uid": user.id, **params},
    )
    found: dict[int, tuple[str | None, str]] = {}
    for row in rows:
        # The global book's name wins; else the first named entry of any device book.
        name, held_as = found.get(row.owner_id, (None, None))
        if row.owner_id not in found or row.book == "" or name is None:
            name = row.name or name
        if held_as is None or (row.book == "" and row.phone is not None):
            held_as = row.phone
        found[row.owner_id] = (name, held_as or user.phone)
    return found


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
    found = await _holders(tx, user)
    await events.append(
        tx,
        [
            events.NewEvent(owner, "contact.joined", event_data(user, name, held_as))
            for owner, (name, held_as) in found.items()
        ],
    )
    return set(found)


async def on_relations_attached_late(tx: Tx, user: User, owners: set[int]) -> None:
    """`contact.joined` to owners whose relation by number attached only after the join (it
    was made while the number registered). Owners whose book holds the number heard at the
    join itself; muted owners hear nothing."""
    if not owners or not (await app_settings.load(tx)).notify_contact_joined:
        return
    forms = await matching.forms_held(tx, user.id, user.phone)
    rows = await tx.conn.execute(
        sa.select(users.c.id).where(
            bulk.member(users.c.id, sorted(owners), tx.dialect),
            users.c.notify_contact_joined,
            ~sa.exists().where(
                book_entries.c.owner_id == users.c.id, book_entries.c.phone.in_(forms)
            ),
        )
    )
    await events.append(
        tx,
        [events.NewEvent(owner, "contact.joined", event_data(user, None)) for (owner,) in rows],
    )


def event_data(user: User, name: str | None, held_as: str | None = None) -> dict[str, Any]:
    """`phone` is the number as the holder's book holds it: the user's own, or a variant."""
    return {"user_id": user.id, "phone": held_as or user.phone, "name": name}
