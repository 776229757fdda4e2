"""Wiring of real-time delivery into the app: which bus, the socket hub, the push worker.

`create_app` calls `make_bus` and `install`, and the lifespan calls `start`/`stop`; everything
else lives in `ws.py`, `bus/` and `services/push.py`.
"""

from __future__ import annotations

import secrets

from sqlalchemy.exc import IntegrityError

from contactsync.errors import StoreUnavailable
from contactsync.server.bus.base import Bus
from contactsync.server.bus.memory import MemoryBus
from contactsync.server.bus.redis import RedisBus
from contactsync.server.config import Settings
from contactsync.server.context import Context
from contactsync.server.services import app_settings
from contactsync.server.services.push import PushWorker
from contactsync.server.ws import Hub


def make_bus(settings: Settings) -> Bus:
    """Redis when a URL is configured (several processes), else the in-process bus."""
    return RedisBus(settings.redis_url) if settings.redis_url else MemoryBus()


def install(ctx: Context) -> None:
    hub = Hub(ctx)
    ctx.services.ws = hub
    ctx.bus.on_control(hub.on_control)
    worker = PushWorker(ctx)
    ctx.services.push = worker
    ctx.before_commit.append(worker.enqueue)


def _wired(ctx: Context) -> tuple[Hub, PushWorker]:
    assert ctx.services.ws is not None and ctx.services.push is not None, "install(ctx) first"
    return ctx.services.ws, ctx.services.push


async def instance_id(ctx: Context) -> str:
    """A random id stored in the database on first start: processes that share a database
    share it, so they share a Redis namespace, and other installations on the same Redis
    (tests, staging) never hear them."""
    for _ in range(3):
        try:
            async with ctx.tx() as tx:
                value = await app_settings.get_secret(tx, "instance_id")
                if value is None:
                    value = secrets.token_hex(8)
                    await app_settings.put_secret(tx, "instance_id", value)
            return str(value)
        except (IntegrityError, StoreUnavailable):
            continue  # another process created it at the same moment: read theirs
    raise RuntimeError("could not read or create the instance id")


async def start(ctx: Context) -> None:
    if isinstance(ctx.bus, RedisBus):
        ctx.bus.namespace = f"contactsync:{await instance_id(ctx)}"
    await ctx.bus.start()
    hub, worker = _wired(ctx)
    await hub.start()
    await worker.start()


async def stop(ctx: Context) -> None:
    hub, worker = _wired(ctx)
    await worker.stop()
    await ctx.bus.stop()
    # after the bus: closing the hub's watch marks presence, which a stopping bus must not
    # be woken for (its presence task may be cancelled at that very moment)
    await hub.stop()
