"""`contactsync admin …`: the admin API from the shell, for scripts.

Talks to a running server over HTTP with the admin key, exactly as the app's own backend would:

    contactsync admin settings get [NAME ...]
    contactsync admin settings set notify_contact_joined=false discovery_quota=5000
    contactsync admin users create +14155550100 --name Ann
    contactsync admin users get 42 | set 42 --restricted | devices 42 | token 42 DEVICE
    contactsync admin users revoke 42 | delete 42 --yes
    contactsync admin pairs add 42 43 | remove 42 43 | list 42

The server is `--server` (env CONTACTSYNC_SERVER, as for every other command; default: the
server `contactsync login` saved, else http://127.0.0.1:8080; the older `--url` and
CONTACTSYNC_URL still work). The key is
`--admin-key` (env CONTACTSYNC_ADMIN_KEY), else read from `--admin-key-file` (default
`<CONTACTSYNC_DATA_DIR or ./data>/admin_key`, where the server writes a key it generated).
Output is JSON on stdout; a refused call prints `error: <code>: <message>` on stderr and exits
with status 1 (2 when the server cannot be reached or no key is found).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from contactsync.cli.sdk import DEFAULT_SERVER as DEFAULT_URL
from contactsync.cli.sdk import saved_server

# click's plain help: no `<bool>` after flags, paragraphs wrapped whole
admin_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Admin calls against a running server (JSON out, for scripts).",
)
settings_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Run-time settings (GET/PUT /v1/admin/settings).",
)
users_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Users, their devices and tokens."
)
pairs_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Pairs: who a restricted user may talk to (/v1/admin/pairs).",
)
admin_app.add_typer(settings_app, name="settings")
admin_app.add_typer(users_app, name="users")
admin_app.add_typer(pairs_app, name="pairs")


@dataclass
class Target:
    url: str
    key: str | None
    key_file: Path | None

    def resolved_key(self) -> str:
        if self.key:
            return self.key
        path = self.key_file or _default_key_file()
        try:
            key = path.read_text().strip()
        except OSError:
            key = ""
        if not key:
            typer.echo(
                "error: no admin key: pass --admin-key, set CONTACTSYNC_ADMIN_KEY, "
                f"or point --admin-key-file at a file holding it (tried {path})",
                err=True,
            )
            raise typer.Exit(2)
        return key

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.resolved_key()}"}
        try:
            with httpx.Client(base_url=self.url, timeout=30.0) as client:
                response = client.request(method, path, headers=headers, json=body)
        except httpx.HTTPError as exc:
            typer.echo(f"error: cannot reach {self.url} ({type(exc).__name__})", err=True)
            raise typer.Exit(2) from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = error["code"], error["message"]
                details = error.get("details")
            except (ValueError, KeyError, TypeError):
                code, message, details = "http_error", f"HTTP {response.status_code}", None
            typer.echo(f"error: {code}: {message}", err=True)
            if details:
                typer.echo(json.dumps(details, indent=2), err=True)
            raise typer.Exit(1)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


def _default_key_file() -> Path:
    return Path(os.environ.get("CONTACTSYNC_DATA_DIR", "data")) / "admin_key"


@admin_app.callback()
def target(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="CONTACTSYNC_SERVER",
            help="Server base URL (default: the one `contactsync login` saved, "
            f"else {DEFAULT_URL})",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str | None, typer.Option("--url", envvar="CONTACTSYNC_URL", hidden=True)
    ] = None,  # the old name, kept working
    admin_key: Annotated[
        str | None,
        typer.Option(
            "--admin-key", envvar="CONTACTSYNC_ADMIN_KEY", help="The admin key", show_default=False
        ),
    ] = None,
    admin_key_file: Annotated[
        Path | None,
        typer.Option(
            "--admin-key-file", help="File holding the admin key [default: data/admin_key]"
        ),
    ] = None,
) -> None:
    """Where the server is and how to prove we are its admin (the key is read when needed)."""
    chosen = server or url or saved_server() or DEFAULT_URL
    ctx.obj = Target(chosen.rstrip("/"), admin_key, admin_key_file)


def _target(ctx: typer.Context) -> Target:
    found = ctx.find_object(Target)
    assert found is not None
    return found


def _print(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def parse_assignment(text: str) -> tuple[str, Any]:
    """`NAME=VALUE`, VALUE read as JSON when it is JSON (true, 5000, null, [..]) else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.strip():
        raise typer.BadParameter(f"expected NAME=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name.strip(), value


# ----------------------------------------------------------------------------- settings


@settings_app.command("get")
def settings_get(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Only these settings")] = None,
) -> None:
    """Print the settings (all, or the named ones; one name prints just its value)."""
    current = _target(ctx).call("GET", "/v1/admin/settings")
    if not names:
        _print(current)
        return
    unknown = [n for n in names if n not in current]
    if unknown:
        typer.echo(f"error: unknown settings: {', '.join(unknown)}", err=True)
        raise typer.Exit(1)
    _print(current[names[0]] if len(names) == 1 else {n: current[n] for n in names})


@settings_app.command("set")
def settings_set(
    ctx: typer.Context,
    assignments: Annotated[
        list[str], typer.Argument(help="NAME=VALUE ... (JSON values: true, 5000, null, [...])")
    ],
) -> None:
    """Change settings in one call: all of them are applied, or none (the server validates)."""
    changes = dict(parse_assignment(item) for item in assignments)
    _print(_target(ctx).call("PUT", "/v1/admin/settings", changes))


# ----------------------------------------------------------------------------- users


@users_app.command("create")
def users_create(
    ctx: typer.Context,
    phone: Annotated[str, typer.Argument(help="Phone number, any common written form")],
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
    region: Annotated[str | None, typer.Option(help="Region for a number without +country")] = None,
) -> None:
    """Register a user (returns the existing one for a known number)."""
    body: dict[str, Any] = {"phone": phone}
    if name is not None:
        body["name"] = name
    if region is not None:
        body["region"] = region
    _print(_target(ctx).call("POST", "/v1/admin/users", body))


@users_app.command("get")
def users_get(ctx: typer.Context, user_id: int) -> None:
    """Print one user."""
    _print(_target(ctx).call("GET", f"/v1/admin/users/{user_id}"))


@users_app.command("set")
def users_set(
    ctx: typer.Context,
    user_id: int,
    restricted: Annotated[
        bool | None, typer.Option("--restricted/--unrestricted", help="Restrict to paired users")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
) -> None:
    """Change a user's restriction or name."""
    body: dict[str, Any] = {}
    if restricted is not None:
        body["restricted"] = restricted
    if name is not None:
        body["name"] = name
    if not body:
        raise typer.BadParameter("nothing to change: give --restricted/--unrestricted or --name")
    _print(_target(ctx).call("PATCH", f"/v1/admin/users/{user_id}", body))


@users_app.command("devices")
def users_devices(ctx: typer.Context, user_id: int) -> None:
    """List a user's devices and whether each is signed in."""
    _print(_target(ctx).call("GET", f"/v1/admin/users/{user_id}/devices"))


@users_app.command("token")
def users_token(ctx: typer.Context, user_id: int, device_id: str) -> None:
    """Mint a token for one device of a user (the device's earlier token stops working)."""
    _print(_target(ctx).call("POST", f"/v1/admin/users/{user_id}/tokens", {"device_id": device_id}))


@users_app.command("revoke")
def users_revoke(ctx: typer.Context, user_id: int) -> None:
    """Revoke every token of a user: all their devices are signed out."""
    _print(_target(ctx).call("DELETE", f"/v1/admin/users/{user_id}/tokens"))


@users_app.command("delete")
def users_delete(
    ctx: typer.Context,
    user_id: int,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
) -> None:
    """Delete a user and everything that belongs to them."""
    if not yes and not typer.confirm(f"Delete user {user_id} and all their data?"):
        raise typer.Exit(1)
    _target(ctx).call("DELETE", f"/v1/admin/users/{user_id}")
    _print({"deleted": user_id})


# ----------------------------------------------------------------------------- pairs


@pairs_app.command("add")
def pairs_add(ctx: typer.Context, a: int, b: int) -> None:
    """Pair two users (idempotent)."""
    _print(_target(ctx).call("PUT", "/v1/admin/pairs", {"a": a, "b": b}))


@pairs_app.command("remove")
def pairs_remove(ctx: typer.Context, a: int, b: int) -> None:
    """Unpair two users (idempotent)."""
    _print(_target(ctx).call("DELETE", "/v1/admin/pairs", {"a": a, "b": b}))


@pairs_app.command("list")
def pairs_list(ctx: typer.Context, user_id: int) -> None:
    """Everyone paired with a user."""
    _print(_target(ctx).call("GET", f"/v1/admin/pairs/{user_id}"))
