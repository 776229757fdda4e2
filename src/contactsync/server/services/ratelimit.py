"""Token buckets kept in the database, so every server process shares them: the one primitive
behind every per-key limit (OTP requests, console sign-in, message sends, profile reads, the
discovery quota in `quota`).

A bucket holds up to `capacity` tokens and gains `refill_per_s` tokens a second; taking `n`
succeeds only when `n` are there. The take is one conditional `UPDATE … RETURNING` on the
bucket's row: on PostgreSQL a concurrent take waits for the row lock and re-checks the
condition against the committed row, so two requests can never both spend the last token (a
read followed by a write could). A failed request rolls back its take with everything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from contactsync.errors import RateLimited
from contactsync.server.context import Tx
from contactsync.server.store.tables import rate_buckets


@dataclass(frozen=True)
class Refused:
    """A take that did not fit: what is left and how long until `n` tokens are there."""

    available: float
    retry_after: int  # whole seconds, at least 1


# Refills are fractions: 0.99999999 tokens after an hour of 24 a day is one token.
EPSILON = 1e-6
# Tokens after refilling up to now, capped (the clock never runs the bucket backwards). The
# casts tell PostgreSQL the parameters' types, which it cannot infer from `bigint * $n`.
_NOW = "CAST(:now AS BIGINT)"
_GAINED = f"(CASE WHEN {_NOW} > at THEN {_NOW} - at ELSE 0 END) * CAST(:per_ms AS FLOAT)"
_CAP = "CAST(:cap AS FLOAT)"
_FILLED = f"CASE WHEN tokens + {_GAINED} > {_CAP} THEN {_CAP} ELSE tokens + {_GAINED} END"
_TAKE = sa.text(
    f"UPDATE rate_buckets SET tokens = {_FILLED} - CAST(:n AS FLOAT), "
    f"at = CASE WHEN {_NOW} > at THEN {_NOW} ELSE at END "
    f"WHERE key = :key AND {_FILLED} >= CAST(:n AS FLOAT) - {EPSILON} RETURNING tokens"
)


_CREATE = sa.text(
    "INSERT INTO rate_buckets (key, tokens, at) VALUES (:key, :cap, :now) "
    "ON CONFLICT (key) DO NOTHING"
)


def _available(row: Any, capacity: float, now: int, per_ms: float) -> float:
    return float(min(capacity, row.tokens + max(0, now - row.at) * per_ms))


async def take(
    tx: Tx, key: str, n: float, *, capacity: float, refill_per_s: float
) -> float | Refused:
    """Take `n` tokens from the bucket `key`; the tokens left, or Refused (nothing taken)."""
    per_ms = float(refill_per_s) / 1000.0
    params: dict[str, Any] = {
        "key": key,
        "n": float(n),
        "cap": float(capacity),
        "per_ms": per_ms,
        "now": tx.now,
    }
    left = await tx.conn.scalar(_TAKE, params)
    if left is None:
        # No bucket yet, or too few tokens. Make sure the bucket exists (it starts full), then
        # take again. The second take is conclusive; the first is not: under READ COMMITTED
        # each statement sees what was committed when it began, so a first take of a new key
        # can miss a row that a concurrent first take commits a moment later (a read after
        # the miss would then find it full, and a refusal would be wrong). The INSERT waits
        # for a concurrent inserter of the key to finish; after it the row is committed or
        # ours, and an UPDATE re-checks its condition on the latest committed version.
        await tx.conn.execute(_CREATE, params)
        left = await tx.conn.scalar(_TAKE, params)
    if left is not None:
        return float(left)
    row = (
        await tx.conn.execute(
            sa.select(rate_buckets.c.tokens, rate_buckets.c.at).where(rate_buckets.c.key == key)
        )
    ).one()
    available = _available(row, capacity, tx.now, per_ms) + EPSILON
    missing = min(n, capacity) - available
    if refill_per_s <= 0:
        wait = 365 * 24 * 3600
    else:
        wait = math.ceil(max(missing, 0) / refill_per_s)
    return Refused(available=max(0.0, available - EPSILON), retry_after=max(1, wait))


async def hit(tx: Tx, key: str, *, limit: int, window_s: int, message: str | None = None) -> None:
    """Count one hit for `key`: `limit` at once, refilling `limit` per `window_s`; raise
    RateLimited (with Retry-After) beyond it."""
    taken = await take(tx, key, 1, capacity=limit, refill_per_s=limit / window_s)
    if isinstance(taken, Refused):
        raise RateLimited(taken.retry_after, message)
