"""`GET/PUT /v1/admin/settings`: the run-time settings of the app, admin only.

PUT takes any subset of the fields and validates the whole result before storing anything.
The push webhook secret is write-only: responses carry `push_webhook_secret_set` instead.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError, create_model

from contactsync.errors import InvalidRequest, invalid_input
from contactsync.server.http.deps import Admin, Ctx
from contactsync.server.services import app_settings
from contactsync.server.services.app_settings import AppSettings

router = APIRouter(prefix="/v1/admin/settings", tags=["admin"], dependencies=[Admin])

SECRET_FIELDS = ("push_webhook_secret",)

SettingsOut = create_model(  # type: ignore[call-overload]
    "SettingsOut",
    **{
        name: (info.annotation, info.default if info.default_factory is None else None)
        for name, info in AppSettings.model_fields.items()
        if name not in SECRET_FIELDS
    },
    push_webhook_secret_set=(bool, False),
)


def settings_out(current: AppSettings) -> dict[str, Any]:
    out = current.model_dump(mode="json")
    for name in SECRET_FIELDS:
        out[f"{name}_set"] = out.pop(name) is not None
    return out


def _details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {
            "field": ".".join(str(p) for p in err.get("loc", ())),
            "type": err.get("type"),
            "message": err.get("msg"),
        }
        for err in exc.errors(include_url=False, include_input=False)
    ]


@router.get("", response_model=SettingsOut)
async def get_settings(ctx: Ctx) -> dict[str, Any]:
    """The run-time settings (docs/api.md lists them)."""
    async with ctx.read() as tx:
        return settings_out(await app_settings.load(tx))


# The body is any subset of the settings; it is read as raw JSON so that "absent" and "null"
# stay distinct (null clears the webhook URL or secret). Described here for the schema.
_PUT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": AppSettings.model_json_schema()["properties"],
                    "additionalProperties": False,
                }
            }
        },
    }
}


@router.put("", response_model=SettingsOut, openapi_extra=_PUT_BODY)
async def put_settings(request: Request, ctx: Ctx) -> dict[str, Any]:
    """Change some settings in one call: all are applied, or none."""
    try:
        changes = json.loads(await request.body() or b"null")
    except ValueError:
        raise InvalidRequest("The body is not valid JSON.") from None
    if not isinstance(changes, dict):
        raise InvalidRequest("The body must be a JSON object of settings to change.")
    unknown = sorted(set(changes) - app_settings.PUBLIC_FIELDS)
    if unknown:
        raise InvalidRequest(
            "Unknown settings.",
            details=[{"field": name, "type": "unknown_setting"} for name in unknown],
        )
    try:
        async with ctx.tx() as tx:
            current = await app_settings.update(tx, changes)
    except ValidationError as exc:
        raise invalid_input("The settings are not valid.", _details(exc)) from None
    return settings_out(current)
