"""Who may communicate with whom, and who may learn that whom is registered: blocks (either
side) and restricted users (pairs only).

The one place these rules live; conversations, messages, discovery, relations and profiles
ask here. `learnable` is the one answer to "which of these users may this caller learn are
registered (and their ids)": every path that could tell goes through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from contactsync.errors import Blocked, Restricted
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import discoverability
from contactsync.server.store.tables import blocks, pairs, users


def pair_key(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def blocked_between(a: int | sa.ColumnElement[Any], b: int | sa.ColumnElement[Any]) -> Any:
    """SQL: one of `a` and `b` (ids or id columns) has blocked the other. The one spelling of
    "blocked either way", for queries that filter many rows by it."""
    return sa.exists().where(
        sa.or_(
            sa.and_(blocks.c.blocker_id == a, blocks.c.blocked_id == b),
            sa.and_(blocks.c.blocker_id == b, blocks.c.blocked_id == a),
        )
    )


async def blocked_either(tx: Tx, a: int, b: int) -> bool:
    return bool(await tx.conn.scalar(sa.select(blocked_between(a, b))))


async def paired(tx: Tx, a: int, b: int) -> bool:
    lo, hi = pair_key(a, b)
    found = await tx.conn.scalar(
        sa.select(sa.literal(1)).where(pairs.c.a_id == lo, pairs.c.b_id == hi).limit(1)
    )
    return found is not None


async def blocked_ids(tx: ReadTx, user_id: int) -> set[int]:
    """Everyone `user_id` has blocked or is blocked by."""
    rows = await tx.conn.execute(
        sa.select(blocks.c.blocked_id.label("other"))
        .where(blocks.c.blocker_id == user_id)
        .union(sa.select(blocks.c.blocker_id).where(blocks.c.blocked_id == user_id))
    )
    return {row.other for row in rows}


async def learnable(tx: ReadTx, viewer_id: int, user_ids: Iterable[int]) -> set[int]:
    """Which of these registered users `viewer_id` may learn are registered, and their ids.

    Not anyone in a block with the viewer, either way: to a blocked user the blocker answers
    exactly as a number (or id) nobody registered, everywhere (uploads' `registered`, the
    registered listing, relations by number or id and their `pending`, conversation members,
    profiles, error texts and counts). Nor anyone whose `discoverable_by` leaves the viewer
    out (`discoverability`). The viewer may always learn themself.
    """
    wanted = set(user_ids)
    if not wanted or wanted == {viewer_id}:
        return wanted
    wanted -= await blocked_ids(tx, viewer_id)
    # and the users' own choice (`discoverable_by`), kept where a relation or a conversation
    # already exists
    return wanted - await discoverability.hidden_by_choice(tx, viewer_id, wanted)


def learnable_facts_sql(viewer_param: str, users_alias: str, default_param: str) -> str:
    """What `learnable_among` needs of each user, as columns `blocked` and `level` of a text
    statement reading the row `users_alias` of users (for a query that finds the users
    anyway, so the rule costs no statement of its own); bind the viewer's id as
    `:viewer_param` and the app's `discoverable_by_default` as `:default_param`."""
    blocked, level = learnable_facts_exprs(viewer_param, users_alias, default_param)
    return f"{blocked} AS blocked, {level} AS level"


def learnable_facts_exprs(
    viewer_param: str, users_alias: str, default_param: str
) -> tuple[str, str]:
    """`learnable_facts_sql`'s two expressions, unnamed (blocked, level): for a select list
    that aggregates them."""
    return (
        f"({users_alias}.id IN (SELECT blocked_id FROM blocks WHERE blocker_id = :{viewer_param}"
        f" UNION SELECT blocker_id FROM blocks WHERE blocked_id = :{viewer_param}))",
        discoverability.effective_sql(users_alias, default_param),
    )


async def learnable_among(
    tx: ReadTx, viewer_id: int, facts: Mapping[int, tuple[bool, str]]
) -> set[int]:
    """`learnable` for users read with their facts ({user id: (blocked, level)}, see
    `learnable_facts_sql`): a further statement only for users who chose a narrower audience
    than everybody."""
    allowed = {uid for uid, (blocked, _) in facts.items() if uid == viewer_id or not blocked}
    levels = {uid: facts[uid][1] for uid in allowed}
    if any(level != discoverability.EVERYBODY for level in levels.values()):
        allowed -= await discoverability.hidden_among(tx, viewer_id, levels)
    return allowed


async def learners(tx: Tx, user_id: int, viewer_ids: Iterable[int]) -> set[int]:
    """Which of these viewers may learn that `user_id` is registered: `learnable` seen from
    the other side (one viewer's relation by number attaching to the user, "X joined")."""
    wanted = set(viewer_ids)
    if not wanted:
        return wanted
    wanted -= await blocked_ids(tx, user_id)
    return wanted - await discoverability.unseen_by(tx, user_id, wanted)


async def check_can_communicate(tx: Tx, sender: int, recipient: int) -> None:
    """Raise Blocked or Restricted when `sender` may not reach `recipient`."""
    if sender == recipient:
        return
    if await blocked_either(tx, sender, recipient):
        raise Blocked()
    restricted = await tx.conn.scalar(
        sa.select(sa.func.count())
        .select_from(users)
        .where(users.c.id.in_((sender, recipient)), users.c.restricted.is_(True))
    )
    if restricted and not await paired(tx, sender, recipient):
        raise Restricted()
