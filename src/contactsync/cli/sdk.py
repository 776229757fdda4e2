"""`contactsync login | sync | events | conversations | logout | demo`: the SDK from the
command line."""

from __future__ import annotations

import asyncio
import enum
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from contactsync.client._auth import mint_token, request_otp, verify_otp
from contactsync.client._conversations import consent_states
from contactsync.client._errors import ClientError, RateLimited
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

DEFAULT_SERVER = "http://127.0.0.1:8080"
Server = Annotated[
    str | None,
    typer.Option(
        "--server",
        envvar="CONTACTSYNC_SERVER",
        help=f"Server base URL (default: the one `contactsync login` saved, else {DEFAULT_SERVER})",
        show_default=False,
    ),
]
Token = Annotated[
    str | None, typer.Option("--token", envvar="CONTACTSYNC_TOKEN", help="Bearer token")
]
State = Annotated[
    Path | None,
    typer.Option("--state", help="Folder of the local store (default: the user's data folder)"),
]
DeviceId = Annotated[str | None, typer.Option("--device-id", help="This installation's id")]


def saved_server(state: Path | None = None) -> str | None:
    """The server of the last `contactsync login` (None before any)."""
    current = _credentials(state).get(CURRENT)
    return str(current) if current else None


def _server(server: str | None, state: Path | None) -> str:
    """--server / CONTACTSYNC_SERVER, else the server `login` saved, else the local default."""
    return (server or saved_server(state) or DEFAULT_SERVER).rstrip("/")


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


# credentials.json: {server URL: {token, user_id, device_id}, "current": URL, "sources":
# {"URL#device": the file last synced}}
CURRENT = "current"
SOURCES = "sources"


def _credentials(state: Path | None) -> dict[str, Any]:
    path = (state or default_state_dir()) / "credentials.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _save_credentials(state: Path | None, server: str, value: dict[str, Any]) -> Path:
    folder = state or default_state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "credentials.json"
    data = _credentials(state)
    data[server.rstrip("/")] = value
    data[CURRENT] = server.rstrip("/")  # later commands talk to this server by default
    path.write_text(json.dumps(data, indent=2))
    os.chmod(path, 0o600)  # a bearer token is a password
    return path


def login(
    server: Server = None,
    phone: Annotated[
        str | None,
        typer.Option("--phone", help="Log in by OTP to this number (asked when not given)"),
    ] = None,
    region: Annotated[
        str | None, typer.Option("--region", help="Region for a number without +country")
    ] = None,
    device_id: Annotated[str, typer.Option("--device-id", help="This installation's id")] = "cli",
    code: Annotated[
        str | None,
        typer.Option(
            "--code",
            help="A code already received: verified without asking for a new one "
            "(else one is requested and asked for)",
        ),
    ] = None,
    admin_key: Annotated[
        str | None,
        typer.Option(
            "--admin-key",
            envvar="CONTACTSYNC_ADMIN_KEY",
            help="Mint a token with the admin key instead (with --user-id)",
            show_default=False,
        ),
    ] = None,
    user_id: Annotated[int | None, typer.Option("--user-id", help="With --admin-key")] = None,
    state: State = None,
    print_token: Annotated[
        bool, typer.Option("--print-token", help="Print the token instead of a greeting")
    ] = False,
) -> None:
    """Log in by one-time code (asks for the phone number and the code), or mint a token with
    the admin key (--admin-key, --user-id). The server and the token are saved: later commands
    use them without --server or --token."""
    target = _server(server, state)
    if user_id is not None and not admin_key:
        typer.echo("--user-id needs --admin-key (or CONTACTSYNC_ADMIN_KEY).", err=True)
        raise typer.Exit(2)
    try:
        if admin_key and user_id is not None:
            token = asyncio.run(mint_token(target, admin_key, user_id, device_id))
            saved: dict[str, Any] = {"token": token, "user_id": user_id, "device_id": device_id}
        else:
            phone = phone or typer.prompt("Phone number (for example +1 415 555 0100)")
            if code is None:
                sent = asyncio.run(request_otp(target, phone, region=region))
                code = typer.prompt(code_prompt(phone, sent))
            result = asyncio.run(verify_otp(target, phone, code, device_id, region=region))
            token = str(result["token"])
            saved = {"token": token, "user_id": result["user_id"], "device_id": device_id}
    except RateLimited as exc:
        typer.echo(f"login failed: {exc.message} {retry_in(exc)}", err=True)
        raise typer.Exit(1) from None
    except ClientError as exc:
        typer.echo(f"login failed: {exc}", err=True)
        raise typer.Exit(1) from None
    path = _save_credentials(state, target, saved)
    if print_token:
        typer.echo(token)
    else:
        typer.echo(f"logged in to {target} as user {saved['user_id']} (saved in {path})")


def code_prompt(phone: str, sent: dict[str, Any]) -> str:
    """Where the code went, so the user knows where to look."""
    minutes = max(1, int(sent.get("expires_in") or 300) // 60)
    via = sent.get("sent_via")
    if via == "console":
        where = (
            "the server's console sender wrote it to the server log (a WARNING line "
            "'OTP for …'; a webhook sends it by SMS in production)"
        )
    elif via == "webhook":
        where = "sent to the phone by the app's SMS webhook"
    else:
        where = "sent to the phone"
    return f"Code for {phone} ({where}; valid {minutes} min)"


def retry_in(exc: RateLimited) -> str:
    """ "Try again in 12 min (at 14:05)." from a 429's Retry-After."""
    details = exc.details if isinstance(exc.details, dict) else {}
    seconds = float(details.get("retry_after") or exc.retry_after or 0)
    if seconds <= 0:
        return "Try again later."
    at = time.strftime("%H:%M", time.localtime(time.time() + seconds))
    return f"Try again in {duration(seconds)} (at {at})."


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def sync(
    path: Annotated[Path, typer.Argument(help="A .vcf or .csv file, or a folder of them")],
    server: Server = None,
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
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Sync a different file than last time without asking: its contacts replace "
            "the previous file's on the server",
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 1 when contacts wait for the discovery quota (default: exit 0 and say "
            "when they go)",
        ),
    ] = False,
) -> None:
    """Sync an address book file or folder to the server (only what changed)."""
    if not path.exists():
        typer.echo(f"{path}: no such file or folder", err=True)
        raise typer.Exit(2)
    server = _server(server, state)
    bearer = _token(token, state, server)
    _check_same_source(path, server, state, device_id, replace)
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
    _remember_source(path, server, state, device_id)
    if as_json:
        typer.echo(json.dumps(metrics.as_dict(), ensure_ascii=False))
    else:
        _table(metrics)
        if metrics.waiting:
            _console().print(quota_status(metrics))
    if metrics.error or metrics.failed or (strict and metrics.waiting):
        raise typer.Exit(1)


def _source_key(server: str, device_id: str | None) -> str:
    return f"{server.rstrip('/')}#{device_id or ''}"


def _check_same_source(
    path: Path, server: str, state: Path | None, device_id: str | None, replace: bool
) -> None:
    """The server's copy of the book mirrors one source: syncing another file removes the
    previous file's contacts that it lacks. Say so first, and go on only when told to."""
    sources = _credentials(state).get(SOURCES) or {}
    before = sources.get(_source_key(server, device_id))
    now = str(path.resolve())
    if not before or before == now or replace:
        return
    warning = (
        f"Last time this device synced {before}; syncing {now} instead makes the server's "
        "copy of your book match it: contacts of the previous file that this one lacks are "
        "removed from the server."
    )
    if sys.stdin.isatty():
        if typer.confirm(warning + " Continue?", default=False, err=True):
            return
        raise typer.Exit(1)
    typer.echo(warning + " Pass --replace to do so.", err=True)
    raise typer.Exit(2)


def _remember_source(path: Path, server: str, state: Path | None, device_id: str | None) -> None:
    data = _credentials(state)
    data.setdefault(SOURCES, {})[_source_key(server, device_id)] = str(path.resolve())
    _save_all_credentials(state, data)


def quota_status(metrics: SyncMetrics) -> str:
    """How many were synced, how many wait for the discovery quota, and when they go."""
    quota = metrics.quota or {}
    setting = ""
    if quota.get("limit") is not None:
        setting = (
            f" (setting {quota.get('setting', 'discovery_quota')} = {int(quota['limit']):,}, "
            f"refilling {int(quota.get('refill_per_day') or 0):,} a day)"
        )
    synced = max(0, metrics.total - metrics.waiting - metrics.failed)
    seconds = metrics.retry_after or 0
    at = time.strftime("%H:%M", time.localtime(metrics.resume_at or time.time()))
    return (
        f"{synced:,} contacts synced; {metrics.waiting:,} wait for the discovery quota"
        f"{setting}. They go on the next `contactsync sync` after {at} "
        f"(in {duration(seconds)}); nothing is lost meanwhile."
    )


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
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    source = open_source(path)
    # the total is counted before anything is sent (a scan reads and hashes the file, a few
    # ms per thousand cards), so the bar does not grow batch by batch nor sit at 0/?
    records = sum(1 for _ in source.scan())
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        "{task.fields[rate]}",
        "eta",
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        disable=quiet or not sys.stderr.isatty(),
        console=_console(stderr=True),
    )
    task = progress.add_task(f"{records:,} contacts: uploading", total=records, rate="")
    started = time.monotonic()

    def on_progress(p: SyncProgress) -> None:
        elapsed = max(1e-6, time.monotonic() - started)
        progress.update(
            task,
            completed=p.done,
            # what the sync planned to send, known before its first batch (numbers, not
            # contacts: a contact may have several, an unchanged one none)
            total=p.total,
            rate=f"{p.done / elapsed:,.0f}/s",
        )

    manager = ContactsManager(
        source,
        server=server,
        token=token,
        region=region,
        device_id=device_id,
        state_dir=state,
        batch_size=batch_size,
        # a bar needs its total first, so its sync plans the whole file before sending; with
        # no bar a first sync sends while it reads (SyncProgress)
        on_progress=None if progress.disable else on_progress,
        events=False,
        retry=retry,
    )
    try:
        with progress:
            metrics = await (manager.force_sync() if force else manager.sync())
            if not metrics.error and not metrics.waiting:
                # a resync sends only what changed: the bar ends full, at what was sent
                done = progress.tasks[0].completed
                if done:
                    progress.update(task, total=done, completed=done)
                else:
                    progress.update(
                        task,
                        description=f"{records:,} contacts: nothing to send",
                        total=1,
                        completed=1,
                    )
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
    table.add_column("meaning")
    rows = [
        ("total", metrics.total, "contacts in the file(s)"),
        ("unchanged", metrics.unchanged, "contacts already synced by an earlier run, not sent"),
        ("uploaded", metrics.uploaded, "numbers sent (additions, renames, removals)"),
        ("created", metrics.created, "numbers new to your book on the server"),
        ("updated", metrics.updated, "numbers whose name changed"),
        ("deleted", metrics.deleted, "numbers no longer in the file, removed from the server"),
        ("invalid", len(metrics.invalid), "numbers or cards that could not be read (below)"),
        ("failed", metrics.failed, "not synced: unreadable cards, or refused by the server"),
        ("registered", len(metrics.registered), "of your contacts use the app"),
    ]
    if metrics.evaluated:
        # private discovery: nothing is uploaded; numbers go through the OPRF instead
        rows.append(("evaluated", metrics.evaluated, "numbers matched privately (never sent)"))
    for key, value, meaning in rows:
        table.add_row(key, f"{value:,}", meaning)
    table.add_row("batches", f"{metrics.batches:,}", "")
    table.add_row("bytes", f"{metrics.bytes:,}", "")
    table.add_row("duration", f"{metrics.duration:.3f} s", "")
    console = _console()
    console.print(table)
    friends = [str(u.get("name") or "") for u in metrics.registered if u.get("name")]
    if metrics.registered:
        shown = ", ".join(friends[:5]) or f"{len(metrics.registered)} people"
        more = len(metrics.registered) - min(5, len(friends)) if friends else 0
        console.print(
            f"Friends found: {shown}" + (f" and {more:,} more" if more else ""), markup=False
        )
    for entry in metrics.invalid[:20]:
        who = entry.name or (entry.contact_id if entry.contact_id != entry.where else None)
        if who and not entry.name and "#" in who:
            who = None  # a made-up id (file#hash) tells the user nothing
        where = entry.where if entry.where and entry.where != "server" else None
        label = ", ".join(p for p in (f'"{who}"' if who else None, where) if p) or "a contact"
        what = repr(entry.phone) if entry.phone else "the card"
        console.print(f"  invalid: {label}: {what} ({entry.reason})", markup=False)
    if len(metrics.invalid) > 20:
        console.print(f"  … and {len(metrics.invalid) - 20:,} more (see --json)")
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
    server: Server = None,
    token: Token = None,
    device_id: DeviceId = None,
    state: State = None,
    follow: Annotated[bool, typer.Option("--follow/--once", help="Keep following")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Print the account's events from the stored cursor on, then follow them live."""
    server = _server(server, state)
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
            typer.echo(f"#{event.seq} {_when(event.at)} {describe(event, names)}")

    names: dict[int, str] = {}

    async def run() -> None:
        manager = _account_manager(server, bearer, device_id, state)
        manager.on_event(show)
        try:
            await manager.initialize()
            names.update(await known_names(manager))
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
    server: Server = None,
    token: Token = None,
    device_id: DeviceId = None,
    state: State = None,
    consent: Annotated[
        str, typer.Option("--consent", help="Consent states to sync, comma-separated")
    ] = "allowed",
    as_json: Annotated[bool, typer.Option("--json", help="The summary and list as JSON")] = False,
    show_messages: Annotated[
        int,
        typer.Option("--messages", help="Also print the last N messages of each conversation"),
    ] = 0,
) -> None:
    """Sync the account's conversations and their new messages into the local store (one
    round trip per page), then list them (a DM by the other person's name) with the
    summary."""
    server = _server(server, state)
    bearer = _token(token, state, server)
    try:
        states = consent_states(c.strip() for c in consent.split(","))
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None

    names: dict[int, str] = {}
    latest: dict[int, list[Any]] = {}
    me: list[int] = []

    async def run() -> tuple[SyncSummary, list[ConversationView], dict[int, int]]:
        manager = _account_manager(server, bearer, device_id, state, events=False)
        try:
            summary = await manager.conversations.sync_all(consent=states)
            views = await manager.conversations.list(consent=states)
            held = {}
            for v in views:
                stored = await manager.conversation(v.id).messages()
                held[v.id] = len(stored)
                latest[v.id] = stored[-show_messages:] if show_messages > 0 else []
            names.update(await known_names(manager))
            if manager.user:
                me.append(int(manager.user["user_id"]))
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
    table = Table("id", "kind", "with / name", "consent", "members", "messages")
    for v in views:
        title = v.name or ""
        if v.kind == "dm":
            others = [m for m in v.member_ids if m not in me]
            title = ", ".join(_who(m, names) for m in others) or title
        table.add_row(str(v.id), v.kind, title, v.consent, str(v.member_count), f"{held[v.id]:,}")
    console.print(table)
    for v in views:
        if latest.get(v.id):
            console.print(f"conversation {v.id}:")
            for m in latest[v.id]:
                who = "you" if m.sender_id in me else _who(m.sender_id, names)
                text = m.body if m.kind != "system" else f"({(m.data or {}).get('change')})"
                console.print(f"  {_when(m.sent_at)} {who}: {text}", markup=False)


def logout(
    server: Server = None,
    token: Token = None,
    device_id: DeviceId = None,
    state: State = None,
) -> None:
    """Revoke the token and delete this account's local store and saved credentials."""
    server = _server(server, state)
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
        if saved.get(CURRENT) == server.rstrip("/"):
            saved.pop(CURRENT)
        _save_all_credentials(state, saved)
    typer.echo("logged out; local sync state removed")


class Audience(enum.StrEnum):
    everybody = "everybody"
    contacts = "contacts"
    nobody = "nobody"


def privacy(
    discoverable_by: Annotated[
        Audience | None,
        typer.Option(
            "--discoverable-by",
            help="Who may learn that you use the app: everybody, contacts (people whose "
            "number is in your book), nobody",
        ),
    ] = None,
    announce_join_to: Annotated[
        Audience | None,
        typer.Option(
            "--announce-join-to",
            help='Who hears "X joined": everybody whose book holds you, contacts (mutual), nobody',
        ),
    ] = None,
    server: Server = None,
    token: Token = None,
    device_id: DeviceId = None,
    state: State = None,
) -> None:
    """Show who can find you and who hears that you joined, and the server's discovery mode;
    change them with the options."""
    server = _server(server, state)
    bearer = _token(token, state, server)
    changes = {
        key: value.value
        for key, value in (
            ("discoverable_by", discoverable_by),
            ("announce_join_to", announce_join_to),
        )
        if value is not None
    }

    async def run() -> tuple[dict[str, Any], str]:
        manager = _account_manager(server, bearer, device_id, state, events=False)
        try:
            await manager.initialize()
            prefs = await (
                manager.preferences.update(**changes) if changes else manager.preferences.sync()
            )
            return prefs, str(manager.discovery)
        finally:
            await manager.close()

    try:
        prefs, mode = asyncio.run(run())
    except ClientError as exc:
        typer.echo(f"privacy: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"discoverable by: {prefs.get('discoverable_by') or 'the app default'}")
    typer.echo(f"announce joining to: {prefs.get('announce_join_to') or 'everybody'}")
    typer.echo(
        f"discovery: {mode}"
        + (" (your contacts' numbers never leave this device)" if mode == "private" else "")
    )


def _save_all_credentials(state: Path | None, data: dict[str, Any]) -> None:
    folder = state or default_state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "credentials.json"
    path.write_text(json.dumps(data, indent=2))
    os.chmod(path, 0o600)


async def known_names(manager: ContactsManager) -> dict[int, str]:
    """user id -> the name the caller's own book gives them (what the user knows them by)."""
    try:
        found = await manager.api.request("GET", "/v1/addressbook/registered")
    except ClientError:
        return {}
    return {int(u["user_id"]): str(u["name"]) for u in found.get("users", []) if u.get("name")}


def _when(ms: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(int(ms) / 1000))
    except (TypeError, ValueError):
        return str(ms)


def _who(user_id: Any, names: dict[int, str], fallback: str | None = None) -> str:
    try:
        return names.get(int(user_id)) or fallback or f"user {int(user_id)}"
    except (TypeError, ValueError):
        return fallback or "someone"


def describe(event: Event, names: dict[int, str] | None = None) -> str:
    """One sentence for an event (JSON only for types this CLI does not know)."""
    names = names or {}
    data = event.data
    if event.type == "contact.joined":
        return f"{_who(data.get('user_id'), names, data.get('name'))} joined"
    if event.type == "contacts.registered":
        users = data.get("users", [])
        who = ", ".join(_who(u.get("user_id"), names, u.get("name")) for u in users[:3])
        more = f" and {len(users) - 3} more" if len(users) > 3 else ""
        return f"{len(users)} of your contacts use the app: {who}{more}"
    if event.type == "message.created":
        message = data.get("message", data)
        body = str(message.get("body") or "")
        body = body if len(body) <= 120 else body[:119] + "…"
        sender = _who(message.get("sender_id"), names)
        return f"{sender} wrote in conversation {message.get('conversation_id')}: {body}"
    if event.type == "conversation.created":
        conversation = data.get("conversation", data)
        kind = "a group" if conversation.get("kind") == "group" else "a direct conversation"
        title = f" “{conversation['name']}”" if conversation.get("name") else ""
        by = _who(conversation.get("created_by"), names)
        return f"{by} started {kind}{title} with you (conversation {conversation.get('id')})"
    if event.type == "conversation.updated":
        change = str(data.get("change") or "changed").replace("_", " ")
        by = _who(data.get("by"), names)
        return f"conversation {data.get('conversation_id')}: {change} by {by}"
    if event.type == "profile.updated":
        fields = ", ".join(sorted(data.get("fields") or {})) or "their profile"
        return f"{_who(data.get('user_id'), names)} updated {fields}"
    if event.type == "sync.requested":
        return "another of your devices asked this one to sync"
    return f"{event.type} {json.dumps(data, ensure_ascii=False)[:200]}"


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
    app.command()(privacy)
    app.command()(demo)
