"""Getting a token: OTP login for a user, or a token minted by the app backend (admin key)."""

from __future__ import annotations

from typing import Any

import httpx

from contactsync.client._http import ApiClient
from contactsync.client._wire import answer, body
from contactsync.protocol import (
    MintToken,
    OtpRequest,
    OtpRequested,
    OtpVerified,
    OtpVerify,
    TokenOut,
)

__all__ = ["request_otp", "verify_otp", "mint_token"]


async def request_otp(
    server: str,
    phone: str,
    *,
    region: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """Ask the server to send a login code to `phone`."""
    api = ApiClient(server, transport=transport)
    try:
        fields: dict[str, Any] = {"phone": phone}
        if region:
            fields["region"] = region
        request = body(OtpRequest, fields)
        # not retried: a 429 (the per-number limit) is the user's to see, with its wait
        raw = await api.request("POST", "/v1/auth/otp/request", json_body=request, retry=False)
        answer(OtpRequested, raw)
        return dict(raw)
    finally:
        await api.aclose()


async def verify_otp(
    server: str,
    phone: str,
    code: str,
    device_id: str,
    *,
    region: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """Exchange the code for {user_id, token, new_user}."""
    api = ApiClient(server, transport=transport)
    try:
        fields: dict[str, Any] = {"phone": phone, "code": code, "device_id": device_id}
        if region:
            fields["region"] = region
        request = body(OtpVerify, fields)
        raw = await api.request("POST", "/v1/auth/otp/verify", json_body=request, retry=False)
        answer(OtpVerified, raw)
        return dict(raw)
    finally:
        await api.aclose()


async def mint_token(
    server: str,
    admin_key: str,
    user_id: int,
    device_id: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """A token for `user_id` on `device_id`, minted with the app backend's admin key."""
    api = ApiClient(server, admin_key, transport=transport)
    try:
        request = body(MintToken, {"device_id": device_id})
        result = answer(
            TokenOut,
            await api.request("POST", f"/v1/admin/users/{user_id}/tokens", json_body=request),
        )
        return result.token
    finally:
        await api.aclose()
