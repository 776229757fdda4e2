"""The `contactsync` command. Each subcommand lives in the module named for it:

- `sdk.py`     login, sync, events, conversations, logout (the SDK from the shell)
- `demo.py`    demo (an embedded server and simulated users)
- `server.py`  serve, db upgrade (these need the server extra)
- `admin.py`   admin … (the admin API over HTTP, for scripts)

`commands.py` puts them together. The command needs the cli extra (pip install
"contactsync[cli]"); without it `contactsync` says so instead of failing on an import.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

__all__ = ["app", "main"]


def main() -> None:
    if importlib.util.find_spec("typer") is None:
        print(
            'error: the contactsync command needs the cli extra: pip install "contactsync[cli]"',
            file=sys.stderr,
        )
        raise SystemExit(2)
    from contactsync.cli.commands import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":  # imported on first use, so `main` can check for typer first
        from contactsync.cli.commands import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
