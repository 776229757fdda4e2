"""Conversations: DMs (exactly one per pair of users) and groups, their members and consent.

Rules kept here:
- A DM has two members and a unique `dm_key`, so creating it again returns the same one; a
  group has a name, a description and any number of members up to `MAX_MEMBERS`.
- Who may reach whom is `policy`'s rule. A DM needs `check_can_communicate` between the two.
  A group may not include anyone the adding member blocked or was blocked by, and wherever a
  restricted user is involved every pair of that user with another member must be paired (so
  a restricted user never shares a group with, or posts to, someone unpaired). Blocks between
  two *other* members of a group do not refuse anything: the group would otherwise let any
  member silence anyone; instead neither of them receives the other's messages (see
  `messages`).
- Consent is each member's own: a new conversation starts `allowed` for its creator and for a
  member whose address book (any of their books) holds the creator's number or who holds the
  creator as a contact, else `unknown` (a group member still `unknown` gets no message
  bodies in their log: `messages.delivers`);
  the member's preferences can change these two defaults. A `denied` member gets no live events
  for the conversation, but still finds it through `/v1/sync` and the list when asking for it.
- A non-member cannot tell a conversation exists: every access by a non-member is the same
  `ConversationNotFound` as for an id that was never used.
- Group changes are also written into the conversation's timeline as `system` messages, so a
  client's per-conversation cursor covers messages and changes alike (see `sync`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from contactsync.errors import (
    ConversationNotFound,
    InvalidRequest,
    NotAGroup,
    NotGroupAdmin,
    Restricted,
    TooManyMembers,
    UnknownUsers,
)
from contactsync.protocol import CONSENT_STATES, MAX_GROUP_MEMBERS
from contactsync.server import cursors
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import events, policy, preferences
from contactsync.server.store import bulk
from contactsync.server.store.tables import (
    book_entries,
    conversation_members,
    conversations,
    messages,
    pairs,
    relations,
    users,
)

Kind = Literal["dm", "group"]
MAX_MEMBERS = MAX_GROUP_MEMBERS
MAX_PAGE = 500

cv = conversations.c
mb = conversation_members.c


@dataclass(frozen=True)
class Membership:
    """A conversation as one member sees it (their role, consent and join point)."""

    id: int
    kind: str
    name: str | None
    description: str | None
    created_by: int | None
    last_seq: int
    created_at: int
    updated_at: int
    role: str
    consent: str
    since_seq: int
    consent_at: int

    def wire(self, members: Sequence[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": max(self.updated_at, self.consent_at),
            "last_seq": self.last_seq,
            "members": list(members),
            "member_count": len(members),
            "consent": self.consent,
            "role": self.role,
            "joined_seq": self.since_seq,
        }


MEMBERSHIP_COLUMNS = (
    cv.id,
    cv.kind,
    cv.name,
    cv.description,
    cv.created_by,
    cv.last_seq,
    cv.created_at,
    cv.updated_at,
    mb.role,
    mb.consent,
    mb.since_seq,
    mb.consent_at,
)


def membership_from_row(row: Any) -> Membership:
    return Membership(
        id=row.id,
        kind=row.kind,
        name=row.name,
        description=row.description,
        created_by=row.created_by,
        last_seq=row.last_seq,
        created_at=row.created_at,
        updated_at=row.updated_at,
        role=row.role,
        consent=row.consent,
        since_seq=row.since_seq,
        consent_at=row.consent_at,
    )


# A conversation in an event carries its member list only up to this size; a bigger group's
# creation would otherwise write members x members entries. Clients fetch the list with GET.
EVENT_MEMBERS_MAX = 100


def for_event(conversation: dict[str, Any]) -> dict[str, Any]:
    """The conversation object as an event carries it (see EVENT_MEMBERS_MAX)."""
    if conversation["member_count"] > EVENT_MEMBERS_MAX:
        return {k: v for k, v in conversation.items() if k != "members"}
    return conversation


def joined() -> sa.FromClause:
    return conversations.join(conversation_members, mb.conversation_id == cv.id)


async def membership(
    tx: ReadTx, conversation_id: int, user_id: int, *, lock: bool = False
) -> Membership:
    """The caller's view of a conversation; ConversationNotFound for non-members.

    With `lock`, the conversation row stays locked until commit (PostgreSQL; SQLite has one
    writer anyway), which serialises everything that advances its sequence.
    """
    query = (
        sa.select(*MEMBERSHIP_COLUMNS)
        .select_from(joined())
        .where(cv.id == conversation_id, mb.user_id == user_id)
    )
    if lock:
        query = query.with_for_update(of=conversations)
    row = (await tx.conn.execute(query)).first()
    if row is None:
        raise ConversationNotFound(details={"conversation_id": conversation_id})
    return membership_from_row(row)


async def members_of(
    tx: ReadTx, conversation_ids: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """The member lists of several conversations in one query (ids and roles only: consent is
    each member's private choice)."""
    out: dict[int, list[dict[str, Any]]] = {cid: [] for cid in conversation_ids}
    if not conversation_ids:
        return out
    rows = await tx.conn.execute(
        sa.select(mb.conversation_id, mb.user_id, mb.role)
        .where(bulk.member(mb.conversation_id, list(conversation_ids), tx.dialect))
        .order_by(mb.conversation_id, mb.user_id)
    )
    for row in rows:
        out[row.conversation_id].append({"user_id": row.user_id, "role": row.role})
    return out


async def view(tx: ReadTx, conversation_id: int, user_id: int) -> dict[str, Any]:
    """The conversation object for a member."""
    m = await membership(tx, conversation_id, user_id)
    return m.wire((await members_of(tx, [m.id]))[m.id])


# --- checks -------------------------------------------------------------------------------


async def _existing_users(tx: Tx, user_ids: Iterable[int]) -> dict[int, tuple[str, bool]]:
    """{user_id: (phone, restricted)} for the ids that are registered users."""
    ids = list(user_ids)
    if not ids:
        return {}
    rows = await tx.conn.execute(
        sa.select(users.c.id, users.c.phone, users.c.restricted).where(
            bulk.member(users.c.id, ids, tx.dialect)
        )
    )
    return {row.id: (row.phone, bool(row.restricted)) for row in rows}


async def _unknown_to(
    tx: Tx, actor: int, ids: Sequence[int], known: dict[int, tuple[str, bool]]
) -> list[int]:
    """The ids `actor` may not learn are users: never registered, or in a block with the actor
    (`policy.learnable`), so a blocked user cannot tell a blocker from an unused id."""
    allowed = await policy.learnable(tx, actor, [uid for uid in ids if uid in known])
    return [uid for uid in ids if uid not in allowed]


async def _paired_with(tx: Tx, user_id: int, others: Sequence[int]) -> set[int]:
    """Which of `others` are paired with `user_id` (one query for many)."""
    if not others:
        return set()
    rows = await tx.conn.execute(
        sa.select(pairs.c.a_id, pairs.c.b_id).where(
            sa.or_(
                sa.and_(
                    pairs.c.a_id == user_id, bulk.member(pairs.c.b_id, list(others), tx.dialect)
                ),
                sa.and_(
                    pairs.c.b_id == user_id, bulk.member(pairs.c.a_id, list(others), tx.dialect)
                ),
            )
        )
    )
    return {row.b_id if row.a_id == user_id else row.a_id for row in rows}


async def check_restricted(
    tx: Tx, user_id: int, others: Iterable[int], restricted: set[int]
) -> None:
    """Raise Restricted unless `user_id` is paired with every other member where either of
    the two is restricted: `policy`'s rule, checked for many pairs at once."""
    need = [m for m in others if m != user_id and (user_id in restricted or m in restricted)]
    if not need:
        return
    paired = await _paired_with(tx, user_id, need)
    if any(m not in paired for m in need):
        raise Restricted()


async def _check_group_adds(
    tx: Tx,
    actor: int,
    new_ids: Sequence[int],
    all_ids: Sequence[int],
    restricted: set[int],
) -> None:
    # Members in a block with the actor were refused as unknown users (`_unknown_to`).
    if restricted:
        for uid in new_ids:
            await check_restricted(tx, uid, all_ids, restricted)


async def _initial_consent(
    tx: Tx, inviter: int, inviter_phone: str, member_ids: Sequence[int]
) -> dict[int, str]:
    """Consent for members joining through `inviter`: from their books and preferences."""
    others = [m for m in member_ids if m != inviter]
    consent = {inviter: "allowed"} if inviter in member_ids else {}
    if not others:
        return consent
    rows = await tx.conn.execute(
        sa.select(book_entries.c.owner_id)
        .where(
            book_entries.c.phone == inviter_phone,
            bulk.member(book_entries.c.owner_id, others, tx.dialect),
        )
        .distinct()
    )
    knows = {row.owner_id for row in rows}
    # A member who holds the inviter as a contact knows them too (a subscription alone does
    # not: receiving messages makes one).
    rows = await tx.conn.execute(
        sa.select(relations.c.owner_id).where(
            relations.c.target_id == inviter,
            relations.c.contact.is_(True),
            bulk.member(relations.c.owner_id, others, tx.dialect),
        )
    )
    knows |= {row.owner_id for row in rows}
    prefs = await preferences.get_many(tx, others)
    for uid in others:
        key = "consent_from_contacts" if uid in knows else "consent_from_others"
        consent[uid] = prefs[uid][key]
    return consent


# --- creating -----------------------------------------------------------------------------


CREATE_KEY = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


def check_create_key(create_key: str) -> None:
    if not CREATE_KEY.fullmatch(create_key):
        raise InvalidRequest(
            "Idempotency-Key must be 1-64 characters of letters, digits and . _ : -",
            details={"field": "Idempotency-Key"},
        )


def dm_key(a: int, b: int) -> str:
    lo, hi = policy.pair_key(a, b)
    return f"{lo}:{hi}"


async def create(
    tx: Tx,
    creator: int,
    kind: Kind,
    member_ids: Sequence[int],
    *,
    name: str | None = None,
    description: str | None = None,
    create_key: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create a DM or a group; returns (the creator's view, created). A DM that exists already
    is returned as it is (created False) and nothing else happens; so is the conversation an
    earlier request of the same creator with the same `create_key` (Idempotency-Key) made."""
    if create_key is not None:
        check_create_key(create_key)
        found = await tx.conn.scalar(
            sa.select(cv.id).where(cv.created_by == creator, cv.create_key == create_key)
        )
        if found is not None:
            return await view(tx, found, creator), False
    others = sorted({uid for uid in member_ids if uid != creator})
    if kind == "dm":
        if name is not None or description is not None:
            raise NotAGroup("A DM has no name or description.")
        if len(others) != 1:
            raise InvalidRequest("A DM has exactly one other member.", details={"field": "members"})
    if len(others) + 1 > MAX_MEMBERS:
        raise TooManyMembers(details={"max_members": MAX_MEMBERS})
    known = await _existing_users(tx, [creator, *others])
    missing = await _unknown_to(tx, creator, others, known)
    if missing:
        raise UnknownUsers(details={"user_ids": missing})
    creator_phone = known[creator][0]
    all_ids = [creator, *others]
    restricted = {uid for uid, (_, r) in known.items() if r}

    key: str | None = None
    if kind == "dm":
        # Refused before looking for an existing DM, so a blocked user learns nothing more.
        await policy.check_can_communicate(tx, creator, others[0])
        key = dm_key(creator, others[0])
        found = await tx.conn.scalar(sa.select(cv.id).where(cv.dm_key == key))
        if found is not None:
            return await view(tx, found, creator), False
    else:
        await _check_group_adds(tx, creator, others, all_ids, restricted)

    values = {
        "kind": kind,
        "dm_key": key,
        "name": name,
        "description": description,
        "created_by": creator,
        "create_key": create_key,
        "last_seq": 0,
        "created_at": tx.now,
        "updated_at": tx.now,
    }
    conversation_id = await _insert_conversation(tx, values)
    if conversation_id is None:
        # A concurrent request created the same DM, or used the same key, first.
        same = cv.dm_key == key if key is not None else sa.false()
        if create_key is not None:
            same = sa.or_(same, sa.and_(cv.created_by == creator, cv.create_key == create_key))
        found = await tx.conn.scalar(sa.select(cv.id).where(same))
        assert found is not None
        return await view(tx, found, creator), False

    consent = await _initial_consent(tx, creator, creator_phone, all_ids)
    await tx.conn.execute(
        sa.insert(conversation_members),
        [
            {
                "conversation_id": conversation_id,
                "user_id": uid,
                "role": "admin" if (uid == creator and kind == "group") else "member",
                "consent": consent[uid],
                "since_seq": 0,
                "joined_at": tx.now,
                "consent_at": tx.now,
            }
            for uid in all_ids
        ],
    )
    member_list = [
        {"user_id": uid, "role": "admin" if (uid == creator and kind == "group") else "member"}
        for uid in sorted(all_ids)
    ]
    base = for_event(
        {
            "id": conversation_id,
            "kind": kind,
            "name": name,
            "description": description,
            "created_by": creator,
            "created_at": tx.now,
            "updated_at": tx.now,
            "last_seq": 0,
            "members": member_list,
            "member_count": len(member_list),
            "joined_seq": 0,
        }
    )
    admin = creator if kind == "group" else None
    await _announce_created(tx, base, all_ids, consent, joined_seq=0, admin=admin)
    return await view(tx, conversation_id, creator), True


async def _announce_created(
    tx: Tx,
    base: dict[str, Any],
    user_ids: Iterable[int],
    consent: dict[int, str],
    *,
    joined_seq: int,
    admin: int | None = None,
) -> None:
    """conversation.created to each of these new members who has not denied it, carrying the
    conversation as that member sees it."""
    await events.append(
        tx,
        [
            events.NewEvent(
                uid,
                "conversation.created",
                {
                    "conversation": {
                        **base,
                        "consent": consent[uid],
                        "role": "admin" if uid == admin else "member",
                        "joined_seq": joined_seq,
                    }
                },
            )
            for uid in user_ids
            if consent[uid] != "denied"
        ],
    )


async def _insert_conversation(tx: Tx, values: dict[str, Any]) -> int | None:
    """Insert; None when a DM with the same dm_key, or a conversation of the same creator with
    the same create_key, exists (a concurrent create won)."""
    stmt = bulk.insert_ignoring_conflicts(conversations, tx.dialect, **values)
    found = await tx.conn.scalar(stmt.returning(cv.id))
    return None if found is None else int(found)


# --- group changes ------------------------------------------------------------------------


async def _member_states(tx: Tx, conversation_id: int, actor: int) -> dict[int, str]:
    """{member: consent}, read after the conversation is locked.

    The actor's membership is confirmed again from this read, which starts after the lock is
    held and so sees every removal committed before (a cheap guard: it does not rely on how
    PostgreSQL re-checks a locking join after a wait).
    """
    rows = await tx.conn.execute(
        sa.select(mb.user_id, mb.consent).where(mb.conversation_id == conversation_id)
    )
    states = {row.user_id: row.consent for row in rows}
    if actor not in states:
        raise ConversationNotFound(details={"conversation_id": conversation_id})
    return states


async def _system_message(tx: Tx, m: Membership, actor: int, data: dict[str, Any]) -> int:
    """Write a group change into the timeline; returns its seq. The caller holds the lock."""
    seq = m.last_seq + 1
    await tx.conn.execute(
        sa.update(conversations).where(cv.id == m.id).values(last_seq=seq, updated_at=tx.now)
    )
    await tx.conn.execute(
        sa.insert(messages).values(
            conversation_id=m.id,
            seq=seq,
            kind="system",
            sender_id=actor,
            client_msg_id=None,
            body=None,
            data=data,
            sent_at=tx.now,
        )
    )
    return seq


async def _announce_update(
    tx: Tx,
    conversation_id: int,
    recipients: dict[int, str],
    data: dict[str, Any],
    *,
    also: Iterable[int] = (),
) -> None:
    """conversation.updated to every member who has not denied the conversation, plus `also`
    (members just removed, so their devices learn it)."""
    targets = [uid for uid, state in recipients.items() if state != "denied"]
    targets.extend(uid for uid in also if uid not in recipients)
    payload = {"conversation_id": conversation_id, **data}
    await events.append(
        tx, [events.NewEvent(uid, "conversation.updated", payload) for uid in sorted(targets)]
    )


async def update_group(
    tx: Tx, conversation_id: int, actor: int, changes: dict[str, str | None]
) -> dict[str, Any]:
    """Rename or re-describe a group (any member may)."""
    m = await membership(tx, conversation_id, actor, lock=True)
    if m.kind != "group":
        raise NotAGroup()
    states = await _member_states(tx, m.id, actor)
    current = {"name": m.name, "description": m.description}
    changed = {k: v for k, v in changes.items() if current[k] != v}
    if not changed:
        return await view(tx, conversation_id, actor)
    await tx.conn.execute(sa.update(conversations).where(cv.id == m.id).values(**changed))
    data = {"change": "updated", "by": actor, **changed}
    seq = await _system_message(tx, m, actor, data)
    await _announce_update(tx, m.id, states, {**data, "seq": seq})
    return await view(tx, conversation_id, actor)


async def add_members(
    tx: Tx, conversation_id: int, actor: int, user_ids: Sequence[int]
) -> dict[str, Any]:
    """Add members to a group (any member may). Members already there are ignored."""
    m = await membership(tx, conversation_id, actor, lock=True)
    if m.kind != "group":
        raise NotAGroup()
    states = await _member_states(tx, m.id, actor)
    new_ids = sorted({uid for uid in user_ids if uid not in states})
    if not new_ids:
        return await view(tx, conversation_id, actor)
    if len(states) + len(new_ids) > MAX_MEMBERS:
        raise TooManyMembers(details={"max_members": MAX_MEMBERS})
    all_ids = [*states, *new_ids]
    known = await _existing_users(tx, all_ids)
    missing = await _unknown_to(tx, actor, new_ids, known)
    if missing:
        raise UnknownUsers(details={"user_ids": missing})
    restricted = {uid for uid, (_, r) in known.items() if r}
    await _check_group_adds(tx, actor, new_ids, all_ids, restricted)

    data = {"change": "members_added", "by": actor, "user_ids": new_ids}
    since = m.last_seq  # the new members see the message that announces them, nothing before
    seq = await _system_message(tx, m, actor, data)
    consent = await _initial_consent(tx, actor, known[actor][0], [actor, *new_ids])
    await tx.conn.execute(
        sa.insert(conversation_members),
        [
            {
                "conversation_id": m.id,
                "user_id": uid,
                "role": "member",
                "consent": consent[uid],
                "since_seq": since,
                "joined_at": tx.now,
                "consent_at": tx.now,
            }
            for uid in new_ids
        ],
    )
    await _announce_update(tx, m.id, states, {**data, "seq": seq})
    member_list = (await members_of(tx, [m.id]))[m.id]
    base = for_event({**m.wire(member_list), "last_seq": seq, "updated_at": tx.now})
    await _announce_created(tx, base, new_ids, consent, joined_seq=since)
    return await view(tx, conversation_id, actor)


async def remove_member(tx: Tx, conversation_id: int, actor: int, user_id: int) -> None:
    """Remove a member from a group: any member may leave; only an admin removes others.
    Removing someone who is not a member (a retry) does nothing."""
    m = await membership(tx, conversation_id, actor, lock=True)
    if m.kind != "group":
        raise NotAGroup()
    states = await _member_states(tx, m.id, actor)
    if user_id != actor and m.role != "admin":
        raise NotGroupAdmin()
    if user_id not in states:
        return  # already gone: a retried removal changes nothing
    data = {
        "change": "member_left" if user_id == actor else "member_removed",
        "by": actor,
        "user_ids": [user_id],
    }
    seq = await _system_message(tx, m, actor, data)
    await tx.conn.execute(
        sa.delete(conversation_members).where(mb.conversation_id == m.id, mb.user_id == user_id)
    )
    removed_state = states.pop(user_id)
    also = [user_id] if removed_state != "denied" else []
    await _announce_update(tx, m.id, states, {**data, "seq": seq}, also=also)


# --- consent ------------------------------------------------------------------------------


async def set_consent(
    tx: Tx, conversation_id: int, user_id: int, state: str, *, device_id: str | None
) -> dict[str, Any]:
    """Set the caller's own consent; consent.updated goes to all of their devices (including
    when the new state is `denied`: it is their own choice, which their devices must learn)."""
    if state not in CONSENT_STATES:
        raise InvalidRequest(
            "state must be allowed, unknown or denied.", details={"field": "state"}
        )
    m = await membership(tx, conversation_id, user_id)
    if m.consent != state:
        await write_consent(tx, conversation_id, user_id, state, device_id=device_id)
    return await view(tx, conversation_id, user_id)


async def write_consent(
    tx: Tx, conversation_id: int, user_id: int, state: str, *, device_id: str | None
) -> None:
    await tx.conn.execute(
        sa.update(conversation_members)
        .where(mb.conversation_id == conversation_id, mb.user_id == user_id)
        .values(consent=state, consent_at=tx.now)
    )
    await events.append(
        tx,
        [
            events.NewEvent(
                user_id,
                "consent.updated",
                {"conversation_id": conversation_id, "state": state, "device_id": device_id},
            )
        ],
    )


# --- listing ------------------------------------------------------------------------------


def parse_consent(values: Iterable[str]) -> list[str]:
    states = sorted({v.strip() for v in values if v.strip()})
    bad = [s for s in states if s not in CONSENT_STATES]
    if bad or not states:
        raise InvalidRequest(
            "consent is a list of allowed, unknown, denied.",
            details={"field": "consent", "invalid": bad},
        )
    return states


async def list_for_user(
    tx: ReadTx,
    user_id: int,
    *,
    consent: Sequence[str],
    updated_after: int,
    cursor: str | None,
    limit: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """The user's conversations changed after `updated_after` (ms), oldest change first, so a
    client can keep a watermark; paged by an opaque cursor."""
    # A member's view changes with the conversation and with their own consent.
    changed = sa.case((cv.updated_at > mb.consent_at, cv.updated_at), else_=mb.consent_at)
    query = (
        sa.select(*MEMBERSHIP_COLUMNS, changed.label("changed"))
        .select_from(joined())
        .where(mb.user_id == user_id, mb.consent.in_(list(consent)), changed > updated_after)
    )
    if cursor:
        after = cursors.decode(cursor, t=int, id=int)
        query = query.where(
            sa.or_(changed > after["t"], sa.and_(changed == after["t"], cv.id > after["id"]))
        )
    limit = max(1, min(limit, MAX_PAGE))
    rows = (await tx.conn.execute(query.order_by(changed, cv.id).limit(limit + 1))).all()
    more = len(rows) > limit
    rows = rows[:limit]
    views = [membership_from_row(row) for row in rows]
    member_lists = await members_of(tx, [v.id for v in views])
    out = [v.wire(member_lists[v.id]) for v in views]
    next_cursor = cursors.encode(t=rows[-1].changed, id=rows[-1].id) if more and rows else None
    return out, next_cursor
