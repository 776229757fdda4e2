"""The gate every request body passes: a size limit enforced while the body streams in, before
anything parses it, and the API's bodies read as JSON whatever the client declared.

`curl -d '{…}'` (no -H) declares `application/x-www-form-urlencoded`; the API takes only JSON,
so on /v1/ a body declared as a form, or not declared at all, is read as JSON instead of being
refused with a puzzling "Input should be a valid dictionary". The console's forms are not
under /v1/ and keep their type.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contactsync.errors import BodyTooLarge

_FORM = b"application/x-www-form-urlencoded"


def _read_as_json(declared: bytes | None) -> bool:
    return declared is None or declared.split(b";", 1)[0].strip().lower() == _FORM


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if scope["path"].startswith("/v1/") and _read_as_json(headers.get(b"content-type")):
            # In place, not on a copy: the layers outside read what routing writes into the
            # scope (the route template for metrics and logs).
            scope["headers"] = [
                (k, v) for k, v in scope.get("headers") or [] if k != b"content-type"
            ] + [(b"content-type", b"application/json")]
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        rejected = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Answer now and tell the app the client went away; whatever the app
                    # sends afterwards is dropped.
                    rejected = True
                    if not started:
                        await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not rejected:
                raise

    async def _reject(self, send: Send) -> None:
        body = json.dumps(BodyTooLarge(details={"max_bytes": self.max_bytes}).body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
