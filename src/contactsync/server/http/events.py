"""Reading the caller's event log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from contactsync.protocol import EventOut, EventsPage, Seq
from contactsync.server.http.deps import Caller, Ctx
from contactsync.server.services import events, retention

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.get("", response_model=EventsPage)
async def read_events(
    caller: Caller,
    ctx: Ctx,
    after: Annotated[Seq, Query()] = 0,
    limit: Annotated[int, Query(ge=1, le=events.MAX_PAGE)] = 100,
) -> EventsPage:
    """The caller's durable event log after a sequence number (`after`), oldest first; 409
    `after_beyond_end` when `after` is past the end; 410 `events_trimmed` when events after it
    were removed by the retention period (resync, then follow from `details.last_seq`). The
    same events are pushed over the WebSocket at /v1/events/ws."""
    async with ctx.read() as tx:
        page = await events.read(tx, caller.user_id, after, limit)
        if not page or page[0].seq != after + 1:  # a gap (or nothing): was it trimmed?
            await retention.check_replay(tx, caller.user_id, after)
    if page and ctx.services.metrics is not None:
        ctx.services.metrics.events_delivered.labels("poll").inc(len(page))
    return EventsPage(
        events=[EventOut(**event.wire()) for event in page],
        next_after=page[-1].seq if page else after,
    )
