"""Conversations, members, consent and messages: parse, call the service, reply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response

from contactsync.protocol import (
    AddMembers,
    ConversationOut,
    ConversationsPage,
    CreateConversation,
    MessageOut,
    MessagesPage,
    PatchConversation,
    SendMessage,
    SetConsent,
)
from contactsync.server.http.deps import Caller, Ctx
from contactsync.server.services import conversations, messages

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

BIGINT = 2**63 - 1
ConversationId = Annotated[int, Path(ge=1, le=BIGINT)]


@router.post("", status_code=201, response_model=ConversationOut)
async def create_conversation(
    body: CreateConversation,
    caller: Caller,
    ctx: Ctx,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=64)] = None,
) -> dict[str, Any]:
    """A retry with the same Idempotency-Key returns the first conversation (200)."""
    async with ctx.tx() as tx:
        view, created = await conversations.create(
            tx,
            caller.user_id,
            body.kind,
            body.members,
            name=body.name,
            description=body.description,
            create_key=idempotency_key,
        )
    if not created:
        response.status_code = 200
    return view


@router.get("", response_model=ConversationsPage)
async def list_conversations(
    caller: Caller,
    ctx: Ctx,
    updated_after: Annotated[int, Query(ge=0, le=BIGINT)] = 0,
    consent: Annotated[str, Query(max_length=100)] = "allowed,unknown",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=conversations.MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """The caller's conversations, filtered by consent and updated since a time, by page."""
    states = conversations.parse_consent(consent.split(","))
    async with ctx.read() as tx:
        page, next_cursor = await conversations.list_for_user(
            tx,
            caller.user_id,
            consent=states,
            updated_after=updated_after,
            cursor=cursor,
            limit=limit,
        )
    return {"conversations": page, "next_cursor": next_cursor}


@router.get("/{conversation_id}", response_model=ConversationOut)
async def get_conversation(
    conversation_id: ConversationId, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """One conversation the caller is a member of."""
    async with ctx.read() as tx:
        return await conversations.view(tx, conversation_id, caller.user_id)


@router.patch("/{conversation_id}", response_model=ConversationOut)
async def patch_conversation(
    conversation_id: ConversationId, body: PatchConversation, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """Rename a group or change its description."""
    changes: dict[str, str | None] = {
        field: getattr(body, field) for field in body.model_fields_set
    }
    async with ctx.tx() as tx:
        return await conversations.update_group(tx, conversation_id, caller.user_id, changes)


@router.post("/{conversation_id}/members", response_model=ConversationOut)
async def add_members(
    conversation_id: ConversationId, body: AddMembers, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """Add members to a group (group admins only)."""
    async with ctx.tx() as tx:
        return await conversations.add_members(tx, conversation_id, caller.user_id, body.user_ids)


@router.delete("/{conversation_id}/members/{user_id}", status_code=204)
async def remove_member(
    conversation_id: ConversationId,
    user_id: Annotated[int, Path(ge=1, le=BIGINT)],
    caller: Caller,
    ctx: Ctx,
) -> Response:
    """Remove a member from a group (group admins), or leave it (any member, for oneself)."""
    async with ctx.tx() as tx:
        await conversations.remove_member(tx, conversation_id, caller.user_id, user_id)
    return Response(status_code=204)


@router.put("/{conversation_id}/consent", response_model=ConversationOut)
async def set_consent(
    conversation_id: ConversationId, body: SetConsent, caller: Caller, ctx: Ctx
) -> dict[str, Any]:
    """The caller's consent for a conversation: allowed, unknown or denied."""
    async with ctx.tx() as tx:
        return await conversations.set_consent(
            tx, conversation_id, caller.user_id, body.state, device_id=caller.device_id
        )


@router.post("/{conversation_id}/messages", status_code=201, response_model=MessageOut)
async def send_message(
    conversation_id: ConversationId,
    body: SendMessage,
    caller: Caller,
    ctx: Ctx,
    response: Response,
) -> dict[str, Any]:
    """Send a message; a retry with the same `client_msg_id` is stored once."""
    async with ctx.tx() as tx:
        message, created = await messages.send(
            tx,
            conversation_id,
            caller.user_id,
            body.body,
            body.client_msg_id,
            device_id=caller.device_id,
        )
    if not created:
        response.status_code = 200
    return message.wire()


@router.get("/{conversation_id}/messages", response_model=MessagesPage)
async def list_messages(
    conversation_id: ConversationId,
    caller: Caller,
    ctx: Ctx,
    after: Annotated[int, Query(ge=0, le=BIGINT)] = 0,
    limit: Annotated[int, Query(ge=1, le=messages.MAX_PAGE)] = 100,
) -> dict[str, Any]:
    """A conversation's messages after a sequence number, by page."""
    async with ctx.read() as tx:
        page, next_after = await messages.list_page(
            tx, conversation_id, caller.user_id, after=after, limit=limit
        )
    return {"messages": [m.wire() for m in page], "next_after": next_after}
