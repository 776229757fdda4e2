"""Who may learn that a user is registered (`discoverable_by`), and who hears that they joined
(`announce_join_to`): the users' own controls, honoured by every path that reveals registration.

- `discoverable_by`: "everybody" (the app's `discoverable_by_default` when the user has not
  chosen), "contacts" (only users whose number is in one of my books, or whom I hold as a
  contact relation), "nobody". A hidden user looks exactly like an unregistered number.
- `announce_join_to`: "everybody" (default: everyone whose book holds me), "contacts" (only
  those I hold too: mutual), "nobody".

Existing relations (either way) and conversations keep working: there a hidden user stays
reachable. Callers do not ask here directly: `policy.learnable` / `policy.learners`, the one
answer to "may this caller learn that user is registered", combine this with blocks.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

import sqlalchemy as sa

from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import app_settings
from contactsync.server.store import bulk
from contactsync.server.store.tables import (
    book_entries,
    conversation_members,
    relations,
    users,
)

Audience = Literal["everybody", "contacts", "nobody"]
EVERYBODY: Audience = "everybody"
CONTACTS: Audience = "contacts"
NOBODY: Audience = "nobody"
AUDIENCES = (EVERYBODY, CONTACTS, NOBODY)


async def default(tx: ReadTx) -> Audience:
    return (await app_settings.load(tx)).discoverable_by_default


def effective(column_default: str) -> sa.ColumnElement[Any]:
    """SQL for a user's effective `discoverable_by`."""
    return sa.func.coalesce(users.c.discoverable_by, sa.literal(column_default))


def effective_sql(users_alias: str, default_param: str) -> str:
    """`effective` as a fragment of a text statement: the row `users_alias` of users, the
    app's default bound as `:default_param`."""
    return f"COALESCE({users_alias}.discoverable_by, :{default_param})"


async def holds_number_of(tx: ReadTx, owners: Collection[int], user_id: int) -> set[int]:
    """Which of `owners` hold `user_id`: their number in one of their books, or a relation
    marked as contact."""
    if not owners:
        return set()
    phone = sa.select(users.c.phone).where(users.c.id == user_id).scalar_subquery()
    rows = await tx.conn.execute(
        sa.select(book_entries.c.owner_id)
        .where(
            book_entries.c.phone == phone,
            bulk.member(book_entries.c.owner_id, list(owners), tx.dialect),
        )
        .union(
            sa.select(relations.c.owner_id).where(
                relations.c.target_id == user_id,
                relations.c.contact.is_(True),
                bulk.member(relations.c.owner_id, list(owners), tx.dialect),
            )
        )
    )
    return {row[0] for row in rows}


async def connected(tx: ReadTx, user_id: int, others: Collection[int]) -> set[int]:
    """Which of `others` already share a relation (either way) or a conversation with
    `user_id`: there a hidden user stays reachable."""
    if not others:
        return set()
    ids = list(others)
    mine = conversation_members.alias("mine")
    theirs = conversation_members.alias("theirs")
    rows = await tx.conn.execute(
        sa.union(
            sa.select(relations.c.target_id).where(
                relations.c.owner_id == user_id,
                bulk.member(relations.c.target_id, ids, tx.dialect),
            ),
            sa.select(relations.c.owner_id).where(
                relations.c.target_id == user_id,
                bulk.member(relations.c.owner_id, ids, tx.dialect),
            ),
            sa.select(theirs.c.user_id)
            .select_from(mine.join(theirs, theirs.c.conversation_id == mine.c.conversation_id))
            .where(mine.c.user_id == user_id, bulk.member(theirs.c.user_id, ids, tx.dialect)),
        )
    )
    return {row[0] for row in rows}


async def hidden_by_choice(tx: ReadTx, viewer_id: int, candidates: Collection[int]) -> set[int]:
    """The candidates whose `discoverable_by` keeps `viewer_id` from learning that they are
    registered (`policy.learnable` asks this; blocks are its own part)."""
    rest = [c for c in candidates if c != viewer_id]
    if not rest:
        return set()
    level = effective(await default(tx)).label("level")
    rows = await tx.conn.execute(
        sa.select(users.c.id, level).where(
            bulk.member(users.c.id, rest, tx.dialect), level != EVERYBODY
        )
    )
    return await hidden_among(tx, viewer_id, {user_id: found for user_id, found in rows})


async def hidden_among(tx: ReadTx, viewer_id: int, levels: dict[int, str]) -> set[int]:
    """`hidden_by_choice` for users whose effective `discoverable_by` is known already (read
    with them, see `effective_sql`): {user id: level}, the viewer left out."""
    hidden: set[int] = set()
    contacts: set[int] = set()
    for user_id, found in levels.items():
        if found != EVERYBODY and user_id != viewer_id:
            (contacts if found == CONTACTS else hidden).add(user_id)
    hidden |= contacts - await holds_number_of(tx, contacts, viewer_id)
    return hidden - await connected(tx, viewer_id, hidden) if hidden else hidden


async def unseen_by(tx: Tx, user_id: int, viewers: Collection[int]) -> set[int]:
    """`hidden_by_choice` seen from the other side: the viewers `user_id`'s
    `discoverable_by` keeps from learning that the user is registered."""
    if not viewers:
        return set()
    found = await tx.conn.scalar(sa.select(users.c.discoverable_by).where(users.c.id == user_id))
    found = found or await default(tx)
    if found == EVERYBODY:
        return set()
    hidden = set(viewers) - {user_id}
    if found == CONTACTS:
        hidden -= await held_by(tx, user_id, hidden)
    return hidden - await connected(tx, user_id, hidden) if hidden else hidden


async def held_by(tx: Tx, user_id: int, others: Collection[int]) -> set[int]:
    """Which of `others` `user_id` holds: their number in one of the user's books, or a
    relation from the user marked as contact."""
    if not others:
        return set()
    rows = await tx.conn.execute(
        sa.select(users.c.id)
        .select_from(users.join(book_entries, book_entries.c.phone == users.c.phone))
        .where(
            book_entries.c.owner_id == user_id, bulk.member(users.c.id, list(others), tx.dialect)
        )
        .union(
            sa.select(relations.c.target_id).where(
                relations.c.owner_id == user_id,
                relations.c.contact.is_(True),
                bulk.member(relations.c.target_id, list(others), tx.dialect),
            )
        )
    )
    return {row[0] for row in rows}


async def join_audience(tx: Tx, user_id: int, candidates: Collection[int]) -> set[int]:
    """Which of `candidates` (holders who may learn that a new user is registered) the user's
    `announce_join_to` lets hear "X joined"."""
    if not candidates:
        return set()
    announce = await tx.conn.scalar(
        sa.select(users.c.announce_join_to).where(users.c.id == user_id)
    )
    if announce == NOBODY:
        return set()
    if announce == CONTACTS:
        return await held_by(tx, user_id, candidates)
    return set(candidates)
