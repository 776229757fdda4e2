"""Blocks: the caller blocks or unblocks another user, and lists whom they block."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from contactsync.protocol import BlocksPage
from contactsync.server import cursors
from contactsync.server.http.deps import Caller, Ctx, UserIdPath
from contactsync.server.services import blocks

router = APIRouter(prefix="/v1/blocks", tags=["blocks"])


@router.get("", response_model=BlocksPage)
async def list_blocks(
    caller: Caller,
    ctx: Ctx,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=blocks.MAX_PAGE)] = 100,
) -> BlocksPage:
    """The users the caller has blocked, by page."""
    after = cursors.decode(cursor, id=int)["id"] if cursor else 0
    async with ctx.read() as tx:
        found = await blocks.blocked_by(tx, caller.user_id, after, limit)
    next_cursor = cursors.encode(id=found[-1]) if len(found) == limit else None
    return BlocksPage(blocked=found, next_cursor=next_cursor)


@router.put("/{user_id}", status_code=204)
async def block(user_id: UserIdPath, caller: Caller, ctx: Ctx) -> Response:
    """Block a user (idempotent): they can no longer reach the caller."""
    async with ctx.tx() as tx:
        await blocks.block(tx, caller.user_id, user_id)
    return Response(status_code=204)


@router.delete("/{user_id}", status_code=204)
async def unblock(user_id: UserIdPath, caller: Caller, ctx: Ctx) -> Response:
    """Unblock a user."""
    async with ctx.tx() as tx:
        await blocks.unblock(tx, caller.user_id, user_id)
    return Response(status_code=204)
