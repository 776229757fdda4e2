"""POST /v1/sync: everything new for the caller's eligible conversations in one round trip."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from contactsync.protocol import SyncOut, SyncRequest
from contactsync.server.http.deps import Caller, Ctx
from contactsync.server.services import sync

router = APIRouter(prefix="/v1/sync", tags=["conversations"])


@router.post("", response_model=SyncOut)
async def sync_all(body: SyncRequest, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """Sync every eligible conversation in one round trip: the changed conversations and their new
    messages after the given cursors."""
    cursors = sync.parse_cursors(body.cursors)
    async with ctx.read() as tx:
        return await sync.sync(
            tx,
            caller.user_id,
            consent=sorted(set(body.consent)),
            cursors=cursors,
            page_cursor=body.cursor,
            limit=body.limit,
            message_limit=body.message_limit,
        )
