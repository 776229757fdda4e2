"""Getting a token: OTP login for a user, or a token minted by the app backend (admin key)."""

from __future__ import annotations

from typing import Any

import httpx

from contactsync.client._http import ApiClient

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
        body: dict[str, Any] = {"phone": phone}
        if region:
            body["region"] = region
        # not retried: a 429 (the per-number limit) is the user's to see, with its wait
        return dict(
            await api.request("POST", "/v1/auth/otp/request", json_body=body, retry=False) or {}
        )
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
        body: dict[str, Any] = {"phone": phone, "code": code, "device_id": device_id}
        if region:
            body["region"] = region
        return dict(await api.request("POST", "/v1/auth/otp/verify", json_body=body, retry=False))
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
        result = await api.request(
            "POST", f"/v1/admin/users/{user_id}/tokens", json_body={"device_id": device_id}
        )
        return str(result["token"])
    finally:
        await api.aclose()
