"""`contactsync serve | db upgrade`: run the server and migrate its database.

These need the server extra (`pip install "contactsync[server]"`); the server's modules are
imported inside the commands, so the rest of the command line works without it."""

from __future__ import annotations

import asyncio
import enum
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from contactsync.cli._extras import require_server

if TYPE_CHECKING:
    from contactsync.server.config import Settings

# click's plain help (rich_markup_mode=None): no `<bool>` after every flag, and paragraphs
# rewrapped whole instead of broken where the docstring's lines end
db_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Database schema (Alembic migrations)."
)


def _settings(**overrides: Any) -> Settings:
    require_server()
    from contactsync.server.config import Settings

    return Settings(**{key: value for key, value in overrides.items() if value is not None})


class DiscoveryMode(enum.StrEnum):
    stored = "stored"
    private = "private"


class LogFormat(enum.StrEnum):
    json = "json"
    text = "text"


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="postgresql://… or sqlite:///…; default: embedded SQLite "
        "in the data folder (env CONTACTSYNC_DATABASE_URL)",
    ),
]
DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Local data folder (env CONTACTSYNC_DATA_DIR)")
]


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on")] = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis-url", help="Redis for fan-out across processes")
    ] = None,
    default_region: Annotated[
        str | None, typer.Option("--default-region", help="Region for numbers without one")
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level")] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option("--log-format", help="json (default): one object a line; text: for people"),
    ] = None,
    discovery_mode: Annotated[
        DiscoveryMode | None,
        typer.Option(
            "--discovery-mode",
            help="stored (default): keep address books; private: keep none, discover "
            "through the OPRF filter (docs/privacy.md) (env CONTACTSYNC_DISCOVERY_MODE)",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Server processes on this port (more than 1 needs PostgreSQL and Redis)",
        ),
    ] = 1,
) -> None:
    """Run the server (embedded SQLite unless a database URL is given)."""
    import uvicorn

    from contactsync.server import app as server_app
    from contactsync.server import logging as server_logging

    options = {
        "host": host,
        "port": port,
        "database_url": database_url,
        "data_dir": data_dir,
        "redis_url": redis_url,
        "default_region": default_region,
        "log_level": log_level,
        "log_format": log_format.value if log_format else None,
        "discovery_mode": discovery_mode.value if discovery_mode else None,
    }
    settings = _settings(**options)
    server_logging.configure(settings.log_level, settings.log_format)
    taken = _cannot_listen(settings.host, settings.port)
    if taken:
        # said before anything starts, and no "contactsync on …" banner for a server that
        # will not be there
        typer.echo(
            f"contactsync: cannot listen on {settings.host}:{settings.port} ({taken}); is "
            "another server running there? Pick another --port.",
            err=True,
        )
        raise typer.Exit(1)
    refused = server_app.workers_refused(settings, workers)
    if refused:
        typer.echo(f"contactsync: --workers {workers} refused: {refused}", err=True)
        raise typer.Exit(2)
    application: Any
    if workers == 1:
        application = server_app.create_app(settings)
    else:
        # Each worker process builds its own app from the environment: pass the options on,
        # and migrate and make the admin key once here rather than racing in every worker.
        for name, value in options.items():
            if value is not None:
                os.environ[f"CONTACTSYNC_{name.upper()}"] = str(value)
        if settings.number_workers is None:
            # the cores are shared by the processes: each gets its part of the number workers
            from contactsync.server.number_workers import default_size

            os.environ["CONTACTSYNC_NUMBER_WORKERS"] = str(default_size(processes=workers))
        asyncio.run(server_app.prepare(settings))
        application = "contactsync.server.app:worker_app"
    typer.echo(
        f"contactsync on http://{settings.host}:{settings.port} "
        f"({'sqlite' if not settings.database_url else 'postgresql'}"
        f"{f', {workers} workers' if workers > 1 else ''}"
        f"{', private discovery' if settings.discovery_mode == 'private' else ''})"
    )
    uvicorn.run(
        application,
        factory=workers > 1,
        workers=workers,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Our formatter and request-id access line replace uvicorn's (its access line has the
        # raw path, which may hold a phone number).
        log_config=None,
        access_log=False,
        # X-Forwarded-For is believed only from CONTACTSYNC_TRUSTED_PROXIES, by the app itself;
        # uvicorn's default would believe it from any local peer.
        proxy_headers=False,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        # Client frames are tiny JSON (auth, ping); events are small. Per-message deflate
        # would cost tens of KB of zlib state per idle socket for little gain.
        ws_max_size=64 * 1024,
        ws_per_message_deflate=False,
    )


def _cannot_listen(host: str, port: int) -> str | None:
    """Why (host, port) cannot be listened on, or None when it can (checked by binding)."""
    try:
        with socket.create_server((host, port)):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Apply all migrations."""
    from contactsync.server.store import migrate
    from contactsync.server.store.database import Database

    settings = _settings(database_url=database_url, data_dir=data_dir)
    if not settings.database_url:
        settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run() -> set[str]:
        db = Database.from_settings(settings)
        try:
            await migrate.upgrade(db)
            return await migrate.current(db)
        finally:
            await db.dispose()

    typer.echo(f"database at revision {', '.join(sorted(asyncio.run(run())))}")


def register(app: typer.Typer) -> None:
    """Add the server's commands to the `contactsync` command."""
    app.command()(serve)
    app.add_typer(db_app, name="db")
