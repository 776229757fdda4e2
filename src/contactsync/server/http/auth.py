"""Phone login with one-time codes."""

from __future__ import annotations

from fastapi import APIRouter, Request

from contactsync.protocol import OtpRequest, OtpRequested, OtpVerified, OtpVerify
from contactsync.server.http.deps import Ctx
from contactsync.server.services import otp

router = APIRouter(prefix="/v1/auth/otp", tags=["auth"])


@router.post("/request", status_code=202, response_model=OtpRequested)
async def request_code(body: OtpRequest, ctx: Ctx, request: Request) -> OtpRequested:
    """Send a one-time code to the phone number (the console sender writes it to the server log).
    Limited per number and per address: 429 with Retry-After."""
    client = request.client.host if request.client else "unknown"
    sender = ctx.services.otp_sender
    assert sender is not None, "create_app wires the OTP sender"
    expires_in = await otp.request_code(ctx, sender, body.phone, body.region, client)
    return OtpRequested(expires_in=expires_in, sent_via=getattr(sender, "via", None))


@router.post("/verify", response_model=OtpVerified)
async def verify_code(body: OtpVerify, ctx: Ctx) -> OtpVerified:
    """Exchange the one-time code for a token for this device; registers the number if it is new
    (`new_user`)."""
    verified = await otp.verify(ctx, body.phone, body.region, body.code, body.device_id)
    return OtpVerified(user_id=verified.user_id, token=verified.token, new_user=verified.new_user)
