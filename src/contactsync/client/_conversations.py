"""Conversations from the SDK, on XMTP's model, kept in the account's local store.

    convos = manager.conversations
    await convos.sync()                              # which conversations are new or changed
    summary = await convos.sync_all(consent=["allowed"])   # and everything new in them
    chat = await convos.new_group([alice_id, bob_id], name="Trip")
    await chat.send("hi")                            # queued locally first, sent once
    await chat.sync()                                # this conversation's new messages
    for message in await chat.messages(): ...        # read from the local store

What the device holds per conversation is its `cursor`, the last seq it has; `sync_all` sends
those cursors to `POST /v1/sync` and gets, in one round trip per page, every conversation with
something new and its new messages. A message is written to the local store before it is sent
and keeps its `client_msg_id` until the server acknowledged it, so a send that failed (or a
crash) is retried by the next sync without ever being posted twice. Live events (messages,
new conversations, consent changes, removals) update the store as they arrive.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from contactsync.client import _wire
from contactsync.client._errors import ApiError
from contactsync.client._http import ApiClient
from contactsync.client._models import ConversationView, Event, Message, SyncSummary
from contactsync.client._store import LocalStore, stored_view
from contactsync.protocol import (
    CONSENT_STATES,
    AddMembers,
    ConversationOut,
    ConversationsPage,
    CreateConversation,
    MessageOut,
    MessagesPage,
    PatchConversation,
    SendMessage,
    SetConsent,
    SyncOut,
    SyncRequest,
)

__all__ = ["Conversation", "Conversations"]

log = logging.getLogger("contactsync.client.conversations")

_LIST_PAGE = 500
_MESSAGE_PAGE = 500
# The list's watermark is a server time in ms taken when a transaction starts, so a change
# that committed a moment later can carry an earlier time: ask again from a little before it.
_WATERMARK_MARGIN_MS = 5_000

Ready = Callable[[], Awaitable[LocalStore]]


def consent_states(consent: Iterable[str]) -> list[str]:
    states = sorted(set(consent))
    unknown = [s for s in states if s not in CONSENT_STATES]
    if not states or unknown:
        raise ValueError(f"consent must be some of {', '.join(CONSENT_STATES)}; got {unknown}")
    return states


class Conversations:
    """The caller's conversations: sync them, list them, start new ones."""

    def __init__(self, api: ApiClient, ready: Ready) -> None:
        self.api = api
        self._ready = ready
        self._lock = asyncio.Lock()  # one sync at a time per account
        self.last_summary: SyncSummary | None = None

    def get(self, conversation_id: int) -> Conversation:
        """A handle on one conversation (nothing is fetched until asked)."""
        return Conversation(self, int(conversation_id))

    async def list(self, consent: Iterable[str] | None = None) -> list[ConversationView]:
        """What the local store holds, newest change first."""
        store = await self._ready()
        states = None if consent is None else consent_states(consent)
        return [
            ConversationView.from_wire(view, member=member, cursor=cursor)
            for view, member, cursor in store.conversations(states)
        ]

    async def new_dm(self, user_id: int) -> Conversation:
        """The DM with this user (the existing one if there is one)."""
        return await self._create({"kind": "dm", "members": [int(user_id)]})

    async def new_group(
        self,
        user_ids: Iterable[int],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Conversation:
        body: dict[str, Any] = {"kind": "group", "members": [int(u) for u in user_ids]}
        if name is not None:
            body["name"] = name
        if description is not None:
            body["description"] = description
        return await self._create(body)

    async def _create(self, body: dict[str, Any]) -> Conversation:
        store = await self._ready()
        # one key for every attempt of this call: a retry after a lost answer creates nothing
        key = uuid.uuid4().hex
        view = await self.api.request(
            "POST",
            "/v1/conversations",
            json_body=_wire.body(CreateConversation, body),
            headers={"Idempotency-Key": key},
        )
        _wire.answer(ConversationOut, view)
        with store.transaction():
            store.save_conversations([view])
        return self.get(int(view["id"]))

    async def sync(self) -> builtins.list[ConversationView]:
        """Learn which conversations are new or changed (any consent), without their messages;
        returns those."""
        async with self._lock:
            store = await self._ready()
            watermark = int(store.get("conversations_after") or 0)
            newest = watermark
            changed: list[ConversationView] = []
            cursor: str | None = None
            while True:
                page = await self.api.request(
                    "GET",
                    "/v1/conversations",
                    params={
                        "updated_after": max(0, watermark - _WATERMARK_MARGIN_MS),
                        "consent": ",".join(CONSENT_STATES),
                        "cursor": cursor,
                        "limit": _LIST_PAGE,
                    },
                )
                _wire.answer(ConversationsPage, page)
                views = page["conversations"]
                with store.transaction():
                    for view in views:
                        known = store.conversation(int(view["id"]))
                        if known is None or known[0] != stored_view(view) or not known[1]:
                            changed.append(ConversationView.from_wire(view))
                    store.save_conversations(views)
                newest = max([newest, *(int(v["updated_at"]) for v in views)])
                cursor = page.get("next_cursor")
                if not cursor or not views:
                    break
            store.put("conversations_after", str(newest))
            return changed

    async def sync_all(
        self,
        consent: Iterable[str] = ("allowed",),
        *,
        message_limit: int = 100,
        page_size: int = 100,
    ) -> SyncSummary:
        """Everything new in the conversations with these consent states: first the messages
        still waiting to be sent, then `POST /v1/sync` page by page with this device's cursors,
        again while a conversation has more messages than one answer carries. Returns the
        summary (`eligible`, `synced` as the server counted them on the first round)."""
        states = consent_states(consent)
        async with self._lock:
            store = await self._ready()
            started = time.perf_counter()
            summary = SyncSummary()
            await self._flush(store, summary)
            first_round = True
            while True:
                more = await self._sync_round(
                    store, states, message_limit, page_size, summary, first_round
                )
                first_round = False
                if not more:
                    break
            summary.duration = time.perf_counter() - started
            self.last_summary = summary
            return summary

    async def _sync_round(
        self,
        store: LocalStore,
        states: builtins.list[str],
        message_limit: int,
        page_size: int,
        summary: SyncSummary,
        first_round: bool,
    ) -> bool:
        """One pass over every page; True when some conversation has more messages waiting."""
        cursors = {str(cid): after for cid, after in store.conversation_cursors().items()}
        page_cursor: str | None = None
        more = False
        while True:
            result = await self.api.request(
                "POST",
                "/v1/sync",
                json_body=_wire.body(
                    SyncRequest,
                    {
                        "consent": states,
                        "cursors": cursors,
                        "limit": page_size,
                        "message_limit": message_limit,
                        "cursor": page_cursor,
                    },
                ),
            )
            _wire.answer(SyncOut, result)
            summary.requests += 1
            if first_round and page_cursor is None:
                summary.eligible = int(result["eligible"])
                summary.synced = int(result["synced"])
                summary.excluded = list(result.get("excluded", []))
            with store.transaction():
                _apply_excluded(store, result.get("excluded", []))
                store.save_conversations(result["conversations"])
                for conversation in result["conversations"]:
                    summary.messages += store.add_messages(conversation["messages"])
                    store.set_cursor(int(conversation["id"]), int(conversation["cursor"]))
                    more = more or bool(conversation.get("has_more"))
            page_cursor = result.get("next_cursor")
            if not page_cursor:
                return more

    async def flush(self) -> int:
        """Send the messages still waiting (a failed send, or one a crash interrupted)."""
        store = await self._ready()
        summary = SyncSummary()
        await self._flush(store, summary)
        return summary.sent

    async def _flush(
        self, store: LocalStore, summary: SyncSummary, conversation_id: int | None = None
    ) -> None:
        for client_msg_id, cid, body, _ in store.outgoing(conversation_id):
            try:
                await self._post(store, cid, client_msg_id, body)
            except ApiError as exc:
                if not exc.refused:
                    raise
                # refused for good (blocked, left the conversation, too large): it can never
                # be sent, so it is dropped rather than retried forever
                log.warning("message to conversation %s refused: %s", cid, exc.code)
                with store.transaction():
                    store.drop_outgoing(client_msg_id)
                continue
            summary.sent += 1

    async def _post(
        self, store: LocalStore, conversation_id: int, client_msg_id: str, body: str
    ) -> Message:
        raw = await self.api.request(
            "POST",
            f"/v1/conversations/{conversation_id}/messages",
            json_body=_wire.body(SendMessage, {"body": body, "client_msg_id": client_msg_id}),
        )
        _wire.answer(MessageOut, raw)
        with store.transaction():
            store.add_live_message(raw)
        return Message.from_wire(raw)

    async def apply(self, event: Event) -> None:
        """Keep the local store current from a live event of the caller's log."""
        kind, data = event.type, event.data
        if kind not in _APPLIED:
            return
        store = await self._ready()
        with store.transaction():
            if kind == "message.created":
                store.add_live_message(data)
            elif kind == "conversation.created":
                view = data["conversation"]
                store.save_conversations([view])
                if view.get("last_seq") == view.get("joined_seq"):
                    # nothing in it yet for this member: the messages that follow arrive as
                    # events and move the cursor, so the next sync has nothing to fetch again
                    store.set_cursor(int(view["id"]), int(view["joined_seq"]))
            elif kind == "consent.updated":
                store.set_consent(int(data["conversation_id"]), str(data["state"]))
            elif kind == "conversation.updated" and data.get("change") in _LEFT:
                me = _me(store)
                if me is not None and me in (data.get("user_ids") or []):
                    store.leave_conversation(int(data["conversation_id"]))


_APPLIED = {"message.created", "conversation.created", "consent.updated", "conversation.updated"}
_LEFT = {"member_removed", "member_left"}


class Conversation:
    """One conversation: sync it, read it from the local store, send to it."""

    def __init__(self, owner: Conversations, conversation_id: int) -> None:
        self._owner = owner
        self.id = conversation_id

    def __repr__(self) -> str:
        return f"Conversation({self.id})"

    @property
    def _api(self) -> ApiClient:
        return self._owner.api

    async def info(self) -> ConversationView | None:
        """The conversation as the local store holds it (None before it was synced)."""
        store = await self._owner._ready()
        found = store.conversation(self.id)
        if found is None:
            return None
        view, member, cursor = found
        return ConversationView.from_wire(view, member=member, cursor=cursor)

    async def sync(self) -> list[Message]:
        """Fetch this conversation and its messages after the device's cursor (its waiting
        messages are sent first); returns the new messages."""
        store = await self._owner._ready()
        async with self._owner._lock:
            try:
                view = await self._api.request("GET", f"/v1/conversations/{self.id}")
                _wire.answer(ConversationOut, view)
            except ApiError as exc:
                if exc.status == 404:  # no longer a member (or never was)
                    with store.transaction():
                        store.leave_conversation(self.id)
                raise
            with store.transaction():
                store.save_conversations([view])
            await self._owner._flush(store, SyncSummary(), self.id)
            found = store.conversation(self.id)
            after = (found[2] if found else None) or 0
            new: list[Message] = []
            while True:
                page = await self._api.request(
                    "GET",
                    f"/v1/conversations/{self.id}/messages",
                    params={"after": after, "limit": _MESSAGE_PAGE},
                )
                _wire.answer(MessagesPage, page)
                with store.transaction():
                    store.add_messages(page["messages"])
                    store.set_cursor(self.id, int(page["next_after"]))
                new.extend(Message.from_wire(m) for m in page["messages"])
                if len(page["messages"]) < _MESSAGE_PAGE:
                    return new
                after = int(page["next_after"])

    async def messages(
        self, after: int = 0, limit: int | None = None, *, pending: bool = True
    ) -> list[Message]:
        """Messages in the local store in seq order, then (with `pending`) the ones written on
        this device and not yet acknowledged, which have no seq yet."""
        store = await self._owner._ready()
        out = [Message.from_wire(m) for m in store.messages(self.id, after, limit)]
        if pending:
            me = _me(store)
            out.extend(
                Message(cid, None, "text", me, body, queued_at, client_msg_id)
                for client_msg_id, cid, body, queued_at in store.outgoing(self.id)
            )
        return out

    async def send(self, body: str) -> Message:
        """Write the message to the local store, then send it. If the server cannot be reached
        the error is raised and the message stays waiting: the next `sync()`/`sync_all()`
        sends it, with the same client_msg_id, so it is never posted twice. A refusal (403
        blocked, 413 too large, …) removes it and raises."""
        store = await self._owner._ready()
        client_msg_id = uuid.uuid4().hex
        with store.transaction():
            store.queue_message(client_msg_id, self.id, body, int(time.time() * 1000))
        try:
            return await self._owner._post(store, self.id, client_msg_id, body)
        except ApiError as exc:
            if exc.refused:
                with store.transaction():
                    store.drop_outgoing(client_msg_id)
            raise

    async def set_consent(self, state: str) -> ConversationView:
        """The caller's consent for this conversation: allowed, unknown or denied."""
        consent_states([state])
        return await self._save(
            await self._api.request(
                "PUT",
                f"/v1/conversations/{self.id}/consent",
                json_body=_wire.body(SetConsent, {"state": state}),
            )
        )

    async def update(self, **changes: str | None) -> ConversationView:
        """Rename a group or change its description (`name=`, `description=`)."""
        return await self._save(
            await self._api.request(
                "PATCH",
                f"/v1/conversations/{self.id}",
                json_body=_wire.body(PatchConversation, changes),
            )
        )

    async def add_members(self, user_ids: Iterable[int]) -> ConversationView:
        return await self._save(
            await self._api.request(
                "POST",
                f"/v1/conversations/{self.id}/members",
                json_body=_wire.body(AddMembers, {"user_ids": [int(u) for u in user_ids]}),
            )
        )

    async def leave(self) -> None:
        store = await self._owner._ready()
        me = _me(store)
        await self._api.request("DELETE", f"/v1/conversations/{self.id}/members/{me}")
        with store.transaction():
            store.leave_conversation(self.id)

    async def _save(self, view: dict[str, Any]) -> ConversationView:
        _wire.answer(ConversationOut, view)
        store = await self._owner._ready()
        with store.transaction():
            store.save_conversations([view])
        found = store.conversation(self.id)
        assert found is not None
        return ConversationView.from_wire(found[0], member=found[1], cursor=found[2])


def _apply_excluded(store: LocalStore, excluded: Iterable[dict[str, Any]]) -> None:
    for item in excluded:
        cid = int(item["id"])
        if not item.get("member", True):
            store.leave_conversation(cid)
        elif item.get("consent"):
            store.set_consent(cid, str(item["consent"]))


def _me(store: LocalStore) -> int | None:
    session = store.get_json("session") or {}
    user_id = session.get("user_id")
    return None if user_id is None else int(user_id)
