"""The caller's devices, and sync requests between them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from contactsync.protocol import DevicesOut, DeviceSyncRequest, SyncRequested
from contactsync.server.http.deps import Caller, Ctx
from contactsync.server.services import events, sessions

router = APIRouter(prefix="/v1/devices", tags=["devices"])


@router.get("", response_model=DevicesOut)
async def list_devices(caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """The caller's devices and whether each is signed in."""
    async with ctx.read() as tx:
        return {"devices": await sessions.list_devices(tx, caller.user_id)}


@router.post("/sync-request", status_code=202, response_model=SyncRequested)
async def sync_request(
    caller: Caller, ctx: Ctx, body: Annotated[DeviceSyncRequest | None, Body()] = None
) -> dict[str, Any]:
    """Ask the caller's other devices to sync. The event goes to the user's log (every device
    reads it); `device_id` in its data names the requesting device, which ignores it, and
    `devices` the user's other devices with an active token, the ones asked."""
    async with ctx.tx() as tx:
        others = [
            d["device_id"]
            for d in await sessions.list_devices(tx, caller.user_id)
            if d["active"] and d["device_id"] != caller.device_id
        ]
        data = {
            "device_id": caller.device_id,
            "devices": others,
            "reason": body.reason if body else None,
        }
        written = await events.append(tx, [events.NewEvent(caller.user_id, "sync.requested", data)])
    return {"seq": written[0][1] if written else None, "device_id": caller.device_id}
