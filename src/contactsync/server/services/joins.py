"""Joins: a registration and everything it sets off.

`register` creates the user for a number (idempotent); for a new user it then, in the same
transaction, attaches the relations pending on the number (`attach_pending`) and tells everyone
whose book holds the number, or who related to it before it joined, "X joined"
(`on_user_joined`). A relation by number made while the number registers is attached after
both commit (`attach_late`; the relation side asks for it with `recheck_pending`).

A holder holds the number in any form that may be the same line (services/matching). One
`contact.joined` per holder however many of their books hold the number, carrying the name
from the holder's own book (the global book's name first). Nobody is told when the app-wide
switch `notify_contact_joined` is off, holders who muted the notice are skipped, so are
holders who may not learn that the user is registered (`policy.learners`), the new user's
`announce_join_to` chooses who may hear it (services/discoverability), and a number that
joins, leaves and joins again within a day notifies once. A join creates no conversation.

`announce_join_to: contacts` names mutual contacts, and a new user holds no one yet: their
holders hear "X joined" when the user first holds them (their book, or a relation marked as
contact), within a day of the join, once (`on_contacts_held`, from uploads and relations).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa

from contactsync import phone as phones
from contactsync.server.context import Tx
from contactsync.server.services import (
    app_settings,
    discoverability,
    events,
    matching,
    numbers,
    policy,
    private_discovery,
    profiles,
    retention,
    users,
)
from contactsync.server.services.users import User
from contactsync.server.store import bulk
from contactsync.server.store.tables import book_entries, join_notices, relations
from contactsync.server.store.tables import events as events_table
from contactsync.server.store.tables import users as users_table

DAY_MS = 24 * 3600 * 1000
# How long before a relation transaction a concurrent registration may have started.
RACE_WINDOW_MS = 60_000


async def register(
    tx: Tx,
    raw_phone: str,
    *,
    name: str | None,
    region: str | None,
    default_region: str | None,
    discoverable_by: str | None = None,
    announce_join_to: str | None = None,
) -> tuple[User, bool]:
    """Create the user for a number, or return the existing one. True when created.

    A new user is tagged for private discovery, its number first picks up the relations
    pending on it, then its holders hear "X joined" (the owners of those relations among
    them). `discoverable_by` and `announce_join_to` are the new user's own choices (the
    sign-up screen's), in force from the join itself (services/discoverability.py)."""
    e164 = numbers.normalize_phone(raw_phone, numbers.resolve_region(region, default_region))
    user, created = await users.create(
        tx,
        e164,
        name=name,
        discoverable_by=discoverable_by,
        announce_join_to=announce_join_to,
    )
    if not created:
        return user, False
    tx.counts["joins"] += 1
    await private_discovery.on_registered(
        tx, user, discoverable_by=discoverable_by, announce_join_to=announce_join_to
    )
    await enter_books(tx, user)
    await attach_pending(tx, user)
    await on_user_joined(tx, user)
    # A relation by this number made at this very moment may commit after the attach above
    # looked, a book entry of it likewise: look again once this registration is visible to
    # every transaction.
    tx.then.append(lambda later: attach_late(later, [user]))
    tx.then.append(lambda later: enter_books(later, user))
    return user, True


async def enter_books(tx: Tx, user: User) -> None:
    """The book entries of the new user's number store who it is (`book_entries.user_id`):
    as many rows as books hold the number, each with its foreign-key check."""
    async with bulk.checked_rows(tx.conn, tx.dialect, None):
        await tx.conn.execute(_ENTER_BOOKS, {"uid": user.id, "phone": user.phone})


_ENTER_BOOKS = sa.text(
    "UPDATE book_entries SET user_id = :uid WHERE phone = :phone AND user_id IS NULL"
)


def recheck_entries(tx: Tx, owner_id: int, numbers: Collection[str]) -> None:
    """After this transaction commits, the owner's new book entries of numbers that registered
    while it ran store who registered them: the upload's look-up could not see an uncommitted
    registration, nor the registration's `enter_books` the upload's entries (see attach_late:
    whichever commits last sees the other). It reads the users of the last minute: a few."""
    wanted, since = set(numbers), tx.now - RACE_WINDOW_MS

    async def recheck(later: Tx) -> None:
        joined = [u for u in await users.joined_since(later, since) if u.phone in wanted]
        if joined:
            await later.conn.execute(
                _RECHECK_ENTRIES,
                [{"owner": owner_id, "uid": u.id, "phone": u.phone} for u in joined],
            )

    tx.then.append(recheck)


_RECHECK_ENTRIES = sa.text(
    "UPDATE book_entries SET user_id = :uid "
    "WHERE owner_id = :owner AND phone = :phone AND user_id IS NULL"
)


async def attach_pending(tx: Tx, user: User, owners: Sequence[int] | None = None) -> set[int]:
    """Attach relations pending on the new user's number; returns their owners.

    Runs right after the user row exists, before "X joined" goes out (which finds these
    owners through the attached relations, under its rules). The new user gets
    `relation.changed` for each attached relation (setting permitting), as for any relation
    that comes into effect. With `owners`, only theirs: after a block is lifted, the
    relations made by number while the user was hidden from them (`policy.learnable`).
    """
    rows: list[sa.Row[Any]] = []
    forms = await matching.forms_held(tx, user.id, user.phone)
    waiting_query = sa.select(relations.c.owner_id).where(
        bulk.member(relations.c.phone, forms, tx.dialect), relations.c.target_id.is_(None)
    )
    if owners is not None:
        if not owners:
            return set()
        waiting_query = waiting_query.where(
            bulk.member(relations.c.owner_id, list(owners), tx.dialect)
        )
    waiting = {owner for (owner,) in await tx.conn.execute(waiting_query)}
    if not waiting:
        return set()
    # An owner who may not learn the user is registered keeps a pending relation, exactly as
    # on a number nobody registered.
    hidden = sorted(waiting - await policy.learners(tx, user.id, waiting))
    for i, form in enumerate(forms):
        query = sa.update(relations).where(
            relations.c.phone == form, relations.c.target_id.is_(None)
        )
        if hidden:
            query = query.where(relations.c.owner_id.not_in(hidden))
        if owners is not None:
            query = query.where(bulk.member(relations.c.owner_id, sorted(waiting), tx.dialect))
        if i or owners is not None:
            # not for an owner who relates to the user by id already (by another form, or
            # from before a block)
            query = query.where(
                relations.c.owner_id.not_in(
                    sa.select(relations.c.owner_id).where(relations.c.target_id == user.id)
                )
            )
        result = await tx.conn.execute(
            query.values(target_id=user.id, phone=None, updated_at=tx.now).returning(
                relations.c.owner_id,
                relations.c.contact,
                relations.c.subscribe,
                relations.c.levels,
            )
        )
        rows += result.all()
    if rows and (await app_settings.load(tx)).relation_changed_events:
        await events.append(
            tx,
            [
                events.NewEvent(
                    user.id,
                    "relation.changed",
                    profiles.relation_changed_data(
                        r.owner_id, bool(r.contact), bool(r.subscribe), int(r.levels)
                    ),
                )
                for r in rows
            ],
        )
    return {r.owner_id for r in rows}


async def attach_late(tx: Tx, joined: Sequence[User]) -> None:
    """Attach what a concurrent transaction left pending on numbers that were registering
    meanwhile, and tell those owners "X joined".

    A relation by number and that number's registration can run at the same moment, each
    blind to the other's uncommitted rows: the registration's attach misses the relation, and
    the relation's look-up misses the user. Each side therefore looks again in a follow-up
    transaction after its own commit (`Tx.then`); whichever commits last sees the other."""
    for user in joined:
        owners = await attach_pending(tx, user)
        await on_relations_attached_late(tx, user, owners)


def recheck_pending(tx: Tx, pending: Sequence[str]) -> None:
    """After this transaction commits, attach those of these numbers (just stored as pending
    relations) that registered while it ran (see attach_late)."""
    if not pending:
        return
    wanted, since = set(pending), tx.now - RACE_WINDOW_MS

    async def recheck(later: Tx) -> None:
        joined = [
            u
            for u in await users.joined_since(later, since)
            if u.phone in wanted or not wanted.isdisjoint(phones.variants(u.phone))
        ]
        await attach_late(later, joined)

    tx.then.append(recheck)


async def leave(tx: Tx, user_id: int) -> None:
    """Delete a user: a leave in the private-discovery filter, their traces in others' events
    (`retention.forget_user`), then the user and everything that belongs to them
    (`users.delete`)."""
    await private_discovery.on_user_deleted(tx, user_id)
    await retention.forget_user(tx, user_id)
    await users.delete(tx, user_id)


async def audience(tx: Tx, user_id: int, holders: Collection[int]) -> set[int]:
    """Who of these holders hears "X joined": those who may learn that the user is registered
    (`policy.learners`: blocks, `discoverable_by`) and whom its `announce_join_to` names."""
    return await discoverability.join_audience(
        tx, user_id, await policy.learners(tx, user_id, holders)
    )


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
    # Older notices go first, so a notice still there is of the last day: this one is the
    # first of the day when its row goes in.
    await tx.conn.execute(sa.delete(join_notices).where(join_notices.c.at <= tx.now - DAY_MS))
    recorded = await tx.conn.scalar(
        bulk.insert_ignoring_conflicts(join_notices, tx.dialect, phone=phone, at=tx.now).returning(
            join_notices.c.phone
        )
    )
    return recorded is not None


async def on_user_joined(tx: Tx, user: User) -> set[int]:
    """Send `contact.joined` to the holders of the new user's number (runs after pending
    relations have attached, so their owners are holders too); returns who was told."""
    settings = await app_settings.load(tx)
    if not settings.notify_contact_joined:
        return set()
    if not await _first_join_today(tx, user.phone):
        return set()
    found = await _holders(tx, user)
    told = await audience(tx, user.id, found)
    found = {owner: held for owner, held in found.items() if owner in told}
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
        sa.select(users_table.c.id).where(
            bulk.member(users_table.c.id, sorted(owners), tx.dialect),
            users_table.c.notify_contact_joined,
            ~sa.exists().where(
                book_entries.c.owner_id == users_table.c.id, book_entries.c.phone.in_(forms)
            ),
        )
    )
    told = await audience(tx, user.id, [owner for (owner,) in rows])
    await events.append(
        tx,
        [
            events.NewEvent(owner, "contact.joined", event_data(user, None))
            for owner in sorted(told)
        ],
    )


async def on_contacts_held(tx: Tx, owner_id: int, held: Collection[int]) -> None:
    """The owner now holds these registered users (their numbers in the owner's book, or a
    relation marked as contact): when the owner joined within a day and announces the join
    to mutual contacts only, those of them who hold the owner hear "X joined" now (they
    could not at the join itself, when the owner held nobody), under the join's own rules,
    once: not a holder who heard of this join already."""
    if not held or not (await app_settings.load(tx)).notify_contact_joined:
        return
    waiting = await tx.conn.scalar(
        sa.select(users_table.c.id).where(
            users_table.c.id == owner_id,
            users_table.c.announce_join_to == discoverability.CONTACTS,
            users_table.c.created_at > tx.now - DAY_MS,
        )
    )
    if waiting is None:
        return
    user = await users.get(tx, owner_id)
    found = await _holders(tx, user)
    told = await audience(tx, owner_id, [h for h in held if h in found])
    if told:
        about: sa.ColumnElement[Any] = sa.literal_column(
            bulk.json_text(tx.dialect, "events.data", "user_id")
        )
        told -= {
            h
            for (h,) in await tx.conn.execute(
                sa.select(events_table.c.user_id).where(
                    bulk.member(events_table.c.user_id, sorted(told), tx.dialect),
                    events_table.c.type == "contact.joined",
                    events_table.c.at >= user.created_at,
                    about == str(owner_id),
                )
            )
        }
    await events.append(
        tx,
        [events.NewEvent(h, "contact.joined", event_data(user, *found[h])) for h in sorted(told)],
    )


def event_data(user: User, name: str | None, held_as: str | None = None) -> dict[str, Any]:
    """`phone` is the number as the holder's book holds it: the user's own, or a variant."""
    return {"user_id": user.id, "phone": held_as or user.phone, "name": name}
