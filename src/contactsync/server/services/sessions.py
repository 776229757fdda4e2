"""Devices and bearer tokens: one token per device, stored only as a SHA-256 hash.

`authenticate` is served from the process-local cache (`server/cache.py`) when it can be.
Everything that ends or changes a session (revoke, a new token for the device, the user
changed or deleted) sends `sessions.changed` with the user id after its commit: every process
drops that user's cached sessions and re-checks that user's sockets (`ws.Hub`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from contactsync.errors import InvalidRequest, Unauthorized
from contactsync.server.cache import Caches
from contactsync.server.cache import sessions_changed as changed
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import secrets
from contactsync.server.store.tables import devices, tokens, users

DEVICE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


@dataclass(frozen=True)
class Session:
    user_id: int
    phone: str
    name: str | None
    region: str | None
    restricted: bool
    device_id: str
    device_pk: int
    token_hash: str


def check_device_id(device_id: str) -> str:
    if not DEVICE_ID.fullmatch(device_id):
        raise InvalidRequest(
            "device_id must be 1-128 characters of letters, digits and . _ : -",
            details={"field": "device_id"},
        )
    return device_id


async def ensure_device(tx: Tx, user_id: int, device_id: str) -> int:
    """The device row for (user, device_id), created on first use."""
    check_device_id(device_id)
    query = sa.select(devices.c.id).where(
        devices.c.user_id == user_id, devices.c.device_id == device_id
    )
    device_pk = await tx.conn.scalar(query)
    if device_pk is None:
        device_pk = await tx.conn.scalar(
            sa.insert(devices)
            .values(user_id=user_id, device_id=device_id, created_at=tx.now)
            .returning(devices.c.id)
        )
    assert device_pk is not None
    return int(device_pk)


async def mint(tx: Tx, user_id: int, device_id: str) -> str:
    """A new token for the device; any earlier token of that device stops working."""
    device_pk = await ensure_device(tx, user_id, device_id)
    replaced = await tx.conn.execute(sa.delete(tokens).where(tokens.c.device_pk == device_pk))
    if replaced.rowcount:
        changed(tx, user_id)
    token = secrets.new_token()
    await tx.conn.execute(
        sa.insert(tokens).values(
            token_hash=secrets.sha256(token),
            user_id=user_id,
            device_pk=device_pk,
            created_at=tx.now,
        )
    )
    return token


_AUTHENTICATE = (
    sa.select(
        users.c.id,
        users.c.phone,
        users.c.name,
        users.c.region,
        users.c.restricted,
        devices.c.device_id,
        devices.c.id.label("device_pk"),
    )
    .select_from(tokens.join(users, users.c.id == tokens.c.user_id))
    .join(devices, devices.c.id == tokens.c.device_pk)
    .where(tokens.c.token_hash == sa.bindparam("token_hash"))
)


def cached(caches: Caches | None, token: str) -> Session | None:
    """The session behind a token when this process has it cached, else None."""
    if caches is None or not token.startswith(secrets.TOKEN_PREFIX) or len(token) > 100:
        return None
    found: Session | None = caches.sessions.get(secrets.sha256(token))
    return found


async def authenticate(tx: ReadTx, token: str, *, cached: bool = True) -> Session:
    """The session behind a bearer token; `cached=False` always asks the database."""
    if not token.startswith(secrets.TOKEN_PREFIX) or len(token) > 100:
        raise Unauthorized("The token is not valid.", details={"reason": "invalid_token"})
    token_hash = secrets.sha256(token)
    cache = tx.caches.sessions if cached and tx.caches is not None else None
    if cache is not None:
        found: Session | None = cache.get(token_hash)
        if found is not None:
            return found
        stamp = cache.stamp()
    row = (await tx.conn.execute(_AUTHENTICATE, {"token_hash": token_hash})).first()
    if row is None:
        raise Unauthorized("The token is not valid.", details={"reason": "invalid_token"})
    session = Session(
        user_id=row.id,
        phone=row.phone,
        name=row.name,
        region=row.region,
        restricted=bool(row.restricted),
        device_id=row.device_id,
        device_pk=row.device_pk,
        token_hash=token_hash,
    )
    if cache is not None:
        cache.put(token_hash, session, stamp)
    return session


async def revoke(tx: Tx, token_hash: str) -> None:
    rows = await tx.conn.execute(
        sa.delete(tokens).where(tokens.c.token_hash == token_hash).returning(tokens.c.user_id)
    )
    for (user_id,) in rows:
        changed(tx, user_id)


async def revoke_all(tx: Tx, user_id: int) -> int:
    result = await tx.conn.execute(sa.delete(tokens).where(tokens.c.user_id == user_id))
    if result.rowcount:
        changed(tx, user_id)
    return int(result.rowcount or 0)


async def list_devices(tx: ReadTx, user_id: int) -> list[dict[str, object]]:
    rows = await tx.conn.execute(
        sa.select(devices.c.device_id, devices.c.created_at, tokens.c.created_at.label("token_at"))
        .select_from(devices.outerjoin(tokens, tokens.c.device_pk == devices.c.id))
        .where(devices.c.user_id == user_id)
        .order_by(devices.c.id)
    )
    return [
        {"device_id": r.device_id, "created_at": r.created_at, "active": r.token_at is not None}
        for r in rows
    ]
