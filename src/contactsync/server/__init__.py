"""The contactsync server: FastAPI app, services, storage and the event bus.

Needs the server extra: pip install "contactsync[server]"."""

from __future__ import annotations

import importlib.util

# The distribution installs the SDK alone unless asked for more; say which extra is missing
# instead of failing later on the first absent import.
_NEEDS = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "pydantic_settings", "redis")
_missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
if _missing:
    raise ModuleNotFoundError(
        f"contactsync.server needs the server extra ({', '.join(_missing)} not installed): "
        'pip install "contactsync[server]"',
        name=_missing[0],
    )
