"""Request dependencies: the context, the caller's session, the admin check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from contactsync.errors import AdminOnly, Unauthorized
from contactsync.server.context import Context
from contactsync.server.services import admin, sessions
from contactsync.server.services.sessions import Session


def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized()
    return value.strip()


async def get_session(
    ctx: Annotated[Context, Depends(get_context)], token: Annotated[str, Depends(bearer)]
) -> Session:
    async with ctx.read() as tx:
        return await sessions.authenticate(tx, token)


def require_admin(
    ctx: Annotated[Context, Depends(get_context)], token: Annotated[str, Depends(bearer)]
) -> None:
    key_hash: str = ctx.services["admin_key"].key_hash
    if not admin.is_admin(key_hash, token):
        raise AdminOnly()


Ctx = Annotated[Context, Depends(get_context)]
Caller = Annotated[Session, Depends(get_session)]
Admin = Depends(require_admin)
