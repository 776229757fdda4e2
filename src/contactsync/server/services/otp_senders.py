"""Where one-time codes go: the log in development, a signed webhook in production.

The webhook receives `{"phone": "+E164", "code": "123456", "sent_at": ms}` with the header
`X-Contactsync-Signature: sha256=<HMAC-SHA256 of the body with the shared secret>`; the app
backend turns it into an SMS.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Protocol

import httpx

from contactsync.errors import OtpSenderFailed
from contactsync.phone import mask
from contactsync.server import outbound
from contactsync.server.config import Settings
from contactsync.server.services.secrets import sign

log = logging.getLogger("contactsync.otp")


class OtpSender(Protocol):
    async def send(self, e164: str, code: str) -> None: ...


class ConsoleSender:
    """Development: writes the code to the server log (the number masked)."""

    via = "console"

    async def send(self, e164: str, code: str) -> None:
        log.warning(
            "OTP for %s: %s (console sender; configure a webhook for production)", mask(e164), code
        )


class MemorySender:
    """Keeps the last code per number in memory: for embedding and tests."""

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}

    async def send(self, e164: str, code: str) -> None:
        self.codes[e164] = code


class WebhookSender:
    via = "webhook"

    def __init__(self, url: str, secret: str, timeout: float = 5.0) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout

    async def send(self, e164: str, code: str) -> None:
        body = json.dumps(
            {"phone": e164, "code": code, "sent_at": time.time_ns() // 1_000_000}
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Contactsync-Signature": sign(self.secret, body),
        }
        try:
            async with outbound.client(timeout=self.timeout) as client:
                response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("OTP webhook unreachable: %s", type(exc).__name__)
            raise OtpSenderFailed() from exc
        if response.status_code >= 300:
            log.warning("OTP webhook answered %s", response.status_code)
            raise OtpSenderFailed()


def sender_from_settings(settings: Settings) -> OtpSender:
    if settings.otp_sender == "webhook":
        if not settings.otp_webhook_url or not settings.otp_webhook_secret:
            raise ValueError("otp_sender=webhook needs CONTACTSYNC_OTP_WEBHOOK_URL and _SECRET")
        return WebhookSender(
            settings.otp_webhook_url, settings.otp_webhook_secret.get_secret_value()
        )
    if settings.otp_sender == "memory":
        return MemorySender()
    return ConsoleSender()
