"""Messages: sending (idempotent on the sender's client_msg_id) and reading in server order.

Sending locks the conversation row, so the per-conversation `seq` is gap-free and a retried
send that races its first attempt finds the first message instead of making a second. Rules:
- The body is non-empty (not only whitespace) and at most `AppSettings.max_message_bytes`
  UTF-8 bytes.
- A DM needs `policy.check_can_communicate` between the two (blocked pairs cannot DM; a
  restricted user only DMs paired users). In a group, a restricted sender may post only where
  every other member is paired with them, and no one may post to a group in which a restricted
  member is unpaired with them (`conversations.check_restricted`). A block between the sender
  and a member of a group does not refuse the message (any member could otherwise silence
  anyone); that member simply never receives it, live or when reading.
- Sending is taken as consent: the sender's consent becomes `allowed` (with consent.updated
  to their devices) if it was not.
- Each sender is limited to `send_messages_per_minute` messages and `send_bytes_per_minute`
  bytes over all conversations (429 `send_rate_limited` with Retry-After).
- message.created goes through the event log to every member (the sender's other devices
  included) except members who denied the conversation or are in a block with the sender,
  and, in a group, members whose consent is still `unknown` (`delivers`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from contactsync.errors import (
    ConversationNotFound,
    EmptyMessage,
    InvalidRequest,
    MessageTooLarge,
    SendRateLimited,
)
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import (
    app_settings,
    conversations,
    events,
    policy,
    ratelimit,
    relations,
)
from contactsync.server.store.tables import app_settings as app_settings_table
from contactsync.server.store.tables import conversation_members, messages, users
from contactsync.server.store.tables import conversations as conv_table

CLIENT_MSG_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
MAX_PAGE = 1000

ms = messages.c


@dataclass(frozen=True)
class Message:
    conversation_id: int
    seq: int
    kind: str
    sender_id: int | None
    client_msg_id: str | None
    body: str | None
    data: dict[str, Any] | None
    sent_at: int

    def wire(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "seq": self.seq,
            "kind": self.kind,
            "sender_id": self.sender_id,
            "body": self.body,
            "sent_at": self.sent_at,
            "client_msg_id": self.client_msg_id,
            "data": self.data,
        }


MESSAGE_COLUMNS = (
    ms.conversation_id,
    ms.seq,
    ms.kind,
    ms.sender_id,
    ms.client_msg_id,
    ms.body,
    ms.data,
    ms.sent_at,
)


def from_row(row: Any) -> Message:
    return Message(
        conversation_id=row.conversation_id,
        seq=row.seq,
        kind=row.kind,
        sender_id=row.sender_id,
        client_msg_id=row.client_msg_id,
        body=row.body,
        data=row.data,
        sent_at=row.sent_at,
    )


def _max_bytes(stored: Any) -> int:
    """The size limit from its stored setting (validated like every setting), or the default."""
    if stored is None:
        return int(app_settings.AppSettings.model_fields["max_message_bytes"].default)
    return app_settings.AppSettings.model_validate({"max_message_bytes": stored}).max_message_bytes


def check_body(body: str, max_bytes: int) -> None:
    if not body.strip():
        raise EmptyMessage(details={"field": "body"})
    size = len(body.encode("utf-8"))
    if size > max_bytes:
        raise MessageTooLarge(details={"field": "body", "bytes": size, "max_bytes": max_bytes})


def check_client_msg_id(client_msg_id: str) -> None:
    if not CLIENT_MSG_ID.fullmatch(client_msg_id):
        raise InvalidRequest(
            "client_msg_id must be 1-64 characters of letters, digits and . _ : -",
            details={"field": "client_msg_id"},
        )


async def send(
    tx: Tx,
    conversation_id: int,
    sender: int,
    body: str,
    client_msg_id: str,
    *,
    device_id: str | None = None,
) -> tuple[Message, bool]:
    """Send a text message; returns (message, created). A retry returns the first message.

    The hot path of a busy group, so statements are merged: one locks the conversation (and
    reads the size limit); the next, which starts after the lock is held and so sees every
    send committed before it, reads the members with their restricted and block flags and an
    earlier message with this client_msg_id; one (on PostgreSQL) advances the sequence and
    stores the message; then the event log's own two.
    """
    check_client_msg_id(client_msg_id)
    if not body.strip():
        raise EmptyMessage(details={"field": "body"})
    if tx.dialect == "postgresql":
        # The engine plans every execution afresh (see `Database.from_url`), which is right for
        # the address book's big array statements but costs this path more than its work: a
        # 100-member send re-plans the event insert and its per-row foreign-key checks (about
        # 2.5 ms). Every statement here has scalar or small-array parameters, so cached plans
        # are safe; LOCAL keeps the change to this transaction.
        await tx.conn.execute(sa.text("SET LOCAL plan_cache_mode = auto"))
    max_bytes = (
        sa.select(app_settings_table.c.value)
        .where(app_settings_table.c.key == "max_message_bytes")
        .scalar_subquery()
    )
    head = (
        await tx.conn.execute(
            sa.select(conv_table.c.kind, conv_table.c.last_seq, max_bytes.label("max_bytes"))
            .where(conv_table.c.id == conversation_id)
            .with_for_update()
        )
    ).first()
    mb = conversation_members.c
    blocks_sender = policy.blocked_between(mb.user_id, sender)
    # Uncorrelated, so it runs once, not once a member.
    existing_seq = (
        sa.select(ms.seq)
        .where(
            ms.conversation_id == conversation_id,
            ms.sender_id == sender,
            ms.client_msg_id == client_msg_id,
        )
        .scalar_subquery()
    )
    rows = (
        []
        if head is None
        else (
            await tx.conn.execute(
                sa.select(
                    mb.user_id,
                    mb.consent,
                    users.c.restricted,
                    blocks_sender.label("blocked"),
                    existing_seq.label("existing_seq"),
                )
                .select_from(conversation_members.join(users, users.c.id == mb.user_id))
                .where(mb.conversation_id == conversation_id)
            )
        ).all()
    )
    if head is None or not any(row.user_id == sender for row in rows):
        raise ConversationNotFound(details={"conversation_id": conversation_id})
    if rows[0].existing_seq is not None:
        row = (
            await tx.conn.execute(
                sa.select(*MESSAGE_COLUMNS).where(
                    ms.conversation_id == conversation_id, ms.seq == rows[0].existing_seq
                )
            )
        ).one()
        return from_row(row), False
    check_body(body, _max_bytes(head.max_bytes))
    await charge_send(tx, sender, len(body.encode("utf-8")))

    consent = {row.user_id: row.consent for row in rows}
    others = [uid for uid in consent if uid != sender]
    blocked: set[int] = set()
    if head.kind == "dm":
        for other in others:
            await policy.check_can_communicate(tx, sender, other)
    else:
        restricted = {row.user_id for row in rows if row.restricted}
        await conversations.check_restricted(tx, sender, others, restricted)
        blocked = {row.user_id for row in rows if row.blocked and row.user_id != sender}

    seq = head.last_seq + 1
    message = Message(
        conversation_id=conversation_id,
        seq=seq,
        kind="text",
        sender_id=sender,
        client_msg_id=client_msg_id,
        body=body,
        data=None,
        sent_at=tx.now,
    )
    bump = (
        sa.update(conv_table)
        .where(conv_table.c.id == conversation_id)
        .values(last_seq=seq, updated_at=tx.now)
    )
    insert = sa.insert(messages).values(**dataclasses.asdict(message))
    if tx.dialect == "postgresql":
        await tx.conn.execute(insert.add_cte(bump.returning(conv_table.c.id).cte("bump")))
    else:
        await tx.conn.execute(bump)
        await tx.conn.execute(insert)
    if consent.get(sender) != "allowed":
        await conversations.write_consent(
            tx, conversation_id, sender, "allowed", device_id=device_id
        )
        consent[sender] = "allowed"
    payload = {**message.wire(), "device_id": device_id}
    recipients = [
        uid
        for uid, state in sorted(consent.items())
        if uid not in blocked and delivers(head.kind, state)
    ]
    await events.append(
        tx, [events.NewEvent(uid, "message.created", payload) for uid in recipients]
    )
    await _after_message(tx, message, recipients)
    return message, True


def delivers(kind: str, consent: str) -> bool:
    """Whether a member with this consent gets the conversation's messages in their log.

    In a group only members who allowed it do: someone added by a stranger (consent
    `unknown`) has the invitation (`conversation.created`) and reads the messages when they
    ask, but a stranger's group cannot copy bodies into their log (fan-out amplification).
    In a DM an `unknown` member still gets them (one copy: XMTP's message request)."""
    if consent == "denied":
        return False
    return kind == "dm" or consent == "allowed"


async def charge_send(tx: Tx, sender: int, size: int) -> None:
    """The per-sender limits over all conversations: `send_messages_per_minute` messages and
    `send_bytes_per_minute` body bytes (token buckets refilling evenly over the minute)."""
    settings = await app_settings.load(tx)
    for setting, key, amount, limit in (
        ("send_messages_per_minute", "msgs", 1, settings.send_messages_per_minute),
        ("send_bytes_per_minute", "bytes", size, settings.send_bytes_per_minute),
    ):
        taken = await ratelimit.take(
            tx, f"send:{key}:{sender}", amount, capacity=limit, refill_per_s=limit / 60
        )
        if isinstance(taken, ratelimit.Refused):
            raise SendRateLimited(
                taken.retry_after,
                f"Too many messages sent (setting {setting} = {limit}); "
                f"retry in {taken.retry_after} s.",
                details={
                    "setting": setting,
                    "limit": limit,
                    "remaining": int(taken.available + ratelimit.EPSILON),
                    "retry_after": taken.retry_after,
                },
            )


async def _after_message(tx: Tx, message: Message, member_ids: Sequence[int]) -> None:
    """Runs inside the send's transaction after a new text message is stored and its events
    are appended (never for a retried send, never for system messages): receiving a message
    subscribes the recipients to the sender's profile (AppSettings.auto_subscribe_on_message),
    as mesibo's automatic contact sync does."""
    if message.sender_id is None:
        return
    recipients = [m for m in member_ids if m != message.sender_id]
    await relations.auto_subscribe_many(tx, recipients, message.sender_id)


async def list_page(
    tx: ReadTx, conversation_id: int, user_id: int, *, after: int, limit: int
) -> tuple[list[Message], int]:
    """Messages after `after` in server order, as the member may see them; (page, next_after).

    A member sees nothing from before they joined, and nothing from a user they are in a block
    with."""
    m = await conversations.membership(tx, conversation_id, user_id)
    start = max(after, m.since_seq)
    query = sa.select(*MESSAGE_COLUMNS).where(ms.conversation_id == conversation_id, ms.seq > start)
    blocked = await policy.blocked_ids(tx, user_id)
    if blocked:
        query = query.where(visible_to(blocked))
    limit = max(1, min(limit, MAX_PAGE))
    rows = (await tx.conn.execute(query.order_by(ms.seq).limit(limit))).all()
    page = [from_row(row) for row in rows]
    next_after = page[-1].seq if page else start
    if len(page) < limit:
        # Everything up to the conversation's seq has been seen, hidden messages included, so
        # the cursor moves past them (seqs commit in order: the conversation row is locked).
        next_after = max(next_after, m.last_seq)
    return page, next_after


def visible_to(blocked: set[int]) -> sa.ColumnElement[bool]:
    """Messages a reader in a block with `blocked` may see: not theirs, except group changes."""
    return sa.or_(ms.kind == "system", ms.sender_id.is_(None), ms.sender_id.not_in(sorted(blocked)))
