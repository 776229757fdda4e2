"""Tokens, keys and codes: how they are made, hashed and compared."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path

TOKEN_PREFIX = "cs_"
ADMIN_PREFIX = "csadmin_"


def new_token() -> str:
    """A bearer token with 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_admin_key() -> str:
    return ADMIN_PREFIX + secrets.token_urlsafe(32)


def new_pepper() -> str:
    """A key for keyed hashes (the OTP pepper): 256 random bits."""
    return secrets.token_urlsafe(32)


def private_value(path: Path, make: Callable[[], str]) -> str:
    """The value kept in the file `path` (mode 0600), made with `make()` on first use.

    Safe when several processes start at once: the file appears whole (written aside, then
    linked into place) and the first one to link it wins; the others read its value.
    """
    try:
        return _read_private(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(make() + "\n")
    try:
        os.link(aside, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(aside)
    return _read_private(path)


def _read_private(path: Path) -> str:
    value = path.read_text().strip()
    if not value:
        raise RuntimeError(f"{path} is empty; delete it to have a new one made")
    return value


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def keyed_hash(key: str, value: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def new_otp_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


def sign(secret: str, body: bytes) -> str:
    """The signature header value for a webhook body: `sha256=<hex HMAC>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
