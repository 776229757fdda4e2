"""The discovery quota: how many new numbers a user may check against the user base.

A token bucket per user, as Signal's contact discovery has: a large first allowance
(`discovery_quota`, default 50,000, enough for a big phone book's first sync) that refills
slowly (`discovery_quota_refill_per_day`, default 5,000). Each new number checked takes one
token. Re-checking one's own numbers is free: numbers already in one of the user's books, and
numbers checked within the last day (`discovery_checks`, which also keeps numbers that left a
book or wait in a staged upload), cost nothing. Clearing or replacing a book therefore never
gives tokens back, and a request over the quota is refused whole.

Over it: 429 `discovery_quota_exceeded` with Retry-After and details {setting, limit, quota,
remaining, used, refill_per_day, new_in_request, retry_after} (a stable shape clients build on).
"""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from contactsync.errors import DiscoveryQuotaExceeded
from contactsync.server.context import Tx
from contactsync.server.services import app_settings, ratelimit
from contactsync.server.store.bulk import in_list, rows_source, sql
from contactsync.server.store.tables import discovery_checks

DAY_MS = 24 * 3600 * 1000


def _key(user_id: int) -> str:
    return f"discovery:{user_id}"


async def charge(tx: Tx, user_id: int, n_new: int) -> None:
    """Take `n_new` from the user's discovery quota, or raise DiscoveryQuotaExceeded (and take
    nothing)."""
    if n_new <= 0:
        return
    settings = await app_settings.load(tx)
    limit = settings.discovery_quota
    per_day = settings.discovery_quota_refill_per_day
    taken = await ratelimit.take(
        tx, _key(user_id), n_new, capacity=limit, refill_per_s=per_day / 86400
    )
    if not isinstance(taken, ratelimit.Refused):
        return
    remaining = int(taken.available + ratelimit.EPSILON)
    raise DiscoveryQuotaExceeded(
        taken.retry_after,
        f"This request checks {n_new} new numbers but only {remaining} of the discovery quota "
        f"(setting discovery_quota = {limit}, refilling {per_day} a day) remain; "
        f"retry in {taken.retry_after} s.",
        details={
            "setting": "discovery_quota",
            "limit": limit,
            "quota": limit,
            "remaining": remaining,
            "used": limit - remaining,
            "refill_per_day": per_day,
            "new_in_request": n_new,
            "retry_after": taken.retry_after,
        },
    )


async def new_numbers(
    tx: Tx, user_id: int, numbers: Collection[str], held: Collection[str]
) -> list[str]:
    """The numbers among `numbers` that a check would count: not in one of the user's books
    (`held`) and not checked within the day."""
    if not set(numbers).difference(held):  # (in C: a re-check holds every number)
        return []
    unheld = [p for p in dict.fromkeys(numbers) if p not in held]
    since = {"owner": user_id, "since": tx.now - DAY_MS}
    # The day's checks of the user, when there are no more of them than numbers to ask about
    # (nearly always: none), instead of sending thousands of numbers to look them up by.
    recent = "SELECT phone FROM discovery_checks WHERE owner_id = :owner AND at > :since"
    rows = await tx.conn.execute(sql(f"{recent} LIMIT :most"), {**since, "most": len(unheld) + 1})
    known = {number for (number,) in rows}
    if len(known) > len(unheld):
        where, params = in_list(tx.dialect, "phone", unheld, "unheld")
        rows = await tx.conn.execute(sql(f"{recent} AND {where}"), {**since, **params})
        known = {number for (number,) in rows}
    return [p for p in unheld if p not in known]


async def check_numbers(
    tx: Tx, user_id: int, numbers: Collection[str], held: Collection[str], *, remember: bool
) -> None:
    """Charge the quota for the new ones among `numbers`; with `remember`, note them as checked
    today (numbers that do not go into a book: staged uploads, relations by number)."""
    new = await new_numbers(tx, user_id, numbers, held)
    if not new:
        return
    await charge(tx, user_id, len(new))
    await tx.conn.execute(
        sa.delete(discovery_checks).where(
            discovery_checks.c.owner_id == user_id, discovery_checks.c.at <= tx.now - DAY_MS
        )
    )
    if remember:
        source, rows = rows_source(tx.dialect, [("phone", "text")], [(p,) for p in new])
        await tx.conn.execute(
            sql(
                "INSERT INTO discovery_checks (owner_id, phone, at) "
                f"SELECT :owner, t.phone, :now FROM {source} WHERE true "
                "ON CONFLICT (owner_id, phone) DO UPDATE SET at = excluded.at"
            ),
            {"owner": user_id, "now": tx.now, **rows},
        )
