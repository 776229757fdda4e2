"""The caller's own account and session."""

from __future__ import annotations

from fastapi import APIRouter, Response

from contactsync.protocol import MeOut
from contactsync.server.http.deps import Caller, Ctx
from contactsync.server.services import sessions

router = APIRouter(prefix="/v1/me", tags=["me"])


@router.get("", response_model=MeOut)
async def me(caller: Caller) -> MeOut:
    """The caller: user id, phone, name, region, restriction and this token's device."""
    return MeOut(
        user_id=caller.user_id,
        phone=caller.phone,
        name=caller.name,
        region=caller.region,
        restricted=caller.restricted,
        device_id=caller.device_id,
    )


@router.delete("/session", status_code=204)
async def logout(caller: Caller, ctx: Ctx) -> Response:
    """Revoke the token this request was made with."""
    async with ctx.tx() as tx:
        await sessions.revoke(tx, caller.token_hash)
    return Response(status_code=204)
