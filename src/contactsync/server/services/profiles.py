"""Profiles: named fields, each with an access level, and the one visibility rule.

Level 0 is public; levels 1..63 are the app's own. Viewer B sees owner A's field of level L when
L = 0, or A holds B as a contact with L among the access levels A granted B; B sees nothing at
all of A when either has blocked the other. A user always sees all of their own profile.

Access levels granted to one user are kept as a bitmask (level L is bit L-1, see
`relations.levels`), so "which fields may this viewer see" is `visible(level, mask)`.

A profile change writes one `profile.updated` event to every subscriber, carrying what changed
*in that subscriber's view*: fields that became visible or changed value, and names that
stopped being visible (or were removed). A subscriber whose view did not change gets nothing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from contactsync.errors import (
    InvalidLevel,
    InvalidRequest,
    NotFound,
    ProfileReadsExceeded,
    TooManyFields,
)
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import app_settings, events, policy, ratelimit
from contactsync.server.store import bulk
from contactsync.server.store.tables import book_entries, profile_fields, relations, users

MAX_LEVEL = 63
MAX_FIELDS = 64
MAX_VALUE_CHARS = 4096
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,63}")

Value = str | int | float | bool


@dataclass(frozen=True)
class Field:
    value: Value
    level: int


@dataclass(frozen=True)
class FieldChange:
    """A field to set. `level` None keeps the field's current level (0 for a new field)."""

    value: Value
    level: int | None = None


# --- levels --------------------------------------------------------------------------------


def _shown(value: object) -> object:
    return value if isinstance(value, str | int | float | bool) or value is None else repr(value)


def check_level(value: object, where: str, *, lowest: int = 0) -> int:
    """`value` as a level from `lowest` to 63, else InvalidLevel (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= MAX_LEVEL:
        raise InvalidLevel(
            f"An access level here must be an integer from {lowest} to {MAX_LEVEL}.",
            details={"field": where, "level": _shown(value)},
        )
    return value


def mask_of(levels: Iterable[object], where: str = "access_levels") -> int:
    """The bitmask of granted levels 1..63 (0 is public and cannot be granted)."""
    mask = 0
    for index, level in enumerate(levels):
        mask |= 1 << (check_level(level, f"{where}.{index}", lowest=1) - 1)
    return mask


def levels_of(mask: int) -> list[int]:
    return [level for level in range(1, MAX_LEVEL + 1) if mask >> (level - 1) & 1]


def relation_changed_data(
    owner_id: int, contact: bool, subscribe: bool, levels: int
) -> dict[str, Any]:
    """What `relation.changed` tells a user about the owner's relation to them: the owner,
    contact, subscribe and the access levels granted (none once nothing is left of it)."""
    shown = levels_of(levels) if contact or subscribe else []
    return {"user_id": owner_id, "contact": contact, "subscribe": subscribe, "access_levels": shown}


def visible(level: int, mask: int) -> bool:
    """The visibility rule for one field, given the levels the owner granted the viewer."""
    return level == 0 or bool(mask >> (level - 1) & 1)


def view(fields: Mapping[str, Field], mask: int) -> dict[str, Value]:
    """What a viewer holding `mask` sees of a profile (blocks are checked by the callers)."""
    return {name: f.value for name, f in fields.items() if visible(f.level, mask)}


def _same(a: object, b: object) -> bool:
    # JSON distinguishes true from 1 and 1 from 1.0; Python's == does not.
    return type(a) is type(b) and a == b


def view_diff(
    before: Mapping[str, Value], after: Mapping[str, Value]
) -> tuple[dict[str, Value], list[str]]:
    """(fields new or changed in `after`, names no longer present) between two views."""
    changed = {n: v for n, v in after.items() if n not in before or not _same(before[n], v)}
    removed = sorted(n for n in before if n not in after)
    return changed, removed


# --- reading -------------------------------------------------------------------------------


async def fields_of(tx: ReadTx, user_id: int) -> dict[str, Field]:
    rows = await tx.conn.execute(
        sa.select(profile_fields.c.name, profile_fields.c.value, profile_fields.c.level)
        .where(profile_fields.c.user_id == user_id)
        .order_by(profile_fields.c.name)
    )
    return {r.name: Field(r.value, r.level) for r in rows}


async def granted_mask(tx: ReadTx, owner_id: int, viewer_id: int) -> int:
    """The access levels `owner_id` granted `viewer_id` as a contact (0 when not a contact)."""
    mask = await tx.conn.scalar(
        sa.select(relations.c.levels).where(
            relations.c.owner_id == owner_id,
            relations.c.target_id == viewer_id,
            relations.c.contact.is_(True),
        )
    )
    return int(mask or 0)


async def visible_profile(tx: ReadTx, viewer_id: int, owner_id: int) -> dict[str, Value]:
    """What `viewer_id` may see of `owner_id`'s profile.

    NotFound both for an unknown user and when either has blocked the other, with the same
    message and details, so the answer does not tell a blocked user they were blocked.
    """
    exists = await tx.conn.scalar(sa.select(users.c.id).where(users.c.id == owner_id))
    if exists is None or not await policy.learnable(tx, viewer_id, [owner_id]):
        raise NotFound("No such user.", details={"user_id": owner_id})
    fields = await fields_of(tx, owner_id)
    if viewer_id == owner_id:
        return {name: f.value for name, f in fields.items()}
    return view(fields, await granted_mask(tx, owner_id, viewer_id))


async def count_read(tx: Tx, viewer_id: int, owner_id: int) -> None:
    """Count one read of `owner_id`'s profile against the viewer's quota for strangers.

    Reads of profiles the viewer has a relation with (either way) or whose number is in the
    viewer's address book are free; every other read, also of an id nobody has, takes a token
    of `profile_reads_per_hour` (so crawling by user id runs dry, and the answer beyond it
    never tells which ids exist). Over it: ProfileReadsExceeded (429, Retry-After). Meant for
    its own transaction, committed before the read, so a 404 still counts."""
    if viewer_id == owner_id:
        return
    related = await tx.conn.scalar(
        sa.select(sa.literal(1))
        .where(
            sa.or_(
                sa.exists().where(
                    relations.c.owner_id == viewer_id, relations.c.target_id == owner_id
                ),
                sa.exists().where(
                    relations.c.owner_id == owner_id, relations.c.target_id == viewer_id
                ),
                sa.exists().where(
                    book_entries.c.owner_id == viewer_id,
                    book_entries.c.phone
                    == sa.select(users.c.phone).where(users.c.id == owner_id).scalar_subquery(),
                ),
            )
        )
        .limit(1)
    )
    if related:
        return
    limit = (await app_settings.load(tx)).profile_reads_per_hour
    taken = await ratelimit.take(
        tx, f"profile-reads:{viewer_id}", 1, capacity=limit, refill_per_s=limit / 3600
    )
    if isinstance(taken, ratelimit.Refused):
        raise ProfileReadsExceeded(
            taken.retry_after,
            f"Too many profiles of users without a relation read (setting "
            f"profile_reads_per_hour = {limit}); retry in {taken.retry_after} s.",
            details={
                "setting": "profile_reads_per_hour",
                "limit": limit,
                "remaining": 0,
                "retry_after": taken.retry_after,
            },
        )


async def visible_profiles(
    tx: ReadTx, viewer_id: int, owner_ids: Sequence[int]
) -> dict[int, dict[str, Value]]:
    """`visible_profile` for many owners in three queries (for discovery listings).

    Owners blocked either way by the viewer are left out of the result entirely.
    """
    if not owner_ids:
        return {}
    allowed = await policy.learnable(tx, viewer_id, owner_ids)
    wanted = [o for o in dict.fromkeys(owner_ids) if o in allowed]
    if not wanted:
        return {}
    # Everyone who granted the viewer levels (usually few), filtered here.
    grants = await tx.conn.execute(
        sa.select(relations.c.owner_id, relations.c.levels).where(
            relations.c.target_id == viewer_id, relations.c.contact.is_(True)
        )
    )
    owners = set(wanted)
    masks = {r.owner_id: int(r.levels) for r in grants if r.owner_id in owners}
    rows = await tx.conn.execute(
        sa.select(
            profile_fields.c.user_id,
            profile_fields.c.name,
            profile_fields.c.value,
            profile_fields.c.level,
        )
        .where(bulk.member(profile_fields.c.user_id, wanted, tx.dialect))
        .order_by(profile_fields.c.user_id, profile_fields.c.name)
    )
    out: dict[int, dict[str, Value]] = {owner: {} for owner in wanted}
    for r in rows:
        mask = -1 if r.user_id == viewer_id else masks.get(r.user_id, 0)
        if mask == -1 or visible(r.level, mask):
            out[r.user_id][r.name] = r.value
    return out


# --- writing -------------------------------------------------------------------------------


def check_changes(raw: Mapping[str, FieldChange | None]) -> None:
    """Field names must be 1-64 characters of letters, digits and . _ - starting with a letter;
    levels must be 0..63; string values at most 4096 characters."""
    for name, change in raw.items():
        if not FIELD_NAME.fullmatch(name):
            raise InvalidRequest(
                "A field name is 1-64 letters, digits, '.', '_' or '-', starting with a letter.",
                details={"field": f"fields.{name}"},
            )
        if change is None:
            continue
        if change.level is not None:
            check_level(change.level, f"fields.{name}.level")
        if isinstance(change.value, str) and len(change.value) > MAX_VALUE_CHARS:
            raise InvalidRequest(
                f"A field value is at most {MAX_VALUE_CHARS} characters.",
                details={"field": f"fields.{name}.value"},
            )


async def update(
    tx: Tx, user_id: int, changes: Mapping[str, FieldChange | None]
) -> dict[str, Field]:
    """Set (or, for None, remove) profile fields; tell subscribers what changed for them.

    Returns the whole profile afterwards. Validates everything before writing anything.
    """
    check_changes(changes)
    # Lock this user's row so concurrent updates of one profile diff against each other's
    # results, not against the same old state.
    lock = bulk.locked(
        sa.select(users.c.id).where(users.c.id == user_id), tx.dialect, key_share=True
    )
    if await tx.conn.scalar(lock) is None:
        raise NotFound("No such user.", details={"user_id": user_id})
    before = await fields_of(tx, user_id)
    after = dict(before)
    for name, change in changes.items():
        if change is None:
            after.pop(name, None)
            continue
        level = (
            change.level
            if change.level is not None
            else (before[name].level if name in before else 0)
        )
        after[name] = Field(change.value, level)
    if len(after) > MAX_FIELDS:
        raise TooManyFields(details={"max_fields": MAX_FIELDS, "fields": len(after)})
    touched = [
        name
        for name in changes
        if (name in before) != (name in after)
        or (
            name in after
            and (
                not _same(before[name].value, after[name].value)
                or before[name].level != after[name].level
            )
        )
    ]
    if not touched:
        return after
    await tx.conn.execute(
        sa.delete(profile_fields).where(
            profile_fields.c.user_id == user_id, profile_fields.c.name.in_(touched)
        )
    )
    written = [
        {
            "user_id": user_id,
            "name": name,
            "value": after[name].value,
            "level": after[name].level,
            "updated_at": tx.now,
        }
        for name in touched
        if name in after
    ]
    if written:
        await tx.conn.execute(sa.insert(profile_fields), written)
    await _fan_out(tx, user_id, before, after, touched)
    return after


async def subscriber_masks(tx: Tx, owner_id: int) -> list[tuple[int, int]]:
    """(subscriber, levels the owner granted them) for every subscriber not blocked either way."""
    sub = relations.alias("sub")
    grant = relations.alias("grant")
    rows = await tx.conn.execute(
        sa.select(sub.c.owner_id, sa.func.coalesce(grant.c.levels, 0).label("mask"))
        .select_from(
            sub.outerjoin(
                grant,
                sa.and_(
                    grant.c.owner_id == owner_id,
                    grant.c.target_id == sub.c.owner_id,
                    grant.c.contact.is_(True),
                ),
            )
        )
        .where(
            sub.c.target_id == owner_id,
            sub.c.subscribe.is_(True),
            ~policy.blocked_between(owner_id, sub.c.owner_id),
        )
    )
    return [(r.owner_id, int(r.mask)) for r in rows]


async def _fan_out(
    tx: Tx,
    owner_id: int,
    before: Mapping[str, Field],
    after: Mapping[str, Field],
    touched: Sequence[str],
) -> None:
    """One profile.updated per subscriber whose view changed, holding only that change.

    Subscribers are grouped by the levels they were granted: there are few distinct masks, so
    the diff is computed once per mask, not once per subscriber.
    """
    recipients = await subscriber_masks(tx, owner_id)
    if not recipients:
        return
    old = {n: before[n] for n in touched if n in before}
    new = {n: after[n] for n in touched if n in after}
    by_mask: dict[int, list[int]] = defaultdict(list)
    for subscriber, mask in recipients:
        by_mask[mask].append(subscriber)
    out: list[events.NewEvent] = []
    for mask, subscribers in by_mask.items():
        changed, removed = view_diff(view(old, mask), view(new, mask))
        if not changed and not removed:
            continue
        data: dict[str, Any] = {"user_id": owner_id, "fields": changed, "removed": removed}
        out.extend(events.NewEvent(s, "profile.updated", data) for s in subscribers)
    await events.append(tx, out)
