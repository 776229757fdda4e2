"""The `contactsync` command: every subcommand, registered from the module that holds it.

- `sdk.py`     login, sync, events, conversations, logout (the SDK from the shell)
- `demo.py`    demo (an embedded server and simulated users)
- `server.py`  serve, db upgrade (need the server extra)
- `admin.py`   admin … (the admin API over HTTP, for scripts)

Needs the cli extra (`pip install "contactsync[cli]"`: typer, rich, vobject for vCard).
"""

from __future__ import annotations

import typer

from contactsync.cli import admin, sdk, server

app = typer.Typer(no_args_is_help=True, add_completion=False, help="contactsync server and tools")
server.register(app)
app.add_typer(admin.admin_app, name="admin")
sdk.register(app)


def main() -> None:
    app()


__all__ = ["app", "main"]
