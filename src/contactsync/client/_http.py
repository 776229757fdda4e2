"""HTTP to the contactsync server with retries: network errors, 5xx and 429 are retried with
exponential backoff (honouring `Retry-After`) for up to a minute, longer than a server takes
to restart; other errors raise at once.

The transport is injectable: tests pass `httpx.ASGITransport(app=...)` to drive the real app
in process, or nothing to talk to a real server over a socket.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel

from contactsync.client._errors import ApiError, NetworkError, error_for
from contactsync.protocol import ErrorOut

__all__ = ["RetryPolicy", "ApiClient"]


@dataclass(frozen=True)
class RetryPolicy:
    """How long a request is retried, and the backoff between attempts (seconds).

    A request is retried until `window` seconds have passed since its first attempt (the
    next wait would end later), or after `attempts` attempts when that is set.
    """

    attempts: int | None = None
    window: float = 60.0
    base: float = 0.25
    cap: float = 5.0
    max_retry_after: float = 60.0  # a longer Retry-After (e.g. a daily quota) is an error

    def delay(self, attempt: int) -> float:
        # full jitter: spreads clients that failed together so they do not return together
        return random.uniform(0, min(self.cap, self.base * 2**attempt))


class ApiClient:
    """One server, one token. `request` returns the decoded JSON body."""

    def __init__(
        self,
        server: str,
        token: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self.bytes_sent = 0
        self.http = httpx.AsyncClient(base_url=self.server, transport=transport, timeout=timeout)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **(extra or {})}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        retry: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Every attempt sends the same body and headers (an `Idempotency-Key` included), so a
        retried request the server already applied is answered without applying it twice."""
        response = await self.request_response(
            method, path, json_body=json_body, params=params, retry=retry, headers=headers
        )
        return response.json() if response.content else None

    async def request_response(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        retry: bool = True,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """`request` without decoding: the successful response itself (a binary body)."""
        if isinstance(json_body, BaseModel):
            content: bytes | None = json_body.model_dump_json(exclude_unset=True).encode()
        elif json_body is not None:
            content = json.dumps(json_body, ensure_ascii=False).encode()
        else:
            content = None
        policy = self.retry
        started = self.clock()
        attempt = 0
        asked: float | None = None
        while True:
            try:
                response = await self.http.request(
                    method,
                    path,
                    content=content,
                    params={k: v for k, v in (params or {}).items() if v is not None},
                    headers=self._headers(headers),
                )
            except httpx.TransportError as exc:
                last: ApiError | NetworkError = NetworkError(
                    f"{method} {path}: {type(exc).__name__}: {exc}"
                )
                wait = policy.delay(attempt)
            else:
                self.bytes_sent += len(content or b"")
                if response.status_code < 400:
                    return response
                last = _error(response)
                if response.status_code != 429 and response.status_code < 500:
                    raise last
                asked = _retry_after(response)
                wait = policy.delay(attempt) if asked is None else asked
                if asked is not None and asked > policy.max_retry_after:
                    if response.status_code == 429:
                        raise last from None
                    wait = policy.delay(attempt)
            attempt += 1
            out_of_attempts = policy.attempts is not None and attempt >= policy.attempts
            if not retry or out_of_attempts or self.clock() + wait - started > policy.window:
                break
            await self.sleep(wait)
        if isinstance(last, NetworkError):
            raise NetworkError(
                f"The server at {self.server} did not answer for "
                f"{self.clock() - started:.0f} s ({attempt} attempts; last: {last})"
            )
        raise last


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error(response: httpx.Response) -> ApiError:
    """The exception of the tree (`_errors.py`) for an error answer, parsed with the
    contract's error model; a body that is not one still gives an error by its status."""
    code, message, details = "http_error", response.reason_phrase, None
    try:
        body = ErrorOut.model_validate_json(response.content).error
        code, message, details = body.code, body.message, body.details
    except ValueError:
        pass
    return error_for(response.status_code, code, message, details, _retry_after(response))
