"""Pairing (backend only): two users who may talk even when one of them is restricted."""

from __future__ import annotations

from fastapi import APIRouter

from contactsync.protocol import PairIn, PairOut, PairsOut
from contactsync.server.http.deps import Admin, Ctx, UserIdPath
from contactsync.server.services import pairs

router = APIRouter(prefix="/v1/admin/pairs", tags=["admin"], dependencies=[Admin])


@router.put("", response_model=PairOut)
async def put_pair(body: PairIn, ctx: Ctx) -> PairOut:
    """Pair two users, so a restricted one may talk to the other (idempotent)."""
    async with ctx.tx() as tx:
        await pairs.pair(tx, body.a, body.b)
    return PairOut(a=body.a, b=body.b, paired=True)


@router.delete("", response_model=PairOut)
async def delete_pair(body: PairIn, ctx: Ctx) -> PairOut:
    """Unpair two users (idempotent)."""
    async with ctx.tx() as tx:
        await pairs.unpair(tx, body.a, body.b)
    return PairOut(a=body.a, b=body.b, paired=False)


@router.get("/{user_id}", response_model=PairsOut)
async def list_pairs(user_id: UserIdPath, ctx: Ctx) -> PairsOut:
    """Everyone paired with a user."""
    async with ctx.read() as tx:
        return PairsOut(user_id=user_id, paired_with=await pairs.partners(tx, user_id))
