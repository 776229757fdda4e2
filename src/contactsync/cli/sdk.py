"""`contactsync login | sync | events | conversations | logout | demo`: the SDK from the
command line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from contactsync.client._auth import mint_token, request_otp, verify_otp
from contactsync.client._conversations import consent_states
from contactsync.client._errors import ClientError
from contactsync.client._http import RetryPolicy
from contactsync.client._manager import ContactsManager, default_state_dir
from contactsync.client._models import (
    ConversationView,
    Event,
    SyncMetrics,
    SyncProgress,
    SyncSummary,
)
from contactsync.client._sources import MemorySource, open_source

Server = Annotated[
    str, typer.Option("--server", envvar="CONTACTSYNC_SERVER", help="Server base URL")
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="CONTACTSYNC_TOKEN", help="Bearer token")
]
State = Annotated[
    Path | None,
    typer.Option("--state", help="Folder of the local store (default: the user's data folder)"),
]
DeviceId = Annotated[str | None, typer.Option("--device-id", help="This installation's id")]


def _token(token: str | None, state: Path | None, server: str) -> str:
    if token:
        return token
    saved = _credentials(state).get(server.rstrip("/"))
    if saved:
        return str(saved["token"])
    typer.echo(
        "No token: pass --token, set CONTACTSYNC_TOKEN or run `contactsync login`.", err=True
    )
    raise typer.Exit(2)


def _credentials(state: Path | None) -> dict[str, Any]:
    path = (state or default_state_dir()) / "credentials.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _save_credentials(state: Path | None, server: str, value: dict[str, Any]) -> Path:
    folder = state or default_state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "credentials.json"
    data = _credentials(state)
    data[server.rstrip("/")] = value
    path.write_text(json.dumps(data, indent=2))
    os.chmod(path, 0o600)  # a bearer token is a password
    return path


def login(
    server: Server,
    phone: Annotated[
        str | None, typer.Option("--phone", help="Log in by OTP to this number")
    ] = None,
    region: Annotated[str | None, typer.Option("--region")] = None,
    device_id: Annotated[str, typer.Option("--device-id")] = "cli",
    code: Annotated[str | None, typer.Option("--code", help="The OTP (else asked)")] = None,
    admin_key: Annotated[
        str | None, typer.Option("--admin-key", envvar="CONTACTSYNC_ADMIN_KEY")
    ] = None,
    user_id: Annotated[int | None, typer.Option("--user-id", help="With --admin-key")] = None,
    state: State = None,
    print_token: Annotated[bool, typer.Option("--print-token")] = False,
) -> None:
    """Get a token by OTP (--phone) or minted with the admin key (--admin-key --user-id)."""
    try:
        if admin_key and user_id is not None:
            token = asyncio.run(mint_token(server, admin_key, user_id, device_id))
            saved: dict[str, Any] = {"token": token, "user_id": user_id, "device_id": device_id}
        elif phone:
            asyncio.run(request_otp(server, phone, region=region))
            code = code or typer.prompt("Code")
            result = asyncio.run(verify_otp(server, phone, code, device_id, region=region))
            token = str(result["token"])
            saved = {"token": token, "user_id": result["user_id"], "device_id": device_id}
        else:
            typer.echo("Pass --phone, or --admin-key with --user-id.", err=True)
            raise typer.Exit(2)
    except ClientError as exc:
        typer.echo(f"login failed: {exc}", err=True)
        raise typer.Exit(1) from None
    path = _save_credentials(state, server, saved)
    typer.echo(token if print_token else f"logged in as user {saved['user_id']} ({path})")


def sync(
    path: Annotated[Path, typer.Argument(help="A .vcf or .csv file, or a folder of them")],
    server: Server,
    token: Token = None,
    region: Annotated[
        str | None, typer.Option("--region", help="Region for numbers without a country code")
    ] = None,
    device_id: DeviceId = None,
    state: State = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the server's book")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 5_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON")] = False,
    retry_window: Annotated[
        float,
        typer.Option(
            "--retry-window",
            help="Seconds to keep retrying a request the server does not answer (a restart)",
        ),
    ] = RetryPolicy.window,
) -> None:
    """Sync an address book file or folder to the server (only what changed)."""
    if not path.exists():
        typer.echo(f"{path}: no such file or folder", err=True)
        raise typer.Exit(2)
    bearer = _token(token, state, server)
    metrics = asyncio.run(
        _sync(
            path,
            server,
            bearer,
            region,
            device_id,
            state,
            force,
            batch_size,
            as_json,
            RetryPolicy(window=retry_window),
        )
    )
    if as_json:
        typer.echo(json.dumps(metrics.as_dict(), ensure_ascii=False))
    else:
        _table(metrics)
    if metrics.error or metrics.failed:
        raise typer.Exit(1)


async def _sync(
    path: Path,
    server: str,
    token: str,
    region: str | None,
    device_id: str | None,
    state: Path | None,
    force: bool,
    batch_size: int,
    quiet: bool,
    retry: RetryPolicy,
) -> SyncMetrics:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=quiet or not sys.stderr.isatty(),
        console=_console(stderr=True),
    )
    task = progress.add_task("uploading", total=None)

    def on_progress(p: SyncProgress) -> None:
        progress.update(task, completed=p.done, total=p.total)

    manager = ContactsManager(
        open_source(path),
        server=server,
        token=token,
        region=region,
        device_id=device_id,
        state_dir=state,
        batch_size=batch_size,
        on_progress=on_progress,
        events=False,
        retry=retry,
    )
    try:
        with progress:
            metrics = await (manager.force_sync() if force else manager.sync())
    except ClientError as exc:
        typer.echo(f"sync failed: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        await manager.close()
    if metrics.error:
        typer.echo(
            f"sync failed: {metrics.error}\nNothing is lost: run the same command again and "
            "it resumes where it stopped.",
            err=True,
        )
    return metrics


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


def _table(metrics: SyncMetrics) -> None:
    from rich.table import Table

    table = Table(title="sync" + (" (force)" if metrics.forced else ""))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("total", "uploaded", "unchanged", "created", "updated", "deleted"):
        table.add_row(key, str(getattr(metrics, key)))
    table.add_row("invalid", str(len(metrics.invalid)))
    table.add_row("failed", str(metrics.failed))
    table.add_row("batches", str(metrics.batches))
    table.add_row("bytes", f"{metrics.bytes:,}")
    table.add_row("duration", f"{metrics.duration:.3f} s")
    table.add_row("registered", str(len(metrics.registered)))
    console = _console()
    console.print(table)
    for entry in metrics.invalid[:20]:
        console.print(
            f"  invalid: {entry.where or entry.contact_id}: {entry.phone!r} ({entry.reason})"
        )
    if len(metrics.invalid) > 20:
        console.print(f"  … and {len(metrics.invalid) - 20} more (see --json)")
    if metrics.error:
        console.print(f"[red]error: {metrics.error}[/red]")


def _account_manager(
    server: str, bearer: str, device_id: str | None, state: Path | None, **options: Any
) -> ContactsManager:
    """A manager for account-level commands (events, logout): no contacts are read."""
    return ContactsManager(
        MemorySource(access=False),
        server=server,
        token=bearer,
        device_id=device_id,
        state_dir=state,
        watch_interval=None,
        **options,
    )


def events(
    server: Server,
    token: Token = None,
    device_id: DeviceId = None,
    state: State = None,
    follow: Annotated[bool, typer.Option("--follow/--once", help="Keep following")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the account's events from the stored cursor on, then follow them live."""
    bearer = _token(token, state, server)

    def show(event: Event) -> None:
        if as_json:
            typer.echo(
                json.dumps(
                    {"seq": event.seq, "type": event.type, "at": event.at, "data": event.data},
                    ensure_ascii=False,
                )
            )
        else:
            typer.echo(f"#{event.seq} {event.at} {event.type} {_describe(event)}")

    async def run() -> None:
        manager = _account_manager(server, bearer, device_id, state)
        manager.on_event(show)
        try:
            await manager.initialize()
            await manager.poll_events()
            if follow:
                await manager.start()
                await asyncio.Event().wait()
        finally:
            await manager.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except ClientError as exc:
        typer.echo(f"events failed: {exc}", err=True)
        raise typer.Exit(1) from None


def conversations(
    server: Server,
    token: Token = None,
    device_id: DeviceId = None,
    state: State = None,
    consent: Annotated[
        str, typer.Option("--consent", help="Consent states to sync, comma-separated")
    ] = "allowed",
    as_json: Annotated[bool, typer.Option("--json", help="The summary and list as JSON")] = False,
) -> None:
    """Sync the account's conversations and their new messages into the local store (one
    round trip per page), then list them with the summary."""
    bearer = _token(token, state, server)
    try:
        states = consent_states(c.strip() for c in consent.split(","))
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None

    async def run() -> tuple[SyncSummary, list[ConversationView], dict[int, int]]:
        manager = _account_manager(server, bearer, device_id, state, events=False)
        try:
            summary = await manager.conversations.sync_all(consent=states)
            views = await manager.conversations.list(consent=states)
            held = {v.id: len(await manager.conversation(v.id).messages()) for v in views}
            return summary, views, held
        finally:
            await manager.close()

    try:
        summary, views, held = asyncio.run(run())
    except ClientError as exc:
        typer.echo(f"conversations failed: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        rows = [{**asdict(v), "messages": held[v.id]} for v in views]
        typer.echo(json.dumps({"summary": summary.as_dict(), "conversations": rows}))
        return
    from rich.table import Table

    console = _console()
    console.print(
        f"{summary.synced} of {summary.eligible} conversations had news; "
        f"{summary.messages} new messages, {summary.sent} waiting messages sent"
    )
    table = Table("id", "kind", "name", "consent", "members", "messages")
    for v in views:
        table.add_row(
            str(v.id), v.kind, v.name or "", v.consent, str(v.member_count), str(held[v.id])
        )
    console.print(table)


def logout(
    server: Server,
    token: Token = None,
    device_id: DeviceId = None,
    state: State = None,
) -> None:
    """Revoke the token and delete this account's local store and saved credentials."""
    bearer = _token(token, state, server)

    async def run() -> None:
        manager = _account_manager(server, bearer, device_id, state, events=False)
        try:
            await manager.initialize()
            await manager.logout()
        finally:
            await manager.close()

    try:
        asyncio.run(run())
    except ClientError as exc:
        typer.echo(f"logout failed: {exc}", err=True)
        raise typer.Exit(1) from None
    saved = _credentials(state)
    if saved.pop(server.rstrip("/"), None) is not None:
        _save_all_credentials(state, saved)
    typer.echo("logged out; local sync state removed")


def _save_all_credentials(state: Path | None, data: dict[str, Any]) -> None:
    path = (state or default_state_dir()) / "credentials.json"
    path.write_text(json.dumps(data, indent=2))


def _describe(event: Event) -> str:
    data = event.data
    if event.type == "contact.joined":
        return f"{data.get('name') or 'someone'} joined ({data.get('user_id')})"
    if event.type == "contacts.registered":
        return f"{len(data.get('users', []))} of your contacts use the app"
    return json.dumps(data, ensure_ascii=False)[:200]


def demo(
    users: Annotated[int, typer.Option("--users", help="Simulated users")] = 4,
    delay: Annotated[float, typer.Option("--delay", help="Seconds between joins")] = 0.5,
) -> None:
    """Start an embedded server, give simulated users real address books, and show
    "X joined" arriving live as the others register."""
    from contactsync.cli.demo import run_demo

    asyncio.run(run_demo(users, delay, typer.echo))


def register(app: typer.Typer) -> None:
    """Add the SDK's commands to the `contactsync` command."""
    app.command()(login)
    app.command()(sync)
    app.command()(events)
    app.command()(conversations)
    app.command()(logout)
    app.command()(demo)
