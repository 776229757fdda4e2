"""The admin key: the credential of the app's own backend and of the console.

Given by CONTACTSYNC_ADMIN_KEY, or created on first start: then only its hash is stored in the
database and the key itself is written once to `<data_dir>/admin_key` (mode 0600).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from contactsync.server.context import Context
from contactsync.server.services import app_settings, secrets

log = logging.getLogger("contactsync.admin")


@dataclass(frozen=True)
class AdminKey:
    key_hash: str
    source: str  # "environment", "generated" or "stored"
    path: Path | None


async def ensure_admin_key(ctx: Context) -> AdminKey:
    settings = ctx.settings
    if settings.admin_key is not None:
        return AdminKey(secrets.sha256(settings.admin_key.get_secret_value()), "environment", None)
    path = settings.data_dir / "admin_key"
    async with ctx.tx() as tx:
        stored = await app_settings.get_secret(tx, "admin_key_hash")
        if stored is not None:
            return AdminKey(str(stored), "stored", path if path.exists() else None)
        key = secrets.new_admin_key()
        await app_settings.put_secret(tx, "admin_key_hash", secrets.sha256(key))
        _write_private(path, key)
    return AdminKey(secrets.sha256(key), "generated", path)


def _write_private(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content + "\n")


def is_admin(key_hash: str, presented: str) -> bool:
    return secrets.same(key_hash, secrets.sha256(presented))
