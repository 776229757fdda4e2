"""Admin view of the push outbox: what is pending, what failed and why; retry failed ones."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from contactsync.protocol import Input, PushOutboxPage, PushRequeued, Seq
from contactsync.server.http.deps import Admin, Ctx
from contactsync.server.services import push

router = APIRouter(prefix="/v1/admin/push", tags=["admin"], dependencies=[Admin])


class RetryIn(Input):
    ids: list[Seq] | None = Field(None, max_length=10_000)


@router.get("/outbox", response_model=PushOutboxPage)
async def outbox(
    ctx: Ctx,
    state: Literal["pending", "failed"] = "failed",
    cursor: Annotated[Seq, Query()] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PushOutboxPage:
    """Push webhook deliveries in one state (failed by default, or pending), with each one's
    last error, and the counts of every state."""
    async with ctx.read() as tx:
        items = await push.listing(tx, state, cursor, limit)
        counts = await push.counts(tx)
    return PushOutboxPage(
        items=items,
        counts=counts,
        next_cursor=str(items[-1]["id"]) if len(items) == limit else None,
    )


@router.post("/outbox/retry", response_model=PushRequeued)
async def retry(body: RetryIn, ctx: Ctx) -> PushRequeued:
    """Send failed push deliveries again now."""
    async with ctx.tx() as tx:
        count = await push.retry_failed(tx, body.ids)
    worker = ctx.services.push
    if worker is not None and count:
        await worker.wake()
    return PushRequeued(requeued=count)
