"""The caller's preferences, shared by all of their devices."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from contactsync.server.http.deps import Caller, Ctx
from contactsync.server.services import preferences

router = APIRouter(prefix="/v1/me/preferences", tags=["me"])


@router.get("", response_model=preferences.Preferences)
async def get_preferences(caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """The caller's preferences (such as notify_contact_joined)."""
    async with ctx.read() as tx:
        return await preferences.get_preferences(tx, caller.user_id)


@router.put("", response_model=preferences.Preferences)
async def put_preferences(
    caller: Caller,
    ctx: Ctx,
    body: dict[str, Any] = Body(...),  # noqa: B008
) -> dict[str, Any]:
    """Set some or all preferences; the ones not named keep their value."""
    async with ctx.tx() as tx:
        return await preferences.update(tx, caller.user_id, body, device_id=caller.device_id)
