"""Blocks: a user hides themselves from another and refuses their messages.

Writing them lives here; the effects are read elsewhere through `policy` (messages, discovery)
and `profiles` (profiles and profile events hide across a block either way).
"""

from __future__ import annotations

import sqlalchemy as sa

from contactsync.errors import SelfRelation
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import joins, users
from contactsync.server.store.tables import blocks

MAX_PAGE = 1000


async def block(tx: Tx, blocker_id: int, blocked_id: int) -> bool:
    """Block `blocked_id` (idempotent). True when the block is new."""
    if blocker_id == blocked_id:
        raise SelfRelation("A user cannot block themselves.")
    await users.get(tx, blocked_id)
    found = await tx.conn.scalar(
        sa.select(blocks.c.created_at).where(
            blocks.c.blocker_id == blocker_id, blocks.c.blocked_id == blocked_id
        )
    )
    if found is not None:
        return False
    await tx.conn.execute(
        sa.insert(blocks).values(blocker_id=blocker_id, blocked_id=blocked_id, created_at=tx.now)
    )
    return True


async def unblock(tx: Tx, blocker_id: int, blocked_id: int) -> bool:
    """Lift a block (idempotent). True when there was one."""
    result = await tx.conn.execute(
        sa.delete(blocks).where(
            blocks.c.blocker_id == blocker_id, blocks.c.blocked_id == blocked_id
        )
    )
    if not result.rowcount:
        return False
    # Relations either made by the other's number while hidden were left pending, as on a
    # number nobody registered; they come into effect now (unless a block remains).
    for owner, target in ((blocker_id, blocked_id), (blocked_id, blocker_id)):
        await joins.attach_pending(tx, await users.get(tx, target), owners=[owner])
    return True


async def blocked_by(tx: ReadTx, blocker_id: int, after: int, limit: int) -> list[int]:
    """The users `blocker_id` has blocked, by id, after `after`."""
    rows = await tx.conn.execute(
        sa.select(blocks.c.blocked_id)
        .where(blocks.c.blocker_id == blocker_id, blocks.c.blocked_id > after)
        .order_by(blocks.c.blocked_id)
        .limit(max(1, min(limit, MAX_PAGE)))
    )
    return [r.blocked_id for r in rows]
