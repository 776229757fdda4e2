"""Who may communicate with whom: blocks (either side) and restricted users (pairs only).

The one place these rules live; conversations, messages and discovery ask here.
"""

from __future__ import annotations

import sqlalchemy as sa

from contactsync.errors import Blocked, Restricted
from contactsync.server.context import Tx
from contactsync.server.store.tables import blocks, pairs, users


def pair_key(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


async def blocked_either(tx: Tx, a: int, b: int) -> bool:
    found = await tx.conn.scalar(
        sa.select(sa.literal(1))
        .where(
            sa.or_(
                sa.and_(blocks.c.blocker_id == a, blocks.c.blocked_id == b),
                sa.and_(blocks.c.blocker_id == b, blocks.c.blocked_id == a),
            )
        )
        .limit(1)
    )
    return found is not None


async def paired(tx: Tx, a: int, b: int) -> bool:
    lo, hi = pair_key(a, b)
    found = await tx.conn.scalar(
        sa.select(sa.literal(1)).where(pairs.c.a_id == lo, pairs.c.b_id == hi).limit(1)
    )
    return found is not None


async def blocked_ids(tx: Tx, user_id: int) -> set[int]:
    """Everyone `user_id` has blocked or is blocked by."""
    rows = await tx.conn.execute(
        sa.select(blocks.c.blocked_id.label("other"))
        .where(blocks.c.blocker_id == user_id)
        .union(sa.select(blocks.c.blocker_id).where(blocks.c.blocked_id == user_id))
    )
    return {row.other for row in rows}


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
