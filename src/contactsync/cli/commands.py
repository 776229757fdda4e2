"""The `contactsync` Typer app: every subcommand, registered from the module that holds it."""

from __future__ import annotations

import typer

from contactsync.cli import admin, sdk, server

# click's plain help (rich_markup_mode=None): no `<bool>` after every flag, and paragraphs
# rewrapped whole instead of broken where the docstring's lines end
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help="contactsync server and tools",
)
server.register(app)
app.add_typer(admin.admin_app, name="admin")
sdk.register(app)
