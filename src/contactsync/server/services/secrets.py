"""Tokens, keys and codes: how they are made, hashed and compared."""

from __future__ import annotations

import hashlib
import hmac
import secrets

TOKEN_PREFIX = "cs_"
ADMIN_PREFIX = "csadmin_"


def new_token() -> str:
    """A bearer token with 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_admin_key() -> str:
    return ADMIN_PREFIX + secrets.token_urlsafe(32)


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
