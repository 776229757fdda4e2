"""Relations (contact, subscribe, access levels) by user id or number, and the bulk sync."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from contactsync.protocol import (
    PutRelation,
    RelationOut,
    RelationsPage,
    SyncRelations,
    SyncRelationsOut,
)
from contactsync.server.http.deps import Caller, Ctx
from contactsync.server.services import profiles, relations
from contactsync.server.services.sessions import Session

router = APIRouter(prefix="/v1/relations", tags=["relations"])


def _caller(session: Session) -> relations.Caller:
    return relations.Caller(session.user_id, session.phone, session.region)


def _change(body: PutRelation | SyncRelations) -> relations.Change:
    mask = None if body.access_levels is None else profiles.mask_of(body.access_levels)
    return relations.Change(
        contact=body.contact, subscribe=body.subscribe, mask=mask, mode=body.mode
    )


def _out(key: int | str, relation: relations.Relation | None) -> RelationOut:
    if relation is None:  # nothing left of it
        return RelationOut(
            user_id=key if isinstance(key, int) else None,
            phone=key if isinstance(key, str) else None,
            pending=isinstance(key, str),
            contact=False,
            subscribe=False,
            access_levels=[],
        )
    return RelationOut(**relation.wire())


@router.get("", response_model=RelationsPage)
async def list_relations(
    caller: Caller,
    ctx: Ctx,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=relations.MAX_PAGE)] = 100,
) -> RelationsPage:
    """The caller's relations, by page."""
    async with ctx.read() as tx:
        found, next_cursor = await relations.page(tx, caller.user_id, cursor, limit)
    return RelationsPage(
        relations=[RelationOut(**r.wire()) for r in found], next_cursor=next_cursor
    )


@router.post("/sync", response_model=SyncRelationsOut)
async def sync_relations(body: SyncRelations, caller: Caller, ctx: Ctx) -> SyncRelationsOut:
    """Set relations for many phone numbers in one call."""
    change = _change(body)
    async with ctx.tx() as tx:
        outcome = await relations.sync(
            tx, _caller(caller), body.phones, change, body.region, ctx.settings.default_region
        )
    return SyncRelationsOut(**outcome.wire())


@router.get("/{target}", response_model=RelationOut)
async def get_relation(target: str, caller: Caller, ctx: Ctx) -> RelationOut:
    """The caller's relation to a user (by id or +E.164 number)."""
    # A write transaction: a look-up by number is charged to the discovery quota (it tells
    # whether the number is registered), and the charge is a write.
    async with ctx.tx() as tx:
        key, relation = await relations.lookup(tx, _caller(caller), target)
    return _out(key, relation)


@router.put("/{target}", response_model=RelationOut)
async def put_relation(target: str, body: PutRelation, caller: Caller, ctx: Ctx) -> RelationOut:
    """Create or change the caller's relation to a user: contact, subscribe, access levels."""
    change = _change(body)
    async with ctx.tx() as tx:
        key, relation = await relations.put(tx, _caller(caller), target, change)
    return _out(key, relation)


@router.delete("/{target}", status_code=204)
async def delete_relation(target: str, caller: Caller, ctx: Ctx) -> Response:
    """Remove the caller's relation to a user."""
    async with ctx.tx() as tx:
        await relations.remove(tx, _caller(caller), target)
    return Response(status_code=204)
