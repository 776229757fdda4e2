"""The settings form, built from `AppSettings` itself so a new setting shows up on its own.

Each field becomes an input by its type: bool a checkbox, int a number (bounds from the
model), a list of event types a set of checkboxes, a secret a password box that keeps the
stored value when left empty, anything else a text box (empty means "not set").
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from contactsync.server.services import app_settings
from contactsync.server.services.app_settings import AppSettings

LABELS: dict[str, tuple[str, str]] = {
    "notify_contact_joined": (
        "Notify when a contact joins",
        'Send "contact.joined" to everyone whose address book holds a new user\'s number.',
    ),
    "max_contacts_per_request": (
        "Contacts per upload request",
        "Larger uploads are refused with too_many_contacts (413).",
    ),
    "discovery_quota": (
        "Discovery quota",
        "New numbers one user may check at first (a token bucket; anti-enumeration).",
    ),
    "discovery_quota_refill_per_day": (
        "Discovery quota refill",
        "New numbers added back to each user's discovery quota per day.",
    ),
    "send_messages_per_minute": (
        "Messages per minute",
        "Messages one user may send per minute (send_rate_limited, 429).",
    ),
    "send_bytes_per_minute": (
        "Message bytes per minute",
        "Message bytes one user may send per minute (send_rate_limited, 429).",
    ),
    "profile_reads_per_hour": (
        "Stranger profile reads",
        "Profiles of users without a relation one user may read per hour.",
    ),
    "event_retention_days": (
        "Event retention",
        "Days events stay in the log before they are trimmed.",
    ),
    "push_webhook_url": ("Push webhook URL", "Events for offline users are POSTed here."),
    "push_webhook_secret": (
        "Push webhook secret",
        "Signs each push (HMAC-SHA256, X-Contactsync-Signature). Leave empty to keep it.",
    ),
    "push_event_types": ("Pushed event types", "Only these event types go to the webhook."),
    "push_max_attempts": ("Push attempts", "Tries before a push is marked failed."),
    "relation_changed_events": ("Relation events", 'Send "relation.changed" events.'),
    "auto_subscribe_on_message": (
        "Subscribe on message",
        "A message subscribes the recipient to the sender.",
    ),
    "max_message_bytes": ("Message size limit", "Largest message body, in bytes."),
}

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Notifications", ("notify_contact_joined", "relation_changed_events")),
    (
        "Request limits",
        (
            "max_contacts_per_request",
            "discovery_quota",
            "discovery_quota_refill_per_day",
            "max_message_bytes",
            "send_messages_per_minute",
            "send_bytes_per_minute",
            "profile_reads_per_hour",
        ),
    ),
    ("Event log", ("event_retention_days",)),
    (
        "Push webhook",
        ("push_webhook_url", "push_webhook_secret", "push_event_types", "push_max_attempts"),
    ),
)


@dataclass
class FormField:
    name: str
    kind: str  # checkbox, number, choices, secret, text
    label: str
    help: str
    value: Any
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    is_set: bool = False
    error: str | None = None


@dataclass
class SettingsForm:
    groups: list[tuple[str, list[FormField]]]
    errors: dict[str, str] = field(default_factory=dict)


def _kind(name: str, annotation: Any) -> str:
    if "secret" in name:
        return "secret"
    args = typing.get_args(annotation)
    if annotation is bool:
        return "checkbox"
    if annotation is int or annotation is float:
        return "number"
    origin = typing.get_origin(annotation)
    if origin is list:
        return "choices"
    if (
        origin in (typing.Union, types.UnionType)
        and args
        and all(a in (int, type(None)) for a in args)
    ):
        return "number"
    return "text"


def _bounds(name: str) -> tuple[int | None, int | None]:
    low = high = None
    for item in AppSettings.model_fields[name].metadata:
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    return low, high


def build(
    current: AppSettings,
    submitted: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> SettingsForm:
    """The form showing `current`, or the values a failed submission sent back."""
    values = current.model_dump(mode="json")
    stored_secrets = {name: values.get(name) is not None for name in values if "secret" in name}
    values.update(submitted or {})
    errors = errors or {}
    placed: set[str] = set()
    groups: list[tuple[str, list[FormField]]] = []
    names_by_group = [(title, list(names)) for title, names in GROUPS]
    others = [n for n in AppSettings.model_fields if all(n not in g for _, g in GROUPS)]
    if others:
        names_by_group.append(("Other", others))
    for title, names in names_by_group:
        fields = []
        for name in names:
            info = AppSettings.model_fields.get(name)
            if info is None or name in placed:
                continue
            placed.add(name)
            kind = _kind(name, info.annotation)
            label, help_text = LABELS.get(name, (name.replace("_", " ").capitalize(), ""))
            low, high = _bounds(name) if kind == "number" else (None, None)
            fields.append(
                FormField(
                    name=name,
                    kind=kind,
                    label=label,
                    help=help_text,
                    value=None if kind == "secret" else values.get(name),
                    choices=app_settings.EVENT_TYPES if kind == "choices" else (),
                    minimum=low,
                    maximum=high,
                    is_set=stored_secrets.get(name, False),
                    error=errors.get(name),
                )
            )
        if fields:
            groups.append((title, fields))
    return SettingsForm(groups=groups, errors=errors)


def parse(form: FormData, current: AppSettings) -> tuple[dict[str, Any], dict[str, str]]:
    """The changes a posted settings form asks for, and per-field errors of the raw input."""
    changes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    stored = current.model_dump(mode="json")
    for name, info in AppSettings.model_fields.items():
        kind = _kind(name, info.annotation)
        raw = form.get(name)
        value: Any
        if kind == "checkbox":
            value = raw is not None
        elif kind == "choices":
            value = [str(item) for item in form.getlist(name)]
            unknown = sorted(set(value) - set(app_settings.EVENT_TYPES))
            if unknown:
                errors[name] = f"Unknown event types: {', '.join(unknown)}."
                continue
        elif kind == "secret":
            if form.get(f"{name}__clear") is not None:
                value = None
            elif isinstance(raw, str) and raw.strip():
                value = raw.strip()
            else:
                continue  # empty: keep the stored secret
        elif kind == "number":
            text = raw.strip() if isinstance(raw, str) else ""
            if not text:
                if stored.get(name) is None:
                    continue
                errors[name] = "Enter a whole number."
                continue
            try:
                value = int(text)
            except ValueError:
                errors[name] = "Enter a whole number."
                continue
        else:
            if raw is None:
                continue  # a field the form did not show
            value = raw.strip() if isinstance(raw, str) else None
            value = value or None
        if value != stored.get(name):
            changes[name] = value
    return changes, errors


def validation_errors(exc: ValidationError) -> dict[str, str]:
    """Pydantic's errors keyed by field; whole-model rules land on the first field they name."""
    out: dict[str, str] = {}
    for err in exc.errors(include_url=False, include_input=False):
        loc = err.get("loc") or ()
        name = str(loc[0]) if loc else _field_named_in(str(err.get("msg", "")))
        message = str(err.get("msg", "Not valid."))
        message = message.removeprefix("Value error, ")
        out.setdefault(name, message)
    return out


def _field_named_in(message: str) -> str:
    for name in AppSettings.model_fields:
        if message.startswith(f"Value error, {name}") or message.startswith(name):
            return name
    return "__all__"
