"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from contactsync.errors import StoreUnavailable
from contactsync.server.http.deps import Ctx
from contactsync.server.http.errors import error_headers, error_response

router = APIRouter(tags=["health"])

# A load balancer's probe gives up after a few seconds: answer well within them, also when
# the database hangs rather than refuses.
READY_TIMEOUT_SECONDS = 1.5


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ctx: Ctx) -> JSONResponse:
    """The process can reach its database (503 while it cannot)."""
    if await ctx.db.ping(READY_TIMEOUT_SECONDS):
        return JSONResponse({"status": "ok", "database": ctx.db.dialect})
    error = StoreUnavailable()
    return error_response(
        error.status, error.code, error.message, error.details, error_headers(error)
    )
