"""Console sign-in: sessions, their cookie, and the CSRF rules for forms.

- Signing in checks the admin key (constant-time, against its stored hash) and creates a row in
  `console_sessions` holding the hash of a random session token and a random CSRF token. The
  cookie carries only the session token: HttpOnly (no script reads it), SameSite=Strict (no
  other site's page makes the browser send it), `Secure` when served over HTTPS, path /console.
- A session ends at its expiry, on sign-out, or when the admin key changes (each row keeps the
  key hash it was opened with).
- Every state-changing form posts the session's CSRF token in a hidden field; the sign-in form,
  which has no session yet, uses a double-submit token (a short-lived cookie and the same value
  in the form). A request whose Origin header names another site is refused as well.
"""

from __future__ import annotations

import secrets as pysecrets
from dataclasses import dataclass

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response

from contactsync.server.context import Context
from contactsync.server.services import admin, secrets
from contactsync.server.store.tables import console_sessions

COOKIE = "cs_console"
LOGIN_COOKIE = "cs_console_login"
COOKIE_PATH = "/console"
SESSION_TTL_MS = 12 * 3600 * 1000
LOGIN_TOKEN_TTL_S = 3600
LOGIN_ATTEMPTS = 10  # per client address ...
LOGIN_WINDOW_S = 300  # ... in this many seconds


@dataclass(frozen=True)
class ConsoleSession:
    token_hash: str
    csrf: str
    expires_at: int


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def key_matches(ctx: Context, presented: str) -> bool:
    key = ctx.services.admin_key
    return key is not None and bool(presented) and admin.is_admin(key.key_hash, presented)


async def open_session(ctx: Context, response: Response, request: Request) -> ConsoleSession:
    """Create a session for a caller who gave the right key and set its cookie."""
    admin_key = ctx.services.admin_key
    assert admin_key is not None, "the app reads the admin key on start"
    token = pysecrets.token_urlsafe(32)
    csrf = pysecrets.token_urlsafe(32)
    async with ctx.tx() as tx:
        # Sign-in is rare: a good moment to forget sessions that have run out.
        await tx.conn.execute(
            sa.delete(console_sessions).where(console_sessions.c.expires_at <= tx.now)
        )
        expires_at = tx.now + SESSION_TTL_MS
        await tx.conn.execute(
            sa.insert(console_sessions).values(
                token_hash=secrets.sha256(token),
                csrf=csrf,
                key_hash=admin_key.key_hash,
                created_at=tx.now,
                expires_at=expires_at,
            )
        )
    response.set_cookie(
        COOKIE,
        token,
        max_age=SESSION_TTL_MS // 1000,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return ConsoleSession(secrets.sha256(token), csrf, expires_at)


async def current(ctx: Context, request: Request) -> ConsoleSession | None:
    """The caller's live session, or None."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    async with ctx.read() as tx:
        row = (
            await tx.conn.execute(
                sa.select(console_sessions).where(
                    console_sessions.c.token_hash == secrets.sha256(token)
                )
            )
        ).first()
        now = tx.now
    if row is None or row.expires_at <= now:
        return None
    key = ctx.services.admin_key
    if key is None or not secrets.same(row.key_hash, key.key_hash):
        return None
    return ConsoleSession(row.token_hash, row.csrf, row.expires_at)


async def close_session(ctx: Context, session: ConsoleSession, response: Response) -> None:
    async with ctx.tx() as tx:
        await tx.conn.execute(
            sa.delete(console_sessions).where(console_sessions.c.token_hash == session.token_hash)
        )
    response.delete_cookie(COOKIE, path=COOKIE_PATH)


def login_token(request: Request) -> str:
    """The sign-in form's double-submit token: the caller's, or a new one."""
    existing = request.cookies.get(LOGIN_COOKIE)
    if existing and 20 <= len(existing) <= 100:
        return existing
    return pysecrets.token_urlsafe(32)


def set_login_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=LOGIN_TOKEN_TTL_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def login_csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(LOGIN_COOKIE)
    return bool(cookie and submitted) and secrets.same(str(cookie), str(submitted))


def csrf_ok(session: ConsoleSession, submitted: str | None) -> bool:
    return bool(submitted) and secrets.same(session.csrf, str(submitted))


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not every browser sends Origin on a same-origin form post
    if origin == "null":
        return False
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host
