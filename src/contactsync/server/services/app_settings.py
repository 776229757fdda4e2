"""Run-time settings an app team changes through the admin API and console.

Stored as one row a key in `app_settings`; defaults live in the model, so a fresh install and
an upgraded one read the same. Internal values (the admin key hash, the OTP pepper) share the
table under a `secret.` prefix and never appear in `AppSettings`.

`load` is served from the process-local cache (`server/cache.py`) when it can be: nearly every
request reads the settings. `update` sends `settings.changed` after its commit, which drops
the cached copy on every process; within the updating transaction `load` reads the table.
The `AppSettings` that `load` returns is shared: read it, never assign to it.
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from contactsync.protocol import Text
from contactsync.server.cache import SETTINGS_CHANGED
from contactsync.server.context import ReadTx, Tx
from contactsync.server.store.tables import app_settings

EVENT_TYPES = (
    "contact.joined",
    "contacts.registered",
    "profile.updated",
    "relation.changed",
    "conversation.created",
    "conversation.updated",
    "message.created",
    "consent.updated",
    "sync.requested",
    "preferences.updated",
)


class AppSettings(BaseModel):
    """Every run-time setting with its default. Unknown keys are refused; the types are strict
    (a number is a JSON number, a flag `true`/`false`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, strict=True)

    notify_contact_joined: bool = True
    max_contacts_per_request: int = Field(5000, ge=1, le=100_000)
    # The discovery quota is a token bucket (services/quota.py): this many new numbers at
    # first, refilling by the second setting a day.
    discovery_quota: int = Field(50_000, ge=0, le=10_000_000)
    discovery_quota_refill_per_day: int = Field(5_000, ge=1, le=10_000_000)
    # Who may learn that a user is registered, for users who did not choose themselves.
    discoverable_by_default: Literal["everybody", "contacts", "nobody"] = "everybody"
    push_webhook_url: HttpUrl | None = None
    push_webhook_secret: Text | None = Field(None, min_length=16, max_length=200)
    push_event_types: list[Text] = Field(default_factory=lambda: list(EVENT_TYPES))
    push_max_attempts: int = Field(8, ge=1, le=50)
    relation_changed_events: bool = True
    auto_subscribe_on_message: bool = True
    max_message_bytes: int = Field(16_384, ge=1, le=1_048_576)
    # Per sender, over all conversations (429 send_rate_limited beyond them).
    send_messages_per_minute: int = Field(120, ge=1, le=1_000_000)
    send_bytes_per_minute: int = Field(1_048_576, ge=1, le=1_073_741_824)
    # Reads of profiles of users the reader has no relation with, per reader.
    profile_reads_per_hour: int = Field(600, ge=1, le=10_000_000)
    # How long events stay in the log; older ones are trimmed in the background.
    event_retention_days: int = Field(30, ge=1, le=3650)

    @field_validator("push_event_types")
    @classmethod
    def _known_event_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {list(EVENT_TYPES)}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _webhook_is_signed(self) -> AppSettings:
        # An unsigned push webhook would let anyone who finds the URL forge notifications.
        if self.push_webhook_url is not None and not self.push_webhook_secret:
            raise ValueError("push_webhook_url needs push_webhook_secret (pushes are signed)")
        return self


PUBLIC_FIELDS = frozenset(AppSettings.model_fields)


_LOAD = sa.select(app_settings.c.key, app_settings.c.value).where(
    app_settings.c.key.in_(sorted(PUBLIC_FIELDS))
)


async def load(tx: ReadTx) -> AppSettings:
    cache = tx.caches.settings if tx.caches is not None else None
    if cache is not None and not tx.changed(SETTINGS_CHANGED):
        found: AppSettings | None = cache.get("")
        if found is not None:
            return found
        stamp = cache.stamp()
    else:
        cache = None
    rows = await tx.conn.execute(_LOAD)
    loaded = AppSettings.model_validate({key: value for key, value in rows})
    if cache is not None:
        cache.put("", loaded, stamp)
    return loaded


async def update(tx: Tx, changes: dict[str, Any]) -> AppSettings:
    """Apply a partial update after validating the whole result."""
    current = await load(tx)
    merged = AppSettings.model_validate({**current.model_dump(mode="json"), **changes})
    stored = merged.model_dump(mode="json")
    for key in changes:
        await _put(tx, key, stored[key])
    tx.control(SETTINGS_CHANGED)
    # Services that build on this module follow a change here through hooks wired by
    # create_app (private discovery relists the users who follow discoverable_by_default).
    for hook in tx.services.settings_changed:
        await hook(tx, current, merged)
    return merged


async def get_secret(tx: Tx, name: str) -> Any:
    value = await tx.conn.scalar(
        sa.select(app_settings.c.value).where(app_settings.c.key == f"secret.{name}")
    )
    return value


async def put_secret(tx: Tx, name: str, value: Any) -> None:
    await _put(tx, f"secret.{name}", value)


async def _put(tx: Tx, key: str, value: Any) -> None:
    updated = await tx.conn.execute(
        sa.update(app_settings).where(app_settings.c.key == key).values(value=value)
    )
    if updated.rowcount == 0:
        await tx.conn.execute(sa.insert(app_settings).values(key=key, value=value))
