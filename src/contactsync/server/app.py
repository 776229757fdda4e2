"""Build the ASGI app: everything is wired here, nothing at import time."""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from contactsync import __version__
from contactsync.server import console, number_workers, realtime, ws
from contactsync.server import logging as server_logging
from contactsync.server import metrics as metrics_http
from contactsync.server.bus.base import Bus
from contactsync.server.bus.memory import MemoryBus
from contactsync.server.cache import Caches
from contactsync.server.clock import Clock, SystemClock
from contactsync.server.config import Settings
from contactsync.server.context import Context
from contactsync.server.edge import Edge, Limiter
from contactsync.server.http import (
    addressbook,
    admin_pairs,
    admin_users,
    auth,
    blocks,
    conversations,
    devices,
    discovery,
    docs,
    errors,
    events,
    health,
    me,
    openapi,
    preferences,
    profiles,
    relations,
    sync,
)
from contactsync.server.http import push as push_admin
from contactsync.server.http import settings as settings_api
from contactsync.server.metrics import Metrics
from contactsync.server.services import admin, private_discovery, retention
from contactsync.server.services.otp_senders import OtpSender, sender_from_settings
from contactsync.server.store import migrate
from contactsync.server.store.database import Database

log = logging.getLogger("contactsync.server")

ROUTERS = [
    health.router,
    admin_users.router,
    auth.router,
    me.router,
    events.router,
    addressbook.router,
    profiles.router,
    relations.router,
    blocks.router,
    admin_pairs.router,
    ws.router,
    settings_api.router,
    push_admin.router,
    conversations.router,
    sync.router,
    preferences.router,
    devices.router,
    discovery.router,
]


@functools.cache
def _routes() -> tuple[BaseRoute, ...]:
    """The API's routes, included once a process and shared by every app made in it.

    FastAPI builds an included router's handlers (dependants, validators) on the first request
    that reaches it, once per inclusion: about 20 ms of CPU. A process serving one app pays that
    once either way; tests make an app per test, and paid it in every one. The routes hold no
    state of an app's own (they reach it through `request.app`), so sharing them is safe.
    """
    api = APIRouter()
    for router in (*ROUTERS, metrics_http.router):
        api.include_router(router)
    return tuple(api.routes)


def workers_refused(settings: Settings, workers: int) -> str | None:
    """Why `workers` server processes cannot run with these settings, or None when they can."""
    if workers <= 1:
        return None
    if not settings.database_url or Database.is_sqlite_url(settings.resolved_database_url()):
        return (
            "several workers need PostgreSQL (--database-url postgresql://…): the embedded "
            "SQLite database takes one writer at a time and lives in one process's data folder"
        )
    if not settings.redis_url:
        return (
            "several workers need Redis (--redis-url redis://…): without it an event written "
            "through one worker would not reach the sockets held by the others, and a revoked "
            "token or a settings change would not reach their caches"
        )
    return None


async def prepare(settings: Settings) -> None:
    """What the parent of several workers does once before starting them: apply the
    migrations and make sure there is an admin key (each worker only reads it then)."""
    ctx = Context(
        settings=settings,
        db=Database.from_settings(settings),
        bus=MemoryBus(),
        clock=SystemClock(),
    )
    try:
        await migrate.upgrade(ctx.db)
        key = await admin.ensure_admin_key(ctx)
        if key.source == "generated":
            log.warning("created an admin key; it is in %s", key.path)
        await private_discovery.ensure_key(ctx)  # one key for all the workers
    finally:
        await ctx.db.dispose()


def worker_app() -> FastAPI:
    """The app of one of several `contactsync serve --workers N` processes (uvicorn's factory):
    settings from the CONTACTSYNC_* environment the parent set; the parent has migrated."""
    settings = Settings()
    server_logging.configure(settings.log_level, settings.log_format)
    return create_app(settings, migrate_on_start=False)


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    bus: Bus | None = None,
    clock: Clock | None = None,
    otp_sender: OtpSender | None = None,
    migrate_on_start: bool = True,
) -> FastAPI:
    database = db or Database.from_settings(settings)
    if database.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    the_bus = bus or realtime.make_bus(settings)
    caches = Caches(settings.cache_ttl_seconds, usable=lambda: the_bus.coherent)
    # Caches first: a socket re-checking its token after sessions.changed must not find it
    # in this process's cache.
    the_bus.on_control(caches.on_control)
    ctx = Context(
        settings=settings,
        db=database,
        bus=the_bus,
        clock=clock or SystemClock(),
        caches=caches,
    )
    ctx.services.otp_sender = otp_sender or sender_from_settings(settings)
    metrics = Metrics()
    ctx.services.metrics = metrics
    ctx.services.settings_changed.append(private_discovery.on_settings_changed)
    realtime.install(ctx)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if migrate_on_start:
            await migrate.upgrade(ctx.db)
        await ctx.db.start_checkpoints()
        key = await admin.ensure_admin_key(ctx)
        ctx.services.admin_key = key
        if key.source == "generated":
            log.warning("created an admin key; it is in %s", key.path)
        elif key.source == "stored":
            log.info("admin key: %s", key.path or "set CONTACTSYNC_ADMIN_KEY (created elsewhere)")
        await private_discovery.start(ctx)
        await realtime.start(ctx)
        trimmer = retention.Trimmer(ctx, settings.event_trim_interval_seconds)
        ctx.services.trimmer = trimmer
        await trimmer.start()
        pool_size = (
            number_workers.default_size()
            if settings.number_workers is None
            else settings.number_workers
        )
        if pool_size:
            ctx.services.number_workers = number_workers.NumberWorkers(pool_size)
            ctx.services.number_workers.start()
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's passes, which otherwise walk it on every full collection.
        gc.freeze()
        # A young-generation pass every 700 allocations walks what the requests in flight
        # hold alive (5% of an upload's CPU at 32 at once); nearly all of it is freed by
        # reference counting anyway, so pass far less often.
        gc.set_threshold(20_000, *gc.get_threshold()[1:])
        try:
            yield
        finally:
            if ctx.services.number_workers is not None:
                await ctx.services.number_workers.close()
                ctx.services.number_workers = None
            await trimmer.stop()
            await realtime.stop(ctx)
            await private_discovery.stop(ctx)
            await ctx.db.stop_checkpoints()
            if db is None:
                await ctx.db.dispose()

    app = FastAPI(
        title="contactsync",
        version=__version__,
        summary="Address-book sync, contact discovery and durable real-time events",
        lifespan=lifespan,
        docs_url=None,  # served from the installed package instead (http/docs.py)
        redoc_url=None,
    )
    app.state.ctx = ctx
    errors.install(app)
    app.router.routes.extend(_routes())
    console.install(app)
    docs.install(app)
    openapi.install(app)
    # One pure ASGI layer before routing: request id, access line, metrics, the concurrency
    # limit and the body gate (edge.py).
    limiter = Limiter(settings.max_concurrent_requests, settings.overload_wait_seconds)
    ctx.services.limiter = limiter
    app.add_middleware(
        Edge, metrics=metrics, max_body_bytes=settings.max_body_bytes, limiter=limiter
    )
    if settings.trusted_proxies:
        # Outermost: everything inside sees the client the trusted proxy names. uvicorn's own
        # header handling is off (`serve`), so nothing else believes the header.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    return app
