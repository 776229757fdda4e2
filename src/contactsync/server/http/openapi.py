"""The OpenAPI schema as clients and fuzzers need it (issue 16.5).

FastAPI's generated schema is the starting point; this module adds what it cannot know:

- the bearer scheme (Swagger UI's Authorize button) on every operation that needs a token,
  and which of those need the admin key;
- the error responses each operation can give, in the one real shape
  `{"error": {"code", "message", "details"}}` (server/http/errors.py), with the codes of each
  status taken from the error classes in contactsync/errors.py, so a new error class shows up
  here without anyone editing this file; FastAPI's `{"detail": …}` 422 shape is dropped;
- bodies that routes parse themselves (for speed) described by reference: pydantic's `$defs`
  inside them are moved to `#/components/schemas`, where a reference can find them;
- examples of request bodies.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from contactsync import errors

BEARER = "bearer"

# what each status means to a client; the codes come from the error classes
_MEANING = {
    400: "The request cannot be read.",
    401: "No valid bearer token (or a wrong one-time code).",
    403: "The caller may not do this (not the admin, blocked, restricted, not a group admin).",
    404: "No such resource (or one the caller may not see).",
    405: "This method is not allowed on this path.",
    409: "The request conflicts with the current state.",
    410: "What was asked for is gone (events removed by the retention period): resync.",
    413: "The body, or a part of it, is too large.",
    415: "The body is not JSON.",
    422: "The request is not valid: `details` lists the fields and why.",
    429: "Too many requests or over a quota: wait `Retry-After` seconds.",
    500: "A bug on the server (logged there); the request may be retried.",
    502: "A service the server depends on (the login code sender) failed: try again.",
    503: "The server is overloaded or its database is unreachable: retry after `Retry-After`.",
}
# Every code a client can see is an error class (contactsync/errors.py), those the HTTP layer
# answers itself (bad_request, method_not_allowed, unsupported_media_type) included.
_EXTRA_CODES: dict[int, list[str]] = {}

EXAMPLES: dict[str, Any] = {
    "CreateUser": {"phone": "+1 415 555 0100", "name": "Ann", "region": "US"},
    "PatchUser": {"name": "Ann Lee", "restricted": False},
    "MintToken": {"device_id": "laptop"},
    "AddressBookUpload": {
        "contacts": [
            {"phone": "+1 415 555 0101", "name": "Bob"},
            {"phone": "(415) 555-0102", "name": "Cleo"},
            {"phone": "+44 7911 123456", "destroy": True},
        ],
        "region": "US",
        "device_id": "phone-1",
    },
    "OtpRequest": {"phone": "+1 415 555 0100"},
    "OtpVerify": {"phone": "+1 415 555 0100", "code": "123456", "device_id": "phone-1"},
}


def _codes_by_status() -> dict[int, list[str]]:
    found: dict[int, set[str]] = {}
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.ApiError) and cls is not errors.ApiError:
            found.setdefault(cls.status, set()).add(cls.code)
    for status, codes in _EXTRA_CODES.items():
        found.setdefault(status, set()).update(codes)
    return {status: sorted(codes) for status, codes in found.items()}


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "Stable; see docs/api.md"},
                    "message": {"type": "string", "description": "For people; may change"},
                    "details": {"description": "Which fields, limits or ids (by code)"},
                },
            }
        },
        "example": {
            "error": {
                "code": "invalid_phone",
                "message": "The phone number is not valid (too_short).",
                "details": {"field": "phone", "reason": "too_short"},
            }
        },
    }


def _responses(codes: dict[int, list[str]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    retry = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
    for status, meaning in _MEANING.items():
        listed = ", ".join(f"`{c}`" for c in codes.get(status, []))
        response: dict[str, Any] = {
            "description": f"{meaning} Codes: {listed}." if listed else meaning,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        if status in (429, 503):
            response["headers"] = retry
        if status == 401:
            response["headers"] = {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
            }
        out[str(status)] = response
    return out


def auth_of(path: str) -> str:
    """ "admin" | "user" | "" : what an operation's bearer token must be. The rule of the
    routers' dependencies (tests/test_openapi.py calls every operation without a token to
    hold this to it): /v1/admin/ takes the admin key, the rest of /v1/ but sign-in a user's
    token, health checks nothing."""
    if path.startswith("/v1/admin/"):
        return "admin"
    if path.startswith("/v1/") and not path.startswith("/v1/auth/"):
        return "user"
    return ""


def _hoist_defs(node: Any, components: dict[str, Any]) -> Any:
    """Move every `$defs` into components/schemas and point references there."""
    if isinstance(node, dict):
        for name, schema in node.pop("$defs", {}).items():
            components.setdefault(name, _hoist_defs(schema, components))
        if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/$defs/"):
            node["$ref"] = "#/components/schemas/" + node["$ref"][len("#/$defs/") :]
        for key, value in node.items():
            node[key] = _hoist_defs(value, components)
    elif isinstance(node, list):
        return [_hoist_defs(item, components) for item in node]
    return node


def build(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Error"] = _error_schema()
    components["responses"] = _responses(_codes_by_status())
    components["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "A user's token (POST /v1/auth/otp/verify, or minted by the admin),"
            " or the admin key for /v1/admin/ (written to data/admin_key on first start).",
        }
    }
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                _complete(path, method, op, auth_of(path), schemas)
    schema["components"]["schemas"] = dict(sorted(schemas.items()))
    return schema


def _complete(
    path: str, method: str, op: dict[str, Any], auth: str, schemas: dict[str, Any]
) -> None:
    responses = op["responses"]
    wanted = [422, 503]
    if path.startswith("/v1/"):
        # ids come in paths, queries and bodies: any of them may name no such thing
        wanted += [404, 429]
    if auth:
        op["security"] = [{BEARER: []}]
        wanted += [401, 403]
    elif path.startswith("/v1/auth/"):
        wanted.append(401)  # invalid_code
    if method in ("post", "put", "patch", "delete") or path == "/v1/events":
        wanted.append(409)
    if path == "/v1/events":
        wanted.append(410)  # events_trimmed
    body = op.get("requestBody")
    if body is not None:
        wanted.append(413)
        for media in body.get("content", {}).values():
            media["schema"] = _by_reference(_hoist_defs(media.get("schema", {}), schemas), schemas)
            ref = media["schema"].get("$ref", "")
            name = ref.rsplit("/", 1)[-1]
            if name in EXAMPLES:
                media.setdefault("example", EXAMPLES[name])
    for status in sorted(set(wanted)):
        responses[str(status)] = {"$ref": f"#/components/responses/{status}"}
    if auth == "admin":
        op["description"] = (op.get("description") or "").strip() + "\n\nNeeds the admin key."


def _by_reference(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """A model's whole schema inlined in a body (routes that parse their own body) becomes a
    reference to the component of that name."""
    title = schema.get("title")
    if "$ref" in schema or not title or schema.get("type") != "object":
        return schema
    schemas.setdefault(title, schema)
    return {"$ref": f"#/components/schemas/{title}"}


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
