"""Structured logs: one JSON object a line, each tied to the request that caused it.

- `JsonFormatter` writes `{"ts", "level", "logger", "msg", "request_id", ...extra}`. At INFO and
  above it masks anything that looks like a phone number in the message and the extra fields
  (`phone.mask`), so a stray `log.info("... %s", e164)` cannot leak a number, and anything that
  looks like a token or admin key, or a `token=`/`key=` query value (uvicorn's own line for a
  WebSocket handshake carries the raw query string); DEBUG keeps them for local
  troubleshooting. The text format masks the same.
- `edge.Edge` gives every HTTP request and WebSocket an id (the caller's `X-Request-ID` when
  it is a sane token, else a new one), keeps it in `request_id_var`, which the formatter reads,
  returns it in the `X-Request-ID` response header, and writes one access line per request to
  `access_log` with the route *template* (`route_template`: `/v1/admin/users/{user_id}`), never
  the raw path or query string: paths such as `/v1/relations/+E164` carry numbers.
- `configure(level, fmt)` installs the formatter on the root logger and routes uvicorn's own
  loggers through it; `contactsync serve` calls it and turns uvicorn's access log off.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from typing import Any, Literal

from starlette.types import Scope

from contactsync import phone as phones

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "contactsync_request_id", default=None
)

access_log = logging.getLogger("contactsync.access")

# What a phone number can look like in free text: E.164, or a long run of digits with the usual
# separators. Over-masking an id that looks like a number is the safe side of this trade.
_PHONE_LIKE = re.compile(r"\+?\d[\d ().\-]{6,18}\d")
# Bearer tokens (cs_…) and admin keys (csadmin_…) as services/secrets.py makes them, and the
# value of any query parameter that may carry a credential, whatever its form.
_SECRET_LIKE = re.compile(r"\b(cs|csadmin)_[A-Za-z0-9_\-]{20,}")
_SECRET_QUERY = re.compile(
    r"([?&](?:token|access_token|key|admin_key|api_key|secret)=)[^&\s\"'\]]*", re.IGNORECASE
)
# Fields we fill ourselves, never with a number: masking would only garble them (a request id
# is hex and may hold a run of digits).
_NOT_TEXT = frozenset({"ts", "level", "logger", "request_id"})
# uvicorn's ANSI-coloured copy of its message: noise in a JSON line.
_DROPPED = frozenset({"color_message"})

# LogRecord attributes that are not `extra` fields.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def redact(text: str) -> str:
    """`text` with every token-, key- and phone-number-like run masked."""

    def _mask(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) < 7:  # short runs are counts, ports, years: leave them
            return match.group(0)
        return phones.mask("+" + digits)

    text = _SECRET_QUERY.sub(r"\1***", text)
    text = _SECRET_LIKE.sub(r"\1_***", text)
    return _PHONE_LIKE.sub(_mask, text)


class TextFormatter(logging.Formatter):
    """A line for people; numbers, tokens and keys masked at INFO and above as in JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < logging.INFO:
            return super().format(record)
        # A copy: other handlers (tests' capture) see the record as it was. Only the message
        # and any trace are masked, not the timestamp (which looks like a number).
        masked = logging.makeLogRecord(record.__dict__)
        masked.msg, masked.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            masked.exc_text = self.formatException(record.exc_info)
        if masked.exc_text:
            masked.exc_text = redact(masked.exc_text)
        return super().format(masked)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per record; phone numbers masked at INFO and above."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            out["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out and key not in _DROPPED and key[0] != "_":
                out[key] = value if _jsonable(value) else repr(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.levelno >= logging.INFO:
            out = {
                key: (value if key in _NOT_TEXT else _clean(value)) for key, value in out.items()
            }
        return json.dumps(out, ensure_ascii=False, default=str)

    converter = time.gmtime  # type: ignore[assignment]  # timestamps in UTC


def _jsonable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool | type(None) | list | dict | tuple)


def configure(level: str = "info", fmt: Literal["json", "text"] = "json") -> None:
    """Send every log record (ours and uvicorn's) to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def route_template(scope: Scope) -> str:
    """The matched route's path template, or a fixed label when nothing matched.

    Raw paths are never used as labels or logged: they carry ids and phone numbers, and
    unmatched paths are unbounded (a scanner would explode metric cardinality).
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    if scope.get("endpoint") is not None and scope.get("root_path"):
        # A mounted app (the console's static files): the router names no route for it.
        return f"{scope['root_path']}/{{path}}"
    return "<unmatched>"
