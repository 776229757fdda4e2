"""Domain errors: one class per failure, each with a stable code and an HTTP status.

This module is part of the wire contract, shared by the server and the SDK: every code a client
can see is a class here (`code`, `status`, and the docstring or `message` for its meaning), and
the SDK maps each one to its own exception (`contactsync.client._errors`; a test checks that
none is missing). Services raise these; the HTTP layer turns them into the contract's JSON error
body in one place (`server/http/errors.py`), deriving HTTP headers from the error's fields
(`retry_after` -> Retry-After), and the WebSocket endpoint into a close code. Domain errors
carry no HTTP headers. Driver and library exceptions are translated at the boundary where they
happen.
"""

from __future__ import annotations

from typing import Any


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The contract's error body, `{"error": {code, message[, details]}}`: the one place its
    shape is spelled (HTTP responses, WebSocket error frames)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


class ApiError(Exception):
    """Base of every error a client may see."""

    code = "error"
    status = 400
    message = "The request failed."

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


class InvalidRequest(ApiError):
    code = "invalid_request"
    status = 422
    message = "The request is not valid."


class InvalidText(InvalidRequest):
    """A text holds a character no store can keep (NUL); `details` name the fields."""

    code = "invalid_text"
    message = "A text in the request holds a character that cannot be stored (U+0000)."


def invalid_input(message: str, details: list[dict[str, Any]]) -> InvalidRequest:
    """The error for failed validation: `invalid_text` when a failure is text no store can hold
    (so a client knows to clean the text, not fix the request's shape), else `invalid_request`.
    `details` are `{"field", "type", "message"}` items."""
    if any(item.get("type") == InvalidText.code for item in details):
        return InvalidText(details=details)
    return InvalidRequest(message, details=details)


class InvalidPhone(ApiError):
    code = "invalid_phone"
    status = 422
    message = "The phone number is not valid."

    def __init__(self, reason: str, *, field: str = "phone") -> None:
        super().__init__(
            f"The phone number is not valid ({reason}).",
            details={"field": field, "reason": reason},
        )
        self.reason = reason


class InvalidRegion(ApiError):
    code = "invalid_region"
    status = 422
    message = "The region is not an ISO 3166 alpha-2 code libphonenumber knows."


class Unauthorized(ApiError):
    """Answered with `WWW-Authenticate: Bearer` (RFC 6750)."""

    code = "unauthorized"
    status = 401
    message = "A valid bearer token is required."


class Forbidden(ApiError):
    code = "forbidden"
    status = 403
    message = "This is not allowed."


class AdminOnly(Forbidden):
    code = "admin_required"
    message = "This call needs the admin key."


class NotFound(ApiError):
    code = "not_found"
    status = 404
    message = "Not found."


class Conflict(ApiError):
    code = "conflict"
    status = 409
    message = "The request conflicts with the current state."


class BookChanged(Conflict):
    code = "book_changed"
    message = "The address book changed since this listing began; list it again from the start."


class BodyTooLarge(ApiError):
    code = "body_too_large"
    status = 413
    message = "The request body is too large."


class TooManyContacts(ApiError):
    code = "too_many_contacts"
    status = 413
    message = "Too many contacts in one request."


class RateLimited(ApiError):
    code = "rate_limited"
    status = 429
    message = "Too many requests; try again later."

    def __init__(self, retry_after: int, message: str | None = None, **kwargs: Any) -> None:
        retry_after = max(1, int(retry_after))
        kwargs.setdefault("details", {"retry_after": retry_after})
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class OtpInvalid(ApiError):
    code = "invalid_code"
    status = 401
    message = "The code is wrong, expired or already used."


class OtpTooManyAttempts(ApiError):
    code = "too_many_attempts"
    status = 429
    message = "Too many wrong codes; request a new one."


class OtpSenderFailed(ApiError):
    code = "otp_delivery_failed"
    status = 502
    message = "The code could not be sent; try again."


class StoreUnavailable(ApiError):
    """The database did not answer in time or the connection to it was lost; the request
    changed nothing (its transaction never committed). Retry after."""

    code = "store_unavailable"
    status = 503
    message = "The database is not reachable."

    def __init__(self, message: str | None = None, *, retry_after: int = 2, **kwargs: Any) -> None:
        retry_after = max(1, int(retry_after))
        kwargs.setdefault("details", {"retry_after": retry_after})
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Overloaded(ApiError):
    """The server is too busy to take the request now; it changed nothing. Retry after."""

    code = "overloaded"
    status = 503
    message = "The server is busy; try again shortly."

    def __init__(self, retry_after: int = 1, message: str | None = None, **kwargs: Any) -> None:
        retry_after = max(1, int(retry_after))
        kwargs.setdefault("details", {"retry_after": retry_after})
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Blocked(Forbidden):
    code = "blocked"
    message = "One of you has blocked the other."


class Restricted(Forbidden):
    code = "restricted"
    message = "A restricted user may only communicate with users paired to them."


class DiscoveryQuotaExceeded(RateLimited):
    code = "discovery_quota_exceeded"
    message = "The discovery quota (new numbers checked) is used up for now."


class SendRateLimited(RateLimited):
    code = "send_rate_limited"
    message = "Too many messages sent in the last minute."


class ProfileReadsExceeded(RateLimited):
    code = "profile_read_quota_exceeded"
    message = "Too many profiles of strangers read in the last hour."


class InvalidLevel(ApiError):
    code = "invalid_level"
    status = 422
    message = "An access level must be an integer from 0 (public) to 63."


class SelfRelation(ApiError):
    code = "self_relation"
    status = 422
    message = "A user cannot hold a relation with, block or pair with themselves."


class TooManyFields(ApiError):
    code = "too_many_fields"
    status = 422
    message = "A profile holds at most 64 fields."


# --- conversations, messages, sync, preferences ------------------------------------------


class ConversationNotFound(NotFound):
    """Also what a non-member gets, so the answer does not tell whether the id exists."""

    code = "conversation_not_found"
    message = "No such conversation."


class MessageTooLarge(ApiError):
    code = "message_too_large"
    status = 413
    message = "The message body is larger than the server allows."


class EmptyMessage(ApiError):
    code = "empty_message"
    status = 422
    message = "The message body is empty."


class NotAGroup(ApiError):
    code = "not_a_group"
    status = 422
    message = "Only a group has a name, a description and changing members."


class UnknownUsers(ApiError):
    code = "unknown_users"
    status = 422
    message = "Some of the user ids are not registered users."


class TooManyMembers(ApiError):
    code = "too_many_members"
    status = 422
    message = "The group would have more members than the server allows."


class NotGroupAdmin(Forbidden):
    code = "not_group_admin"
    message = "Only a group admin may remove other members."


class InvalidCursor(ApiError):
    code = "invalid_cursor"
    status = 422
    message = "The cursor is not valid; start again without one."


class InvalidFrame(ApiError):
    code = "invalid_frame"
    status = 400
    message = "The WebSocket frame is not a JSON object this server understands."


class AfterBeyondEnd(ApiError):
    code = "after_beyond_end"
    status = 409
    message = "`after` is beyond the last event of this user; resume from `last_seq` or 0."


class EventsTrimmed(ApiError):
    code = "events_trimmed"
    status = 410
    message = (
        "Events after `after` were removed by the retention period; resync everything, then "
        "follow from `last_seq`."
    )


class SlowConsumer(ApiError):
    code = "slow_consumer"
    status = 408
    message = "The client did not read its events in time; reconnect with the last seq."


class TooManySockets(ApiError):
    code = "too_many_connections"
    status = 429
    message = "This user already has the maximum number of live sockets on this server."


# --- private discovery -------------------------------------------------------------------


class DiscoveryKeyChanged(Conflict):
    """The client evaluated or resolved under an OPRF key version the server no longer uses:
    it must fetch the filter again (which names the key version in force) and re-evaluate."""

    code = "discovery_key_changed"
    message = "The discovery key has changed; fetch the filter again and re-evaluate."


class InvalidPoint(ApiError):
    code = "invalid_point"
    status = 422
    message = "A point is not a base64 canonical ristretto255 group element."


class InvalidTag(ApiError):
    code = "invalid_tag"
    status = 422
    message = "A tag is not 32 hexadecimal digits."


class TooManyPoints(ApiError):
    code = "too_many_points"
    status = 413
    message = "Too many points or tags in one request."


class BooksNotStored(Conflict):
    """Private discovery mode: the server keeps no address book, so uploads are refused."""

    code = "books_not_stored"
    message = (
        "This server runs private discovery: address books are not stored. "
        "Use /v1/discovery (the SDK does so by itself)."
    )


# --- answered by the HTTP layer itself (routing, media types, bugs) -------------------------


class BadRequest(ApiError):
    code = "bad_request"
    status = 400
    message = "The request could not be read."


class MethodNotAllowed(ApiError):
    code = "method_not_allowed"
    status = 405
    message = "This method is not allowed here."


class UnsupportedMediaType(ApiError):
    code = "unsupported_media_type"
    status = 415
    message = "The request body must be JSON."


class InternalError(ApiError):
    """A bug on the server: logged there with its trace, never shown to the client."""

    code = "internal_error"
    status = 500
    message = "Something went wrong on the server."


def every_error() -> list[type[ApiError]]:
    """Every error class of the contract (the SDK's mapping test walks this)."""
    found: list[type[ApiError]] = []
    pending: list[type[ApiError]] = [ApiError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls is not ApiError]
