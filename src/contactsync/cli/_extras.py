"""What to say when a command needs an optional part of the distribution that is missing."""

from __future__ import annotations

import typer


def require_server() -> None:
    """Exit with the server package's own message (naming the extra) when it is missing."""
    try:
        import contactsync.server  # noqa: F401
    except ModuleNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
