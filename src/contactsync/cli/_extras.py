"""Which optional parts of the distribution are installed, and what to say when one is not."""

from __future__ import annotations

import importlib.util

import typer


def require_server() -> None:
    """Exit with a clear message when the server extra is not installed."""
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        typer.echo(
            'This command runs the server: install it with pip install "contactsync[server]".',
            err=True,
        )
        raise typer.Exit(2)
