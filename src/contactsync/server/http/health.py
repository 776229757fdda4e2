"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from contactsync.server.http.deps import Ctx

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ctx: Ctx) -> JSONResponse:
    if await ctx.db.ping():
        return JSONResponse({"status": "ok", "database": ctx.db.dialect})
    return JSONResponse(
        {"error": {"code": "store_unavailable", "message": "The database is not reachable."}},
        status_code=503,
    )
