"""Private discovery: the filter, OPRF evaluation and resolving matches (docs/privacy.md)."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from contactsync.protocol import (
    DiscoveryContacts,
    DiscoveryInfo,
    EvaluateIn,
    EvaluateOut,
    FilterDelta,
    KeyRotated,
    ResolveIn,
    ResolveOut,
    RotationStatus,
)
from contactsync.server.http.deps import Admin, Caller, Ctx, parse_body
from contactsync.server.services import private_discovery

router = APIRouter(tags=["discovery"])

FILTER_TYPE = "application/vnd.contactsync.filter"
Version = Annotated[int | None, Query(ge=0, le=2**63 - 1)]
KeyVersion = Annotated[int, Query(ge=0, le=2**63 - 1)]


@router.get("/v1/discovery", response_model=DiscoveryInfo)
async def info(caller: Caller, ctx: Ctx) -> DiscoveryInfo:
    """The discovery mode of this server, the OPRF key version and the filter version."""
    async with ctx.read() as tx:
        now = await private_discovery.state(tx)
    return DiscoveryInfo(
        mode=ctx.settings.discovery_mode, key_version=now.key_version, version=now.version
    )


@router.get(
    "/v1/discovery/filter",
    response_model=FilterDelta,
    responses={200: {"content": {FILTER_TYPE: {}}}},
)
async def get_filter(
    caller: Caller, ctx: Ctx, since: Version = None, key_version: Version = None
) -> Any:
    """The changes after `since` (JSON) when the server still has them under `key_version`;
    otherwise the whole filter (binary, `contactsync.tagfilter`), whose version is in the
    `X-Discovery-Version` header: ask again with `since` set to it for the rest."""
    if since is not None and key_version is not None:
        async with ctx.read() as tx:
            found = await private_discovery.delta(tx, since, key_version)
        if found is not None:
            return FilterDelta(
                key_version=found.key_version,
                since=since,
                version=found.version,
                changes=base64.b64encode(found.changes).decode(),
            )
    data, version, key = await private_discovery.full(ctx)
    return Response(
        content=data,
        media_type=FILTER_TYPE,
        headers={"X-Discovery-Version": str(version), "X-Discovery-Key-Version": str(key)},
    )


_EVALUATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": EvaluateIn.model_json_schema()}},
    }
}


@router.post("/v1/discovery/evaluate", response_model=EvaluateOut, openapi_extra=_EVALUATE_BODY)
async def evaluate(request: Request, caller: Caller, ctx: Ctx) -> EvaluateOut:
    """Raise each blinded point to the server's key; each point counts against the quota."""
    body = parse_body(EvaluateIn, await request.body())
    points = await private_discovery.evaluate(ctx, caller.user_id, body.key_version, body.points)
    return EvaluateOut(key_version=body.key_version, points=points)


@router.post("/v1/discovery/resolve", response_model=ResolveOut)
async def resolve(body: ResolveIn, caller: Caller, ctx: Ctx) -> dict[str, Any]:
    """The users behind the tags the client matched in the filter."""
    async with ctx.read() as tx:
        users = await private_discovery.resolve(tx, caller.user_id, body.key_version, body.tags)
    return {"users": users}


@router.get("/v1/discovery/contacts", response_model=DiscoveryContacts)
async def own_contacts(caller: Caller, ctx: Ctx, key_version: KeyVersion) -> DiscoveryContacts:
    """The filter keys of the users discoverable by their contacts who let the caller find
    them: the caller's own addition to the filter."""
    async with ctx.read() as tx:
        keys = await private_discovery.contacts(tx, caller.user_id, key_version)
    return DiscoveryContacts(key_version=key_version, keys=keys)


@router.post(
    "/v1/admin/discovery/rotate-key",
    response_model=KeyRotated,
    responses={202: {"model": KeyRotated, "description": "the rotation goes on"}},
    dependencies=[Admin],
)
async def rotate_key(
    ctx: Ctx,
    response: Response,
    wait: Annotated[float, Query(ge=0, le=60)] = private_discovery.ROTATE_WAIT_S,
) -> KeyRotated:
    """A new OPRF key: every user is tagged under it in the background, then it comes into
    force and clients re-evaluate. Waits up to `wait` seconds: 200 when it is in force, else
    202 (follow it with GET /v1/admin/discovery/rotation)."""
    version, done = await private_discovery.rotate(ctx, wait=wait)
    if not done:
        response.status_code = 202
    return KeyRotated(key_version=version, done=done)


@router.get("/v1/admin/discovery/rotation", response_model=RotationStatus, dependencies=[Admin])
async def rotation(ctx: Ctx) -> RotationStatus:
    """The key version in force and the rotation under way, if any."""
    now = await private_discovery.rotation(ctx)
    return RotationStatus(
        key_version=now.key_version, rotating_to=now.rotating_to, tagged=now.tagged, users=now.users
    )
