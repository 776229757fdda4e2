"""The one place errors become HTTP responses in the contract's shape.

Every failure a client can see comes out as `{"error": {"code", "message", "details"}}` with a
stable code: domain errors by their class, request validation as `invalid_request`, unknown
routes as `not_found`. Anything unexpected is logged with its trace and answered with a bare
`internal_error`, never the trace itself.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contactsync import errors
from contactsync.errors import ApiError, error_body, invalid_input

log = logging.getLogger("contactsync.http")

# What Starlette's own refusals (routing, body parsing) are in the contract.
_HTTP_ERRORS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (
        errors.BadRequest,
        errors.Unauthorized,
        errors.Forbidden,
        errors.NotFound,
        errors.MethodNotAllowed,
        errors.BodyTooLarge,
        errors.UnsupportedMediaType,
    )
}


def error_headers(exc: ApiError) -> dict[str, str]:
    """The HTTP headers an error implies, derived from its fields (the one place)."""
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after > 0:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    if isinstance(exc, errors.Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    return headers


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        loc = [part for part in err.get("loc", ()) if part != "body"]
        details.append(
            {
                "field": ".".join(str(p) for p in loc),
                "type": err.get("type"),
                "message": err.get("msg"),
            }
        )
    return details


_NOT_AN_OBJECT = ("model_attributes_type", "dict_type", "model_type")


def _body_problem(request: Request, exc: RequestValidationError) -> str | None:
    """What is wrong with the body as a whole (not JSON, or not an object), in words that say
    what to send instead; None when the problem is in its fields."""
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        if not loc or loc[0] != "body":
            continue
        if err.get("type") == "json_invalid":
            where = f" at character {loc[1]}" if len(loc) > 1 else ""
            reason = (err.get("ctx") or {}).get("error") or "cannot be parsed"
            return f"The body is not valid JSON ({reason}{where})."
        if len(loc) == 1 and err.get("type") in _NOT_AN_OBJECT:
            declared = request.headers.get("content-type")
            if declared and declared.split(";")[0].strip().lower() != "application/json":
                return (
                    "The body must be a JSON object sent with Content-Type: application/json "
                    f"(this request declared {declared})."
                )
            return "The body must be a JSON object ({...})."
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(
            exc.status, exc.code, exc.message, exc.details, error_headers(exc) or None
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = _body_problem(request, exc) or "The request is not valid."
        error = invalid_input(message, _validation_details(exc))
        return error_response(error.status, error.code, error.message, error.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        known = _HTTP_ERRORS.get(exc.status_code)
        code = known.code if known is not None else "http_error"
        message = exc.detail if isinstance(exc.detail, str) else code
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    # Innermost of the middlewares (the first added). Not `exception_handler(Exception)`:
    # Starlette runs that outside every middleware and then re-raises, so the server logged
    # each trace a second time.
    app.add_middleware(UnexpectedErrors)


class UnexpectedErrors:
    """A bug: its trace logged once, the client answered 500 `internal_error` (nothing more
    when the answer had begun: the connection is cut)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                error = errors.InternalError()
                response = error_response(error.status, error.code, error.message)
                await response(scope, receive, send)
