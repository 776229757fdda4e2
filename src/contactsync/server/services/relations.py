"""Relations from one user (the owner) to another: contact (with access levels) and subscribe.

A relation is addressed by user id or by phone number. A number that is not registered yet
keeps a pending relation (`target_id` NULL, `phone` set) that attaches when the number joins
(`joins.attach_pending`); the owner then hears `contact.joined`.

`mode` decides what `access_levels` does to a relation that exists: "replace" overwrites the
granted levels (mesibo's sync), "merge" only adds to them (syncAsUpdate). `contact` and
`subscribe` are set as given, or kept when left out; a new relation is a contact unless told
otherwise. A relation that is neither contact nor subscription is deleted.

Single changes and the bulk synchroniser share one path (`_apply`): it reads the existing rows
for all keys at once (`_existing`), decides each row's new state in Python (`next_state`), and
writes the inserts, the updates and the deletions with one set-based statement each, in the
caller's transaction.
`relation.changed` goes to each registered user whose relation changed, where the app setting
says so and neither side blocks the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa

from contactsync import phone as phones
from contactsync.errors import (
    InvalidRequest,
    NotFound,
    SelfRelation,
    TooManyContacts,
)
from contactsync.server import cursors, number_workers
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import (
    addressbook,
    app_settings,
    events,
    joins,
    matching,
    numbers,
    policy,
    profiles,
    users,
)
from contactsync.server.store import bulk
from contactsync.server.store.tables import relations
from contactsync.server.store.tables import users as users_table

Mode = Literal["replace", "merge"]
MAX_SYNC_PHONES = 20_000
MAX_PAGE = 1000


@dataclass(frozen=True)
class Change:
    """What a request asks of a relation. None keeps the current value.

    `new_contact` is `contact` for a relation that does not exist yet and `contact` is None.
    """

    contact: bool | None = None
    subscribe: bool | None = None
    mask: int | None = None
    mode: Mode = "replace"
    new_contact: bool = True


@dataclass(frozen=True)
class Relation:
    id: int
    owner_id: int
    target_id: int | None
    phone: str | None
    contact: bool
    subscribe: bool
    levels: int
    created_at: int
    updated_at: int

    def wire(self) -> dict[str, Any]:
        return {
            "user_id": self.target_id,
            "phone": self.phone,
            "pending": self.target_id is None,
            "contact": self.contact,
            "subscribe": self.subscribe,
            "access_levels": profiles.levels_of(self.levels),
            "updated_at": self.updated_at,
        }


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    pending: int = 0
    invalid: list[dict[str, Any]] = field(default_factory=list)
    rewritten: list[dict[str, Any]] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "pending": self.pending,
            "invalid": self.invalid,
            "rewritten": self.rewritten,
        }


State = tuple[bool, bool, int]  # contact, subscribe, levels


def next_state(existing: State | None, change: Change) -> State:
    """The relation's state after `change` (the replace/merge rule lives here)."""
    if existing is None:
        contact = change.new_contact if change.contact is None else change.contact
        return contact, bool(change.subscribe), change.mask or 0
    old_contact, old_subscribe, old_levels = existing
    contact = old_contact if change.contact is None else change.contact
    subscribe = old_subscribe if change.subscribe is None else change.subscribe
    if change.mask is None:
        levels = old_levels
    elif change.mode == "merge":
        levels = old_levels | change.mask
    else:
        levels = change.mask
    return contact, subscribe, levels


def _relation(row: Any) -> Relation:
    return Relation(
        id=row.id,
        owner_id=row.owner_id,
        target_id=row.target_id,
        phone=row.phone,
        contact=bool(row.contact),
        subscribe=bool(row.subscribe),
        levels=int(row.levels),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# --- set-based reads and writes -----------------------------------------------------------


async def _insert(tx: Tx, owner_id: int, rows: list[tuple[Any, ...]]) -> None:
    """rows: (target_id, phone, contact, subscribe, levels)."""
    source, params = bulk.rows_source(
        tx.dialect,
        [
            ("target_id", "bigint"),
            ("phone", "text"),
            ("contact", "bool"),
            ("subscribe", "bool"),
            ("levels", "bigint"),
        ],
        rows,
        alias="v",
    )
    await tx.conn.execute(
        sa.text(
            "INSERT INTO relations"
            " (owner_id, target_id, phone, contact, subscribe, levels, created_at, updated_at)"
            " SELECT :owner, v.target_id, v.phone, v.contact, v.subscribe, v.levels, :now, :now"
            f" FROM {source}"
        ),
        {"owner": owner_id, "now": tx.now, **params},
    )


async def _update(tx: Tx, rows: list[tuple[int, bool, bool, int]]) -> None:
    """rows: (relation id, contact, subscribe, levels)."""
    source, params = bulk.rows_source(
        tx.dialect,
        [("id", "bigint"), ("contact", "bool"), ("subscribe", "bool"), ("levels", "bigint")],
        rows,
        alias="v",
    )
    await tx.conn.execute(
        sa.text(
            "UPDATE relations SET contact = v.contact, subscribe = v.subscribe,"
            f" levels = v.levels, updated_at = :now FROM {source} WHERE relations.id = v.id"
        ),
        {"now": tx.now, **params},
    )


async def _lock_owner(tx: Tx, owner_id: int) -> None:
    # One writer of a user's relations at a time on PostgreSQL, so two concurrent syncs cannot
    # both insert the same new relation (SQLite already has a single writer).
    mine = sa.select(users_table.c.id).where(users_table.c.id == owner_id)
    await tx.conn.execute(bulk.locked(mine, tx.dialect, key_share=True))


WHOLE_READ = 1000


async def _existing(
    tx: Tx, owner_id: int, target_ids: Sequence[int], pending: Sequence[str]
) -> dict[int | str, tuple[int, State]]:
    """The owner's current relations for these keys: key -> (relation id, state).

    A big sync reads all of the owner's relations (one index range scan) and matches them
    here: its cost then does not hang on the planner's row estimates, which are wrong for a
    table that just grew in bulk, and a wrong guess about a 10,000-element list is costly.
    """
    cols = (relations.c.id, relations.c.contact, relations.c.subscribe, relations.c.levels)
    out: dict[int | str, tuple[int, State]] = {}
    if len(target_ids) + len(pending) >= WHOLE_READ:
        targets, phones = set(target_ids), set(pending)
        everything = await tx.conn.execute(
            sa.select(relations.c.target_id, relations.c.phone, *cols).where(
                relations.c.owner_id == owner_id
            )
        )
        for target, number, rid, contact, subscribe, levels in everything:
            key = target if target is not None else number
            if key in targets or key in phones:
                out[key] = (rid, (bool(contact), bool(subscribe), int(levels)))
        return out
    if target_ids:
        rows = await tx.conn.execute(
            sa.select(relations.c.target_id, *cols).where(
                relations.c.owner_id == owner_id,
                bulk.member(relations.c.target_id, target_ids, tx.dialect),
            )
        )
        out.update({k: (i, (bool(c), bool(s), int(lv))) for k, i, c, s, lv in rows})
    if pending:
        rows = await tx.conn.execute(
            sa.select(relations.c.phone, *cols).where(
                relations.c.owner_id == owner_id,
                relations.c.target_id.is_(None),
                bulk.member(relations.c.phone, pending, tx.dialect),
            )
        )
        out.update({k: (i, (bool(c), bool(s), int(lv))) for k, i, c, s, lv in rows})
    return out


async def _apply(
    tx: Tx, owner_id: int, target_ids: Sequence[int], pending: Sequence[str], change: Change
) -> Outcome:
    """Apply `change` to the owner's relations with these users and pending numbers."""
    await _lock_owner(tx, owner_id)
    outcome = Outcome(pending=len(pending))
    # key (target id, or number while pending) -> (relation id, state); plain tuples because
    # this loop runs once per number of a bulk sync.
    existing = await _existing(tx, owner_id, target_ids, pending)
    inserts: list[tuple[Any, ...]] = []
    updates: list[tuple[int, bool, bool, int]] = []
    deletes: list[int] = []
    changed: dict[int, State] = {}
    keys: list[int | str] = [*target_ids, *pending]
    for key in keys:
        found = existing.get(key)
        state = next_state(found[1] if found else None, change)
        contact, subscribe, levels = state
        empty = not contact and not subscribe
        if found is None:
            if empty:
                outcome.unchanged += 1
                continue
            if isinstance(key, int):
                inserts.append((key, None, contact, subscribe, levels))
            else:
                inserts.append((None, key, contact, subscribe, levels))
            outcome.created += 1
        elif found[1] == state:
            outcome.unchanged += 1
            continue
        elif empty:
            deletes.append(found[0])
            outcome.removed += 1
        else:
            updates.append((found[0], contact, subscribe, levels))
            outcome.updated += 1
        if isinstance(key, int):
            changed[key] = state
    if inserts:
        await _insert(tx, owner_id, inserts)
        joins.recheck_pending(tx, [number for _, number, *_ in inserts if number is not None])
    if updates:
        await _update(tx, updates)
    if deletes:
        await tx.conn.execute(
            sa.delete(relations).where(bulk.member(relations.c.id, deletes, tx.dialect))
        )
    await _announce(tx, owner_id, changed)
    # a new user who announces the join to mutual contacts: those it holds now
    became = [
        t
        for t, (contact, *_) in changed.items()
        if contact and not (t in existing and existing[t][1][0])
    ]
    await joins.on_contacts_held(tx, owner_id, became)
    return outcome


async def _announce(tx: Tx, owner_id: int, changed: dict[int, State]) -> None:
    """relation.changed to each user whose relation from `owner_id` changed."""
    if not changed or not (await app_settings.load(tx)).relation_changed_events:
        return
    hidden = await policy.blocked_ids(tx, owner_id)
    await events.append(
        tx,
        [
            events.NewEvent(
                target, "relation.changed", profiles.relation_changed_data(owner_id, *state)
            )
            for target, state in changed.items()
            if target not in hidden
        ],
    )


# --- the calls -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who is asking: the id, their own number and region (to read numbers without a code)."""

    user_id: int
    phone: str
    region: str | None


async def _resolve(tx: Tx, caller: Caller, target: str) -> int | str:
    """A user id for a registered target, else the E.164 number of a pending one."""
    if target.isdigit() and not target.startswith("0"):
        if len(target) > 18:  # beyond any id this server hands out
            raise NotFound("No such user.", details={"user_id": target})
        user_id = int(target)
        if user_id == caller.user_id:
            raise SelfRelation()
        await users.get(tx, user_id)
        if not await policy.learnable(tx, caller.user_id, [user_id]):
            raise NotFound("No such user.", details={"user_id": user_id})  # as users.get
        return user_id
    if not target.startswith("+"):
        raise InvalidRequest(
            "Address a relation by user id or by a number in E.164 form (+CC...).",
            details={"field": "target"},
        )
    e164 = numbers.normalize_phone(target, None, field="target")
    if e164 == caller.phone:
        raise SelfRelation()
    await addressbook.charge_discovery(tx, caller.user_id, [e164])
    found = await matching.registered_for(tx, caller.user_id, [e164])
    if e164 not in found:
        return e164
    if found[e164][0] == caller.user_id:  # a variant of the caller's own number
        raise SelfRelation()
    return found[e164][0]


async def get(tx: Tx, owner_id: int, key: int | str) -> Relation | None:
    column = relations.c.target_id if isinstance(key, int) else relations.c.phone
    row = (
        await tx.conn.execute(
            sa.select(relations).where(relations.c.owner_id == owner_id, column == key)
        )
    ).first()
    return None if row is None else _relation(row)


async def lookup(tx: Tx, caller: Caller, target: str) -> tuple[int | str, Relation | None]:
    """The caller's relation with one user or number, if any."""
    key = await _resolve(tx, caller, target)
    return key, await get(tx, caller.user_id, key)


async def put(
    tx: Tx, caller: Caller, target: str, change: Change
) -> tuple[int | str, Relation | None]:
    """Set the caller's relation with one user or number; returns the key and the relation
    afterwards (None when nothing is left of it)."""
    key = await _resolve(tx, caller, target)
    if isinstance(key, int):
        await _apply(tx, caller.user_id, [key], [], change)
    else:
        await _apply(tx, caller.user_id, [], [key], change)
    return key, await get(tx, caller.user_id, key)


async def remove(tx: Tx, caller: Caller, target: str) -> None:
    """Drop the relation entirely (idempotent)."""
    await put(tx, caller, target, Change(contact=False, subscribe=False))


async def sync(
    tx: Tx,
    caller: Caller,
    raw_phones: Sequence[object],
    change: Change,
    region: str | None,
    default_region: str | None,
) -> Outcome:
    """The bulk synchroniser: one change applied to many numbers, in one transaction.

    Numbers that cannot be read are reported by index (with the reason, as the address book
    does); the caller's own number is reported with reason "self". Everything else applies.
    """
    if len(raw_phones) > MAX_SYNC_PHONES:
        raise TooManyContacts(
            f"At most {MAX_SYNC_PHONES} numbers per relation sync.",
            details={"max": MAX_SYNC_PHONES, "received": len(raw_phones)},
        )
    read_in = numbers.resolve_region(region, caller.region, default_region)
    valid, invalid = await number_workers.read_all(tx.services.number_workers, raw_phones, read_in)
    wanted: dict[str, int] = {}
    for index, result in valid:
        assert result.e164 is not None
        if result.e164 == caller.phone:
            invalid.append(phones.invalid_entry(raw_phones[index], "self", index))
        else:
            wanted[result.e164] = index
    found = list(wanted)
    # Relations by number reveal who is registered: they count against the same
    # anti-enumeration quota as address-book uploads.
    await addressbook.charge_discovery(tx, caller.user_id, found)
    matched = await matching.registered_for(tx, caller.user_id, found)
    registered = {n: uid for n, (uid, _) in matched.items()}
    for number in [n for n, uid in registered.items() if uid == caller.user_id]:
        # a variant of the caller's own number
        invalid.append(phones.invalid_entry(raw_phones[wanted[number]], "self", wanted[number]))
        del registered[number]
        found.remove(number)
    invalid.sort(key=lambda entry: int(entry["index"]))
    pending = [n for n in found if n not in registered]
    # two forms of one number (a same-line variant) are one relation
    targets = list(dict.fromkeys(registered.values()))
    outcome = await _apply(tx, caller.user_id, targets, pending, change)
    outcome.invalid = invalid
    outcome.rewritten = [
        phones.rewritten_entry(str(raw_phones[i]), str(r.e164), i) for i, r in valid if r.rewritten
    ]
    return outcome


async def page(
    tx: ReadTx, owner_id: int, cursor: str | None, limit: int
) -> tuple[list[Relation], str | None]:
    """The owner's relations in creation order; a cursor when there may be more."""
    limit = max(1, min(limit, MAX_PAGE))
    rows = await tx.conn.execute(
        sa.select(relations)
        .where(
            relations.c.owner_id == owner_id,
            relations.c.id > (cursors.decode(cursor, id=int)["id"] if cursor else 0),
        )
        .order_by(relations.c.id)
        .limit(limit + 1)
    )
    found = [_relation(r) for r in rows]
    more = len(found) > limit
    found = found[:limit]
    return found, cursors.encode(id=found[-1].id) if more else None


# --- hooks for other areas -----------------------------------------------------------------


async def auto_subscribe(tx: Tx, subscriber_id: int, target_id: int) -> bool:
    """Subscribe `subscriber_id` to `target_id`'s profile (on receiving a message from them).
    True when a subscription was added. See `auto_subscribe_many`."""
    return bool(await auto_subscribe_many(tx, [subscriber_id], target_id))


async def auto_subscribe_many(tx: Tx, subscriber_ids: Sequence[int], target_id: int) -> set[int]:
    """Subscribe each of `subscriber_ids` to `target_id`'s profile: what receiving a message
    from `target_id` does, as mesibo's automatic contact sync. Set-based, so a message to a
    large group costs a few statements, not a few per member.

    Honours AppSettings.auto_subscribe_on_message; never across a block; a relation created
    here is a subscription only, not a contact. Quiet: no `relation.changed`, since nobody
    decided anything (one notice per member of a group on a first message would be noise).
    Returns who was newly subscribed.
    """
    wanted = [s for s in dict.fromkeys(subscriber_ids) if s != target_id]
    settings = await app_settings.load(tx)
    if not wanted or not settings.auto_subscribe_on_message:
        return set()
    subscribed = {
        owner
        for (owner,) in await tx.conn.execute(
            sa.select(relations.c.owner_id).where(
                relations.c.target_id == target_id,
                relations.c.subscribe.is_(True),
                bulk.member(relations.c.owner_id, wanted, tx.dialect),
            )
        )
    }
    hidden = await policy.blocked_ids(tx, target_id)
    new = [s for s in wanted if s not in subscribed and s not in hidden]
    if not new:
        return set()
    # Existing relations (contacts) gain the subscription; the rest get a new relation. ON
    # CONFLICT covers a relation created concurrently by the owner themselves.
    await tx.conn.execute(
        sa.update(relations)
        .where(
            relations.c.target_id == target_id, bulk.member(relations.c.owner_id, new, tx.dialect)
        )
        .values(subscribe=True, updated_at=tx.now)
    )
    source, params = bulk.rows_source(tx.dialect, [("owner_id", "bigint")], [(s,) for s in new])
    await tx.conn.execute(
        sa.text(
            "INSERT INTO relations"
            " (owner_id, target_id, phone, contact, subscribe, levels, created_at, updated_at)"
            f" SELECT t.owner_id, :target, NULL, false, true, 0, :now, :now FROM {source}"
            " WHERE true ON CONFLICT (owner_id, target_id) DO NOTHING"
        ),
        {"target": target_id, "now": tx.now, **params},
    )
    return set(new)
