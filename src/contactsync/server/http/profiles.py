"""Profiles: the caller's own (with levels) and other users' (only what the caller may see)."""

from __future__ import annotations

from fastapi import APIRouter

from contactsync.protocol import OwnProfileOut, PatchProfile, ProfileFieldOut, ProfileOut
from contactsync.server.http.deps import Caller, Ctx, UserIdPath
from contactsync.server.services import profiles

router = APIRouter(tags=["profiles"])


def _own(user_id: int, fields: dict[str, profiles.Field]) -> OwnProfileOut:
    return OwnProfileOut(
        user_id=user_id,
        fields={n: ProfileFieldOut(value=f.value, level=f.level) for n, f in fields.items()},
    )


@router.get("/v1/me/profile", response_model=OwnProfileOut)
async def own_profile(caller: Caller, ctx: Ctx) -> OwnProfileOut:
    """The caller's profile fields with their access levels."""
    async with ctx.read() as tx:
        return _own(caller.user_id, await profiles.fields_of(tx, caller.user_id))


@router.patch("/v1/me/profile", response_model=OwnProfileOut)
async def patch_profile(body: PatchProfile, caller: Caller, ctx: Ctx) -> OwnProfileOut:
    """Set or clear profile fields; level 0 is public, higher levels are shown to relations granted
    them."""
    changes = {
        name: None if f is None else profiles.FieldChange(f.value, f.level)
        for name, f in body.fields.items()
    }
    async with ctx.tx() as tx:
        fields = await profiles.update(tx, caller.user_id, changes)
    return _own(caller.user_id, dict(sorted(fields.items())))


@router.get("/v1/users/{user_id}/profile", response_model=ProfileOut)
async def user_profile(user_id: UserIdPath, caller: Caller, ctx: Ctx) -> ProfileOut:
    """Another user's profile as the caller may see it."""
    async with ctx.tx() as tx:  # committed on its own: a 404 counts too
        await profiles.count_read(tx, caller.user_id, user_id)
    async with ctx.read() as tx:
        fields = await profiles.visible_profile(tx, caller.user_id, user_id)
    return ProfileOut(user_id=user_id, fields=fields)
