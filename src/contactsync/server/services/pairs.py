"""Pairs: the backend marks two users as allowed to talk even when one is restricted.

Stored once per pair with a_id < b_id (`policy.pair_key`); the rule that reads them is
`policy.check_can_communicate`.
"""

from __future__ import annotations

import sqlalchemy as sa

from contactsync.errors import SelfRelation
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import policy, users
from contactsync.server.store.tables import pairs


async def pair(tx: Tx, a: int, b: int) -> bool:
    """Pair two users (idempotent). True when the pair is new."""
    if a == b:
        raise SelfRelation("A user cannot be paired with themselves.")
    await users.get(tx, a)
    await users.get(tx, b)
    if await policy.paired(tx, a, b):
        return False
    lo, hi = policy.pair_key(a, b)
    await tx.conn.execute(sa.insert(pairs).values(a_id=lo, b_id=hi, created_at=tx.now))
    return True


async def unpair(tx: Tx, a: int, b: int) -> bool:
    """Remove a pair (idempotent). True when there was one."""
    lo, hi = policy.pair_key(a, b)
    result = await tx.conn.execute(sa.delete(pairs).where(pairs.c.a_id == lo, pairs.c.b_id == hi))
    return bool(result.rowcount)


async def partners(tx: ReadTx, user_id: int) -> list[int]:
    """Everyone paired with `user_id` (NotFound for an unknown user)."""
    await users.get(tx, user_id)
    rows = await tx.conn.execute(
        sa.select(pairs.c.b_id.label("other"))
        .where(pairs.c.a_id == user_id)
        .union(sa.select(pairs.c.a_id).where(pairs.c.b_id == user_id))
    )
    return sorted(r.other for r in rows)
