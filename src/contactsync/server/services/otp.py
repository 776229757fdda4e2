"""Phone login with one-time codes.

Codes are 6 digits, stored as a keyed hash (HMAC-SHA256 with the pepper), valid for
`otp_ttl_seconds`, and dead after
`otp_max_attempts` wrong tries (the next try fails even with the right code). Requests are
rate-limited per phone and per client address. A verified code is deleted, so it cannot be
replayed.

The pepper is never in the database: it is CONTACTSYNC_OTP_PEPPER, or else the file
`<data_dir>/otp_pepper` (mode 0600) made on first use. A database dump alone therefore does not
let anyone try the million codes against a live hash. Processes on several hosts sharing one
database must be given the same CONTACTSYNC_OTP_PEPPER.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from contactsync.errors import OtpInvalid, OtpTooManyAttempts
from contactsync.server.context import Context
from contactsync.server.services import joins, numbers, ratelimit, secrets, sessions
from contactsync.server.services.otp_senders import OtpSender
from contactsync.server.store.tables import otp_codes


@dataclass(frozen=True)
class Verified:
    user_id: int
    token: str
    new_user: bool


PEPPER_FILE = "otp_pepper"


def pepper(ctx: Context) -> str:
    """The key codes are hashed with (read once per process)."""
    known = ctx.services.otp_pepper
    if known is None:
        given = ctx.settings.otp_pepper
        if given is not None:
            known = given.get_secret_value()
        else:
            path = ctx.settings.data_dir / PEPPER_FILE
            known = secrets.private_value(path, secrets.new_pepper)
        ctx.services.otp_pepper = known
    return known


async def request_code(
    ctx: Context, sender: OtpSender, raw_phone: str, region: str | None, client: str
) -> int:
    """Create and send a code; returns its lifetime in seconds."""
    settings = ctx.settings
    async with ctx.tx() as tx:
        region = numbers.resolve_region(region, settings.default_region)
        e164 = numbers.normalize_phone(raw_phone, region)
        await ratelimit.hit(
            tx, f"otp:phone:{e164}", limit=settings.otp_per_phone_per_hour, window_s=3600
        )
        await ratelimit.hit(
            tx, f"otp:addr:{client}", limit=settings.otp_per_address_per_hour, window_s=3600
        )
        code = secrets.new_otp_code()
        await tx.conn.execute(sa.delete(otp_codes).where(otp_codes.c.phone == e164))
        await tx.conn.execute(
            sa.insert(otp_codes).values(
                phone=e164,
                code_hash=secrets.keyed_hash(pepper(ctx), f"{e164}:{code}"),
                expires_at=tx.now + settings.otp_ttl_seconds * 1000,
                attempts=0,
                created_at=tx.now,
            )
        )
        # Sent inside the transaction: if the sender fails, no code is stored and the
        # client gets an error it can retry.
        await sender.send(e164, code)
    return settings.otp_ttl_seconds


async def verify(
    ctx: Context, raw_phone: str, region: str | None, code: str, device_id: str
) -> Verified:
    settings = ctx.settings
    sessions.check_device_id(device_id)
    async with ctx.tx() as tx:
        region = numbers.resolve_region(region, settings.default_region)
        e164 = numbers.normalize_phone(raw_phone, region)
        # Claim one try before comparing: one conditional UPDATE, so concurrent guesses each
        # spend a try of their own and at most `otp_max_attempts` are ever compared (a read
        # then a write let 30 concurrent guesses through against a limit of 5 on PostgreSQL).
        # A wrong try stays counted: this transaction commits even though the request fails.
        claimed = (
            await tx.conn.execute(
                sa.update(otp_codes)
                .where(
                    otp_codes.c.phone == e164,
                    otp_codes.c.expires_at > tx.now,
                    otp_codes.c.attempts < settings.otp_max_attempts,
                )
                .values(attempts=otp_codes.c.attempts + 1)
                .returning(otp_codes.c.code_hash)
            )
        ).first()
        if claimed is not None:
            expected = secrets.keyed_hash(pepper(ctx), f"{e164}:{code}")
            outcome = "ok" if secrets.same(expected, claimed.code_hash) else "wrong"
        else:
            live = await tx.conn.scalar(
                sa.select(otp_codes.c.attempts).where(
                    otp_codes.c.phone == e164, otp_codes.c.expires_at > tx.now
                )
            )
            outcome = "invalid" if live is None else "exhausted"
        if outcome == "ok":
            await tx.conn.execute(sa.delete(otp_codes).where(otp_codes.c.phone == e164))
            user, created = await joins.register(
                tx, e164, name=None, region=None, default_region=None
            )
            token = await sessions.mint(tx, user.id, device_id)
            return Verified(user.id, token, created)
    if outcome == "exhausted":
        raise OtpTooManyAttempts()
    raise OtpInvalid()
