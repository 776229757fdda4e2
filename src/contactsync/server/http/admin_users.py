"""Admin (app backend) calls on users: create, read, change, delete, mint tokens."""

from __future__ import annotations

from fastapi import APIRouter, Response

from contactsync.protocol import (
    CreateUser,
    DevicesOut,
    MintToken,
    PatchUser,
    TokenOut,
    TokensRevoked,
    UserOut,
)
from contactsync.server.http.deps import Admin, Ctx, UserIdPath
from contactsync.server.services import joins, numbers, sessions, users

router = APIRouter(prefix="/v1/admin/users", tags=["admin"], dependencies=[Admin])


def user_out(user: users.User) -> UserOut:
    return UserOut(
        user_id=user.id,
        phone=user.phone,
        name=user.name,
        region=user.region,
        restricted=user.restricted,
        created_at=user.created_at,
    )


@router.post(
    "",
    status_code=201,
    response_model=UserOut,
    responses={200: {"model": UserOut, "description": "The number was already registered"}},
)
async def create_user(body: CreateUser, ctx: Ctx, response: Response) -> UserOut:
    """Register a user by phone number: 201 for a new one, 200 with the existing user for a known
    number."""
    async with ctx.tx() as tx:
        user, created = await joins.register(
            tx,
            body.phone,
            name=body.name or None,
            region=body.region,
            default_region=ctx.settings.default_region,
            discoverable_by=body.discoverable_by,
            announce_join_to=body.announce_join_to,
        )
    if not created:
        response.status_code = 200
    return user_out(user)


@router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: UserIdPath, ctx: Ctx) -> UserOut:
    """One user."""
    async with ctx.read() as tx:
        return user_out(await users.get(tx, user_id))


@router.patch("/{user_id}", response_model=UserOut)
async def patch_user(user_id: UserIdPath, body: PatchUser, ctx: Ctx) -> UserOut:
    """Change a user's name, region or restriction."""
    async with ctx.tx() as tx:
        user = await users.update(
            tx,
            user_id,
            name=body.name,
            region=numbers.resolve_region(body.region),
            restricted=body.restricted,
            fields_set=frozenset(body.model_fields_set),
        )
    return user_out(user)


@router.delete("/{user_id}", status_code=204)
async def delete_user(user_id: UserIdPath, ctx: Ctx) -> Response:
    """Delete a user and everything that belongs to them."""
    async with ctx.tx() as tx:
        await joins.leave(tx, user_id)
    return Response(status_code=204)


@router.post("/{user_id}/tokens", response_model=TokenOut)
async def mint_token(user_id: UserIdPath, body: MintToken, ctx: Ctx) -> TokenOut:
    """A bearer token for one device of the user; the device's earlier token stops working."""
    async with ctx.tx() as tx:
        await users.get(tx, user_id)
        token = await sessions.mint(tx, user_id, body.device_id)
    return TokenOut(user_id=user_id, device_id=body.device_id, token=token)


@router.delete("/{user_id}/tokens", status_code=200, response_model=TokensRevoked)
async def revoke_tokens(user_id: UserIdPath, ctx: Ctx) -> TokensRevoked:
    """Revoke every token of the user: all their devices are signed out."""
    async with ctx.tx() as tx:
        await users.get(tx, user_id)
        revoked = await sessions.revoke_all(tx, user_id)
    return TokensRevoked(revoked=revoked)


@router.get("/{user_id}/devices", response_model=DevicesOut)
async def list_devices(user_id: UserIdPath, ctx: Ctx) -> dict[str, object]:
    """The user's devices and whether each is signed in."""
    async with ctx.read() as tx:
        await users.get(tx, user_id)
        return {"devices": await sessions.list_devices(tx, user_id)}
