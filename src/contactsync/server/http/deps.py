"""Request dependencies: the context, the caller's session, the admin check.

Every dependency is `async def` although none of them waits: FastAPI runs a plain `def`
dependency in a worker thread, which cost a thread hand-off (and a fight for the GIL) per
dependency per request.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from contactsync.errors import AdminOnly, Unauthorized
from contactsync.protocol import MAX_ID
from contactsync.server.context import Context
from contactsync.server.services import admin, sessions
from contactsync.server.services.sessions import Session

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], raw: bytes) -> M:
    """Validate a JSON body with `model` directly from bytes; errors as FastAPI's own."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


async def get_context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized()
    return value.strip()


# The caller's session and the admin check each take the request alone, not the context and
# the token as dependencies of their own: FastAPI solves every dependency of every request
# anew (two fewer per request).


async def get_session(request: Request) -> Session:
    ctx = await get_context(request)
    token = bearer_token(request)
    # A session this process knows needs no transaction at all.
    known = sessions.cached(ctx.caches, token)
    if known is not None:
        return known
    async with ctx.read() as tx:
        return await sessions.authenticate(tx, token)


async def require_admin(request: Request) -> None:
    ctx = await get_context(request)
    token = bearer_token(request)
    assert ctx.services.admin_key is not None, "the app reads the admin key on start"
    key_hash = ctx.services.admin_key.key_hash
    if not admin.is_admin(key_hash, token):
        raise AdminOnly()


Ctx = Annotated[Context, Depends(get_context)]
Caller = Annotated[Session, Depends(get_session)]
Admin = Depends(require_admin)
# A user id in a path: bounded so an absurd id is a 422, not a driver overflow.
UserIdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
