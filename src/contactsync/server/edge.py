"""The one ASGI layer in front of the app: what every request goes through before routing.

In this order, in one pass (one layer costs a fraction of three):

- a request id (the caller's `X-Request-ID` when it is a sane token, else a new one), kept in
  the context variable the log formatter reads and answered in `X-Request-ID`; one access line
  per request and per WebSocket with the route *template* (see `logging.py`);
- the HTTP metrics: requests by route template and status, latency (see `metrics.py`);
- a slot of this process's concurrency limit: at most `max_concurrent_requests` HTTP requests
  are worked on at once; a request that gets no slot within `overload_wait_seconds` is answered
  503 `overloaded` with `Retry-After` before anything reads its body, so it changed nothing.
  Health checks and metrics scrapes never wait for a slot. WebSockets hold none;
- the request-body gate: a size limit enforced while the body streams in, before anything
  parses it (413 `body_too_large`), and the API's bodies read as JSON whatever the client
  declared: `curl -d '{…}'` (no -H) declares `application/x-www-form-urlencoded`; the API takes
  only JSON, so on /v1/ a body declared as a form, or not declared at all, is read as JSON
  instead of being refused with a puzzling "Input should be a valid dictionary". The console's
  forms are not under /v1/ and keep their type.

Routing writes the matched route into the request's own scope, which is how the metrics and the
access line learn the route template after the app has run: the scope is changed in place,
never copied.
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contactsync.errors import BodyTooLarge, Overloaded
from contactsync.server.http.errors import error_headers
from contactsync.server.logging import access_log, new_request_id, redact, request_id_var
from contactsync.server.logging import route_template as _route
from contactsync.server.metrics import Metrics

_REQUEST_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
# Never queued behind the limit: an orchestrator must see an overloaded process as alive.
_UNLIMITED = frozenset({"/healthz", "/readyz", "/metrics"})
_FORM = b"application/x-www-form-urlencoded"
_JSON = (b"content-type", b"application/json")


class Limiter:
    """At most `slots` requests at once; a caller waits at most `wait_seconds` for one."""

    def __init__(self, slots: int, wait_seconds: float) -> None:
        self.slots = slots
        self.wait_seconds = wait_seconds
        self._free = asyncio.Semaphore(slots)
        self.refused = 0

    @property
    def busy(self) -> int:
        return self.slots - self._free._value

    async def acquire(self) -> bool:
        if not self._free.locked():
            await self._free.acquire()  # a free slot: no wait, no timer
            return True
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._free.acquire()
            return True
        except TimeoutError:
            self.refused += 1
            return False

    def release(self) -> None:
        self._free.release()


def _given_request_id(scope: Scope) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == b"x-request-id":
            given = value.decode("latin-1")
            # A caller's id is kept when it is a sane token (and not something like a number).
            if 0 < len(given) <= 64 and _REQUEST_ID_CHARS.issuperset(given):
                return given if redact(given) == given else None
            return None
    return None


def _error_body(error: BodyTooLarge | Overloaded) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(error).items()]
    return body, headers


class Edge:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, limiter: Limiter
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.limiter = limiter
        self._too_large = _error_body(BodyTooLarge(details={"max_bytes": max_body_bytes}))
        self._overloaded = _error_body(Overloaded(1))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        request_id = _given_request_id(scope) or new_request_id()
        id_header = (b"x-request-id", request_id.encode())
        context_token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 0

        async def reply(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            elif message["type"] == "websocket.accept":
                status = 101
            await send(message)

        try:
            if kind == "websocket":
                await self.app(scope, receive, reply)
            else:
                await self._http(scope, receive, reply)
        except Exception:
            status = status or 500
            raise
        finally:
            route = _route(scope)
            method = scope.get("method", "WS")
            elapsed = time.perf_counter() - started
            if kind == "http":
                self.metrics.http_requests.labels(method, route, str(status)).inc()
                self.metrics.http_latency.labels(method, route).observe(elapsed)
            if access_log.isEnabledFor(20):  # INFO
                access_log.info(
                    "%s %s %s",
                    method,
                    route,
                    status,
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(context_token)

    async def _http(self, scope: Scope, receive: Receive, reply: Send) -> None:
        limit = self.max_body_bytes
        headers = scope.get("headers") or []
        declared_type: bytes | None = None
        for key, value in headers:
            if key == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await self._answer(reply, 413, self._too_large)
                    return
            elif key == b"content-type":
                declared_type = value
        path: str = scope.get("path", "")
        if path.startswith("/v1/") and (
            declared_type is None or declared_type.split(b";", 1)[0].strip().lower() == _FORM
        ):
            scope["headers"] = [(k, v) for k, v in headers if k != b"content-type"] + [_JSON]
        limited = path not in _UNLIMITED
        if limited and not await self.limiter.acquire():
            await self._answer(reply, 503, self._overloaded)
            return
        received = 0
        rejected = False
        responded = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now and tell the app the client went away; whatever the app
                    # sends afterwards is dropped.
                    rejected = True
                    if not responded:
                        await self._answer(reply, 413, self._too_large)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal responded
            if rejected:
                return
            if message["type"] == "http.response.start":
                responded = True
            await reply(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not rejected:
                raise
        finally:
            if limited:
                self.limiter.release()

    @staticmethod
    async def _answer(
        reply: Send, status: int, answer: tuple[bytes, list[tuple[bytes, bytes]]]
    ) -> None:
        body, headers = answer
        await reply({"type": "http.response.start", "status": status, "headers": headers})
        await reply({"type": "http.response.body", "body": body})
