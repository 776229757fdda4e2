"""Opaque page cursors, one encoding for every list: URL-safe base64 of compact JSON holding
the sort key of the last row sent. Anything this server did not make is 422 `invalid_cursor`
(clients start again without a cursor), never a 500 and never a wrong page."""

from __future__ import annotations

import base64
import json
from typing import Any

from contactsync.errors import InvalidCursor

MAX_INT = 2**63 - 1
MAX_TEXT = 64


def encode(**values: int | str) -> str:
    raw = json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, **kinds: type[int] | type[str]) -> dict[str, Any]:
    """The values named in `kinds`, each of its type (ints within 0..2^63-1)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
        out = {key: values[key] for key in kinds}
        if not all(_fits(out[key], kind) for key, kind in kinds.items()):
            raise ValueError
        return out
    except (ValueError, KeyError, TypeError):  # binascii.Error and JSON errors are ValueErrors
        raise InvalidCursor(details={"cursor": cursor[:100]}) from None


def _fits(value: Any, kind: type[int] | type[str]) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_INT
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT
