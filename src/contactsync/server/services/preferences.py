"""A user's preferences: consent defaults and notification choices, shared by all devices.

Only what the user changed is stored (one JSON object per user); the defaults live in
`Preferences`, so adding a preference later needs no migration and every reader sees the
default until the user sets it. A change is announced to all of the user's devices with
`preferences.updated` through the event log.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from contactsync.errors import invalid_input
from contactsync.protocol import Preferences
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import events, private_discovery
from contactsync.server.store import bulk
from contactsync.server.store.tables import user_preferences, users

DEFAULTS = Preferences().model_dump()

# Preferences kept in a column of `users` rather than in the JSON object, because other code
# filters on them in SQL: discovery skips holders who muted "X joined" notices in the same
# query that finds them (`joins.holders`), and who may find a user is asked in SQL too.
# This module is still the one way to read and change them as preferences.
COLUMNS: dict[str, sa.Column[Any]] = {
    "notify_contact_joined": users.c.notify_contact_joined,
    "discoverable_by": users.c.discoverable_by,
    "announce_join_to": users.c.announce_join_to,
}


def _merged(stored: dict[str, Any] | None, row: Any = None) -> dict[str, Any]:
    # Drop keys a newer or older server no longer knows instead of failing the read.
    known = {k: v for k, v in (stored or {}).items() if k in DEFAULTS and k not in COLUMNS}
    merged = {**DEFAULTS, **known}
    if row is not None:
        for key in COLUMNS:
            value = getattr(row, key)
            if value is not None:
                merged[key] = bool(value) if isinstance(DEFAULTS[key], bool) else value
    return merged


def _query() -> sa.Select[Any]:
    return sa.select(
        users.c.id, user_preferences.c.value, *[c.label(k) for k, c in COLUMNS.items()]
    ).select_from(users.outerjoin(user_preferences, user_preferences.c.user_id == users.c.id))


async def get_preferences(tx: ReadTx, user_id: int) -> dict[str, Any]:
    """The user's preferences with defaults filled in (the defaults for an unknown user)."""
    row = (await tx.conn.execute(_query().where(users.c.id == user_id))).first()
    return _merged(None) if row is None else _merged(row.value, row)


async def get_many(tx: Tx, user_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Preferences of several users in one query; users with none stored get the defaults."""
    rows: list[Any] = []
    if user_ids:
        query = _query().where(bulk.member(users.c.id, user_ids, tx.dialect))
        rows = list((await tx.conn.execute(query)).all())
    found = {row.id: _merged(row.value, row) for row in rows}
    return {uid: found.get(uid) or _merged(None) for uid in user_ids}


async def update(
    tx: Tx, user_id: int, changes: dict[str, Any], *, device_id: str | None
) -> dict[str, Any]:
    """Apply a partial update, validated as a whole; tell the user's devices when it changed."""
    current = await get_preferences(tx, user_id)
    try:
        merged = Preferences.model_validate({**current, **changes}).model_dump()
    except ValidationError as exc:
        raise invalid_input(
            "The preferences are not valid.",
            [
                {"field": ".".join(map(str, e["loc"])), "type": e["type"], "message": e["msg"]}
                for e in exc.errors(include_url=False)
            ],
        ) from None
    if merged == current:
        return merged
    columns = {k: merged[k] for k in COLUMNS if merged[k] != current[k]}
    if columns:
        await tx.conn.execute(sa.update(users).where(users.c.id == user_id).values(**columns))
    if "discoverable_by" in columns:
        await private_discovery.relist(tx, [user_id])
    stored = {k: v for k, v in merged.items() if v != DEFAULTS[k] and k not in COLUMNS}
    updated = await tx.conn.execute(
        sa.update(user_preferences)
        .where(user_preferences.c.user_id == user_id)
        .values(value=stored, updated_at=tx.now)
    )
    if updated.rowcount == 0:
        await tx.conn.execute(
            sa.insert(user_preferences).values(user_id=user_id, value=stored, updated_at=tx.now)
        )
    changed = sorted(k for k in merged if merged[k] != current[k])
    await events.append(
        tx,
        [
            events.NewEvent(
                user_id,
                "preferences.updated",
                {"preferences": merged, "changed": changed, "device_id": device_id},
            )
        ],
    )
    return merged
