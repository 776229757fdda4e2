"""The SDK's exception tree: what went wrong talking to the server or with local state."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of every error the SDK raises."""


class NetworkError(ClientError):
    """The server could not be reached (after the configured retries)."""


class ApiError(ClientError):
    """The server answered with an error body `{"error": {code, message, details}}`."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @property
    def refused(self) -> bool:
        """Refused for good: the same request can never succeed (a 4xx other than 401, which a
        new token may cure, and 429, which time cures), so it is dropped, not retried."""
        return 400 <= self.status < 500 and self.status not in (401, 429)


class AuthError(ApiError):
    """401: the token is missing, wrong or revoked."""


class RateLimited(ApiError):
    """429 that lasts longer than the client is willing to wait (e.g. the discovery quota)."""

    def __init__(self, status: int, code: str, message: str, details: Any, retry_after: float):
        super().__init__(status, code, message, details)
        self.retry_after = retry_after


class StateError(ClientError):
    """A method was called in a lifecycle state that does not allow it."""
