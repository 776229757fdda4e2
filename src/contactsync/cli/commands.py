"""The `contactsync` Typer app: every subcommand, registered from the module that holds it."""

from __future__ import annotations

import typer

from contactsync.cli import admin, sdk, server

app = typer.Typer(no_args_is_help=True, add_completion=False, help="contactsync server and tools")
server.register(app)
app.add_typer(admin.admin_app, name="admin")
sdk.register(app)
