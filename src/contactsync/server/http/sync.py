"""POST /v1/sync: everything new for the caller's eligible conversations in one round trip."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import Field

from contactsync.protocol import Input
from contactsync.server.http.deps import Caller, Ctx
from contactsync.server.services import sync

router = APIRouter(prefix="/v1/sync", tags=["conversations"])


class SyncRequest(Input):
    consent: Annotated[
        list[Literal["allowed", "unknown", "denied"]], Field(min_length=1, max_length=3)
    ] = ["allowed"]
    # {conversation_id: the last seq the client holds}; keys are JSON strings.
    cursors: dict[str, int] = Field(default_factory=dict)
    cursor: Annotated[str | None, Field(max_length=200)] = None
    limit: Annotated[int, Field(ge=1, le=sync.MAX_PAGE)] = 100
    message_limit: Annotated[int, Field(ge=1, le=sync.MAX_MESSAGES)] = 100


@router.post("")
async def sync_all(body: SyncRequest, caller: Caller, ctx: Ctx) -> dict[str, Any]:
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
