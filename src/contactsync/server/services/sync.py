"""One-round-trip sync of a user's conversations (the model is XMTP's "sync all").

The client sends the consent states it wants (default: allowed only) and its cursors: for each
conversation it knows, the last `seq` it holds. Group changes are `system` messages in the same
sequence (see `conversations`), so one number per conversation covers messages and changes.

A conversation is *eligible* when the user is a member and their consent is in the filter; it
is *synced* (has something new) when the client has no cursor for it (a new conversation, or a
device that starts from nothing) or its sequence is past the cursor. The answer carries both
counts, the synced conversations in id order with their new messages (up to `message_limit`
each, `has_more` when there are more), a `cursor` per conversation to send next time, and
`next_cursor` when more conversations follow. Cursor ids that are no longer eligible (consent
changed, or the user left) come back in `excluded`, so a device can drop or move them.

The work is a fixed number of queries however many conversations there are: the eligible
memberships, the members of the page, and the page's messages in one statement (a LATERAL
per-conversation range scan on PostgreSQL, a window over the joined ranges on SQLite).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from contactsync.errors import InvalidRequest
from contactsync.server.context import ReadTx
from contactsync.server.cursors import decode as decode_page
from contactsync.server.cursors import encode as encode_page
from contactsync.server.services import conversations, policy
from contactsync.server.store import bulk
from contactsync.server.store.tables import conversation_members
from contactsync.server.store.tables import conversations as conv_table

MAX_CURSORS = 10_000
MAX_PAGE = 500
MAX_MESSAGES = 1000
BIGINT = 2**63 - 1

_MESSAGES_PG = sa.text(
    """
    SELECT m.conversation_id, m.seq, m.kind, m.sender_id, m.client_msg_id, m.body, m.data,
           m.sent_at
    FROM unnest(CAST(:ids AS BIGINT[]), CAST(:afters AS BIGINT[])) AS w(cid, aft)
    CROSS JOIN LATERAL (
        SELECT * FROM messages m
        WHERE m.conversation_id = w.cid AND m.seq > w.aft
          AND (m.kind = 'system' OR m.sender_id IS NULL
               OR NOT (m.sender_id = ANY(CAST(:blocked AS BIGINT[]))))
        ORDER BY m.seq
        LIMIT :lim
    ) AS m
    ORDER BY m.conversation_id, m.seq
    """
).columns(data=sa.JSON)

_MESSAGES_SQLITE = sa.text(
    """
    SELECT conversation_id, seq, kind, sender_id, client_msg_id, body, data, sent_at
    FROM (
        SELECT m.*, row_number() OVER (PARTITION BY m.conversation_id ORDER BY m.seq) AS rn
        FROM (
            SELECT json_extract(value, '$[0]') AS cid, json_extract(value, '$[1]') AS aft
            FROM json_each(:pairs)
        ) AS w
        JOIN messages m ON m.conversation_id = w.cid AND m.seq > w.aft
        WHERE m.kind = 'system' OR m.sender_id IS NULL
           OR m.sender_id NOT IN (SELECT value FROM json_each(:blocked))
    )
    WHERE rn <= :lim
    ORDER BY conversation_id, seq
    """
).columns(data=sa.JSON)


def parse_cursors(raw: Mapping[str, int]) -> dict[int, int]:
    """The client's {conversation_id: after} map, keys as JSON strings."""
    if len(raw) > MAX_CURSORS:
        raise InvalidRequest(
            f"At most {MAX_CURSORS} cursors in one sync.", details={"field": "cursors"}
        )
    out: dict[int, int] = {}
    for key, after in raw.items():
        if not key.isdigit() or not 0 < int(key) <= BIGINT:
            raise InvalidRequest(
                "cursors maps conversation ids to the last seq the client holds.",
                details={"field": "cursors", "key": key[:40]},
            )
        if isinstance(after, bool) or not 0 <= after <= BIGINT:
            raise InvalidRequest(
                "A cursor is a seq (an integer >= 0).", details={"field": "cursors", "key": key}
            )
        out[int(key)] = after
    return out


async def _messages(
    tx: ReadTx, wanted: Sequence[tuple[int, int]], blocked: set[int], limit: int
) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {cid: [] for cid, _ in wanted}
    if not wanted:
        return out
    if tx.dialect == "postgresql":
        params: dict[str, Any] = {
            "ids": [cid for cid, _ in wanted],
            "afters": [after for _, after in wanted],
            "blocked": sorted(blocked),
            "lim": limit,
        }
        result = await tx.conn.execute(_MESSAGES_PG, params)
    else:
        import json

        params = {
            "pairs": json.dumps([list(pair) for pair in wanted]),
            "blocked": json.dumps(sorted(blocked)),
            "lim": limit,
        }
        result = await tx.conn.execute(_MESSAGES_SQLITE, params)
    # Plain dicts straight from the row tuples: this loop runs for every message synced.
    for cid, seq, kind, sender_id, client_msg_id, body, data, sent_at in result:
        out[cid].append(
            {
                "conversation_id": cid,
                "seq": seq,
                "kind": kind,
                "sender_id": sender_id,
                "body": body,
                "sent_at": sent_at,
                "client_msg_id": client_msg_id,
                "data": data,
            }
        )
    return out


async def sync(
    tx: ReadTx,
    user_id: int,
    *,
    consent: Sequence[str],
    cursors: Mapping[int, int],
    page_cursor: str | None = None,
    limit: int = 100,
    message_limit: int = 100,
) -> dict[str, Any]:
    """Everything new for the user's eligible conversations; see the module docstring."""
    limit = max(1, min(limit, MAX_PAGE))
    message_limit = max(1, min(message_limit, MAX_MESSAGES))
    start_id = decode_page(page_cursor, id=int)["id"] if page_cursor else 0

    # Eligibility needs three numbers per conversation; the full objects are read for the
    # page only (a user may have thousands of conversations and few with news).
    rows = (
        await tx.conn.execute(
            sa.select(conv_table.c.id, conv_table.c.last_seq, conversation_members.c.since_seq)
            .select_from(conversations.joined())
            .where(
                conversation_members.c.user_id == user_id,
                conversation_members.c.consent.in_(list(consent)),
            )
            .order_by(conv_table.c.id)
        )
    ).all()
    eligible = len(rows)
    pending: list[tuple[int, int]] = []
    seen: set[int] = set()
    for cid, last_seq, since_seq in rows:
        seen.add(cid)
        known = cursors.get(cid)
        after = max(known or 0, since_seq)
        if known is None or last_seq > after:
            pending.append((cid, after))
    synced = len(pending)
    page = [(cid, after) for cid, after in pending if cid > start_id][: limit + 1]
    more = len(page) > limit
    page = page[:limit]

    out = []
    if page:
        page_ids = [cid for cid, _ in page]
        views = {
            row.id: conversations.membership_from_row(row)
            for row in await tx.conn.execute(
                sa.select(*conversations.MEMBERSHIP_COLUMNS)
                .select_from(conversations.joined())
                .where(
                    conversation_members.c.user_id == user_id,
                    bulk.member(conv_table.c.id, page_ids, tx.dialect),
                )
            )
        }
        blocked = await policy.blocked_ids(tx, user_id)
        # One extra message per conversation tells whether more follow.
        found = await _messages(tx, page, blocked, message_limit + 1)
        member_lists = await conversations.members_of(tx, page_ids)
        for cid, after in page:
            m = views.get(cid)
            if m is None:  # left the conversation a moment ago
                continue
            msgs = found[cid]
            has_more = len(msgs) > message_limit
            msgs = msgs[:message_limit]
            cursor = msgs[-1]["seq"] if msgs else after
            if not has_more:
                # Seqs commit in order (the conversation row is locked while one is taken),
                # so everything up to last_seq is in `msgs` or hidden from this user.
                cursor = max(cursor, m.last_seq)
            out.append(
                {
                    **m.wire(member_lists[cid]),
                    "messages": msgs,
                    "has_more": has_more,
                    "cursor": cursor,
                }
            )

    excluded: list[dict[str, Any]] = []
    gone = [cid for cid in cursors if cid not in seen]
    if gone and not page_cursor:
        states = {
            row.conversation_id: row.consent
            for row in await tx.conn.execute(
                sa.select(
                    conversation_members.c.conversation_id, conversation_members.c.consent
                ).where(
                    conversation_members.c.user_id == user_id,
                    bulk.member(conversation_members.c.conversation_id, gone, tx.dialect),
                )
            )
        }
        excluded = [
            {"id": cid, "member": cid in states, "consent": states.get(cid)} for cid in sorted(gone)
        ]
    return {
        "eligible": eligible,
        "synced": synced,
        "conversations": out,
        "excluded": excluded,
        "next_cursor": encode_page(id=page[-1][0]) if more and page else None,
    }
