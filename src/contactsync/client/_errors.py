"""The SDK's exception tree: every error the SDK raises, in one place.

    ClientError                     base of everything below
    ├── NetworkError                the server could not be reached (after the retries)
    ├── StateError                  a method called in a lifecycle state that forbids it
    └── ApiError                    the server answered with an error body (status, code, ...)
        ├── InvalidRequest          422/400: the request is malformed; resending it will not help
        │   ├── InvalidText, InvalidPhone, InvalidRegion, InvalidLevel, InvalidCursor, SelfRelation,
        │   │   TooManyFields, EmptyMessage, NotAGroup, UnknownUsers, TooManyMembers,
        │   └── InvalidPoint, InvalidTag, InvalidFrame, BadRequest, UnsupportedMediaType,
        │       MethodNotAllowed
        ├── Unauthorized            401: token missing, wrong or revoked (alias AuthError)
        │   └── InvalidCode         a wrong, expired or used login code
        ├── Forbidden               403: AdminRequired, Blocked, Restricted, NotGroupAdmin
        ├── NotFound                404: ConversationNotFound
        ├── Conflict                409: AfterBeyondEnd, BookChanged, DiscoveryKeyChanged,
        │                                BooksNotStored
        ├── Gone                    410: EventsTrimmed
        ├── RequestTimeout          408: SlowConsumer
        ├── TooLarge                413: BodyTooLarge, MessageTooLarge, TooManyPoints
        │   └── TooManyContacts     `max`: the most a request may hold
        ├── RateLimited             429, `retry_after` seconds
        │   ├── QuotaExceeded       the discovery quota (new numbers per 24 h)
        │   └── SendRateLimited, ProfileReadsExceeded, TooManyAttempts, TooManyConnections
        └── ServerError             5xx, `retry_after` when the server gave one
            ├── Overloaded          too busy for the request; it changed nothing
            ├── StoreUnavailable    the server's database is unreachable
            ├── CodeNotSent         the login code could not be sent
            └── InternalError       a bug on the server

Each class names the server's error codes it stands for (`codes`, taken from
`contactsync.errors`, the contract), and `error_for` picks the class for an answer by its code,
else by its status. The test suite checks that every code the server has is mapped here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from contactsync import errors as wire


class ClientError(Exception):
    """Base of every error the SDK raises."""


class NetworkError(ClientError):
    """The server could not be reached (after the configured retries)."""


class StateError(ClientError):
    """A method was called in a lifecycle state that does not allow it."""


class ApiError(ClientError):
    """The server answered with an error body `{"error": {code, message, details}}`."""

    codes: ClassVar[tuple[str, ...]] = ()
    statuses: ClassVar[tuple[int, ...]] = ()  # classes chosen by status for unknown codes

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self._retry_after = retry_after

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait before trying again (None: it did not say)."""
        if self._retry_after is not None:
            return self._retry_after
        value = self.details.get("retry_after") if isinstance(self.details, dict) else None
        return float(value) if isinstance(value, int | float) else None

    @property
    def refused(self) -> bool:
        """Refused for good: the same request can never succeed (a 4xx other than 401, which a
        new token may cure, and 429, which time cures), so it is dropped, not retried."""
        return 400 <= self.status < 500 and self.status not in (401, 429)


def _codes(*classes: type[wire.ApiError]) -> tuple[str, ...]:
    return tuple(cls.code for cls in classes)


# --- 4xx: the request -----------------------------------------------------------------------


class InvalidRequest(ApiError):
    """The request is malformed (422, 400); `details` says which field and why."""

    codes = _codes(wire.InvalidRequest)
    statuses: ClassVar[tuple[int, ...]] = (400, 422)


class InvalidText(InvalidRequest):
    """A text holds a character no store can keep (NUL): clean the text, not the request."""

    codes = _codes(wire.InvalidText)


class InvalidPoint(InvalidRequest):
    """Private discovery: a blinded point that is not a canonical ristretto255 element."""

    codes = _codes(wire.InvalidPoint)


class InvalidTag(InvalidRequest):
    """Private discovery: a tag that is not 32 hexadecimal digits."""

    codes = _codes(wire.InvalidTag)


class InvalidPhone(InvalidRequest):
    codes = _codes(wire.InvalidPhone)


class InvalidRegion(InvalidRequest):
    codes = _codes(wire.InvalidRegion)


class InvalidLevel(InvalidRequest):
    codes = _codes(wire.InvalidLevel)


class InvalidCursor(InvalidRequest):
    codes = _codes(wire.InvalidCursor)


class SelfRelation(InvalidRequest):
    codes = _codes(wire.SelfRelation)


class TooManyFields(InvalidRequest):
    codes = _codes(wire.TooManyFields)


class EmptyMessage(InvalidRequest):
    codes = _codes(wire.EmptyMessage)


class NotAGroup(InvalidRequest):
    codes = _codes(wire.NotAGroup)


class UnknownUsers(InvalidRequest):
    codes = _codes(wire.UnknownUsers)


class TooManyMembers(InvalidRequest):
    codes = _codes(wire.TooManyMembers)


class InvalidFrame(InvalidRequest):
    codes = _codes(wire.InvalidFrame)


class BadRequest(InvalidRequest):
    codes = _codes(wire.BadRequest)


class UnsupportedMediaType(InvalidRequest):
    codes = _codes(wire.UnsupportedMediaType)
    statuses = (415,)


class MethodNotAllowed(InvalidRequest):
    codes = _codes(wire.MethodNotAllowed)
    statuses = (405,)


class Unauthorized(ApiError):
    """401: the token is missing, wrong or revoked."""

    codes = _codes(wire.Unauthorized)
    statuses = (401,)


AuthError = Unauthorized  # the name before the tree had one class per code


class InvalidCode(Unauthorized):
    """The login code is wrong, expired or already used."""

    codes = _codes(wire.OtpInvalid)


class Forbidden(ApiError):
    codes = _codes(wire.Forbidden)
    statuses = (403,)


class AdminRequired(Forbidden):
    codes = _codes(wire.AdminOnly)


class Blocked(Forbidden):
    codes = _codes(wire.Blocked)


class Restricted(Forbidden):
    codes = _codes(wire.Restricted)


class NotGroupAdmin(Forbidden):
    codes = _codes(wire.NotGroupAdmin)


class NotFound(ApiError):
    codes = _codes(wire.NotFound)
    statuses = (404,)


class ConversationNotFound(NotFound):
    """No such conversation, or the caller is not a member of it."""

    codes = _codes(wire.ConversationNotFound)


class Conflict(ApiError):
    codes = _codes(wire.Conflict)
    statuses = (409,)


class AfterBeyondEnd(Conflict):
    codes = _codes(wire.AfterBeyondEnd)


class DiscoveryKeyChanged(Conflict):
    """Private discovery: the server's OPRF key changed; fetch the filter again, re-evaluate."""

    codes = _codes(wire.DiscoveryKeyChanged)


class BooksNotStored(Conflict):
    """The server runs private discovery and stores no address books (use /v1/discovery)."""

    codes = _codes(wire.BooksNotStored)


class BookChanged(Conflict):
    """The address book changed while it was being listed page by page: list it again."""

    codes = _codes(wire.BookChanged)


class Gone(ApiError):
    statuses = (410,)


class EventsTrimmed(Gone):
    """The events after this position were removed by the server's retention period: resync
    everything, then follow from the log's `last_seq`."""

    codes = _codes(wire.EventsTrimmed)


class RequestTimeout(ApiError):
    statuses = (408,)


class SlowConsumer(RequestTimeout):
    codes = _codes(wire.SlowConsumer)


class TooLarge(ApiError):
    statuses = (413,)


class BodyTooLarge(TooLarge):
    codes = _codes(wire.BodyTooLarge)


class MessageTooLarge(TooLarge):
    codes = _codes(wire.MessageTooLarge)


class TooManyPoints(TooLarge):
    """Private discovery: too many points or tags in one request."""

    codes = _codes(wire.TooManyPoints)


class TooManyContacts(TooLarge):
    """More contacts (or numbers) in one request than the server takes: `max` per request."""

    codes = _codes(wire.TooManyContacts)

    @property
    def max(self) -> int | None:
        value = self.details.get("max") if isinstance(self.details, dict) else None
        return int(value) if isinstance(value, int) and value > 0 else None


class RateLimited(ApiError):
    """429: too many requests; `retry_after` says for how long (seconds)."""

    codes = _codes(wire.RateLimited)
    statuses = (429,)


class QuotaExceeded(RateLimited):
    """The discovery quota: too many new numbers checked in 24 h; `retry_after` seconds."""

    codes = _codes(wire.DiscoveryQuotaExceeded)


class SendRateLimited(RateLimited):
    """Too many messages sent in the last minute."""

    codes = _codes(wire.SendRateLimited)


class ProfileReadsExceeded(RateLimited):
    """Too many profiles of strangers read in the last hour."""

    codes = _codes(wire.ProfileReadsExceeded)


class TooManyAttempts(RateLimited):
    codes = _codes(wire.OtpTooManyAttempts)


class TooManyConnections(RateLimited):
    codes = _codes(wire.TooManySockets)


# --- 5xx: the server ------------------------------------------------------------------------


class ServerError(ApiError):
    """The server failed or could not take the request now; retried before it is raised."""

    statuses = (500, 502, 503, 504)


class Overloaded(ServerError):
    """The server is too busy; it changed nothing. `retry_after` seconds."""

    codes = _codes(wire.Overloaded)


class StoreUnavailable(ServerError):
    """The server's database cannot be reached."""

    codes = _codes(wire.StoreUnavailable)


class CodeNotSent(ServerError):
    """The server could not send the login code (its SMS sender failed); try again."""

    codes = _codes(wire.OtpSenderFailed)


class InternalError(ServerError):
    codes = _codes(wire.InternalError)


def _tree(base: type[ApiError]) -> list[type[ApiError]]:
    found = [base]
    for sub in base.__subclasses__():
        found += _tree(sub)
    return found


BY_CODE: dict[str, type[ApiError]] = {code: cls for cls in _tree(ApiError) for code in cls.codes}
# A class answers for the statuses it names itself (its subclasses inherit them, not the role).
_BY_STATUS: dict[int, type[ApiError]] = {
    status: cls for cls in _tree(ApiError) for status in cls.__dict__.get("statuses", ())
}


def error_for(
    status: int, code: str, message: str, details: Any = None, retry_after: float | None = None
) -> ApiError:
    """The exception for an error answer: the class of its code, else of its status."""
    cls = BY_CODE.get(code) or _BY_STATUS.get(status) or ApiError
    return cls(status, code, message, details, retry_after=retry_after)
