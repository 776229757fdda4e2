"""Wire models shared by the server and the SDK. Inputs refuse unknown fields and are strict
(a JSON client sends `true`, not `"yes"` or `1`); outputs are built from service results
explicitly, so internal columns (token hashes) cannot leak.

Every text a request carries is one of the `Text`-based types below, so a character no store
can hold is refused in one place, and every integer is bounded to what a BIGINT column holds.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from contactsync.errors import InvalidText

# --- text and numbers every request shares -----------------------------------------------

# PostgreSQL cannot hold NUL in text or JSON (SQLite can, so both refuse it for the same
# answer everywhere). Lone surrogates never get this far: pydantic refuses them as invalid
# JSON or `string_unicode`. The error type is the stable code `invalid_text` (InvalidText).


def storable(value: str) -> str:
    """`value` unchanged, or the `invalid_text` validation error if a store cannot hold it."""
    if "\x00" in value:
        raise PydanticCustomError(
            InvalidText.code, "Text may not contain the NUL character (U+0000)."
        )
    return value


STORABLE = AfterValidator(storable)
Text = Annotated[str, STORABLE]

MAX_INT64 = 2**63 - 1
MIN_INT64 = -(2**63)
# Any integer that is stored or compared in SQL: a BIGINT's range, else 422 before the driver
# (which would fail on it) sees it.
Int64 = Annotated[int, Field(ge=MIN_INT64, le=MAX_INT64)]
# Sequence numbers, cursors, `after` positions.
Seq = Annotated[int, Field(ge=0, le=MAX_INT64)]

# --- limits: the one place each bound of the contract is written ----------------------------

MAX_NAME = 200  # a user's, a contact's or a group's name (characters, after stripping)
MAX_DESCRIPTION = 2000  # a group's description

Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_NAME), STORABLE]
RawPhone = Annotated[str, StringConstraints(min_length=1, max_length=64), STORABLE]
Region = Annotated[str, StringConstraints(min_length=2, max_length=2), STORABLE]
DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=128), STORABLE]
ShortKey = Annotated[str, StringConstraints(min_length=1, max_length=64), STORABLE]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=False)


class Output(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- users, devices, sessions ------------------------------------------------------------


Audience = Literal["everybody", "contacts", "nobody"]


class CreateUser(Input):
    phone: RawPhone
    name: Name | None = None
    region: Region | None = None
    # the new user's choices, in force from the join (None: the app default / everybody)
    discoverable_by: Audience | None = None
    announce_join_to: Audience | None = None


class PatchUser(Input):
    name: Name | None = None
    region: Region | None = None
    restricted: bool | None = None


class MintToken(Input):
    device_id: DeviceId


class UserOut(Output):
    user_id: int
    phone: str
    name: str | None = None
    region: str | None = None
    restricted: bool = False
    created_at: int


class TokenOut(Output):
    user_id: int
    device_id: str
    token: str


class MeOut(Output):
    user_id: int
    phone: str
    name: str | None = None
    region: str | None = None
    restricted: bool = False
    device_id: str


class OtpRequest(Input):
    phone: RawPhone
    region: Region | None = None


class OtpRequested(Output):
    expires_in: int
    # where the code went: "console" (the server log), "webhook" (the app's SMS sender)
    sent_via: str | None = None


class OtpVerify(Input):
    phone: RawPhone
    region: Region | None = None
    code: Annotated[str, StringConstraints(min_length=1, max_length=12), STORABLE]
    device_id: DeviceId


class OtpVerified(Output):
    user_id: int
    token: str
    new_user: bool


# --- events ------------------------------------------------------------------------------


class EventOut(Output):
    seq: int
    type: str
    at: str
    data: dict[str, Any]


class EventsPage(Output):
    events: list[EventOut]
    next_after: int


class ErrorBody(Output):
    code: str
    message: str
    details: Any = None


class ErrorOut(Output):
    error: ErrorBody


class Health(Output):
    status: str = Field(examples=["ok"])


# --- address book ------------------------------------------------------------------------

ContactName = Name


class ContactIn(Input):
    phone: Annotated[str, StringConstraints(max_length=64), STORABLE]
    name: ContactName | None = None
    destroy: bool = False


class AddressBookUpload(Input):
    contacts: list[ContactIn]
    region: Region | None = None
    device_id: DeviceId | None = None
    force: bool = False
    batch_id: ShortKey | None = None
    final: bool = True


class InvalidContact(Output):
    index: int
    phone: str
    reason: str


class RegisteredContact(Output):
    user_id: int
    phone: str
    name: str | None = None


class RewrittenContact(Output):
    """An uploaded number in an old form of a renumbered plan, stored as the current number
    it became (`from` as written, `to` in E.164; docs/numbers.md)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    index: int
    from_: str = Field(alias="from")
    to: str


class AddressBookResult(Output):
    batch_id: str
    final: bool = True
    created: int
    updated: int
    deleted: int
    unchanged: int
    staged: int | None = None
    invalid: list[InvalidContact]
    registered: list[RegisteredContact]
    rewritten: list[RewrittenContact] = []


class BookContact(Output):
    phone: str
    name: str | None = None


class AddressBookPage(Output):
    contacts: list[BookContact]
    next_cursor: str | None = None


class RegisteredUsers(Output):
    users: list[dict[str, Any]]


# --- profiles and relations --------------------------------------------------------------

# Ids are BIGINTs: a larger number in a path or body is refused (422) before it reaches the
# database driver, which would fail on it.
MAX_ID = MAX_INT64
UserId = Annotated[int, Field(ge=1, le=MAX_ID)]

# Levels arrive as anything and are checked by the service, so a bad one gets the stable
# `invalid_level` code (with the offending value) rather than a generic validation error.


def _int64_when_int(value: object) -> object:
    # Checked before the union: a strict float also takes an integer, so 10**30 would
    # otherwise come back as a float (and -10**30 did on SQLite).
    if isinstance(value, int) and not isinstance(value, bool):
        if not MIN_INT64 <= value <= MAX_INT64:
            raise PydanticCustomError(
                "int64_range", "An integer value must be within -2**63 and 2**63-1."
            )
    return value


FieldValue = Annotated[
    Annotated[str, StringConstraints(strict=True, max_length=4096), STORABLE]
    | Annotated[int, Field(strict=True, ge=MIN_INT64, le=MAX_INT64)]
    | Annotated[float, Field(strict=True, allow_inf_nan=False)]
    | Annotated[bool, Field(strict=True)],
    BeforeValidator(_int64_when_int),
]


class ProfileFieldIn(Input):
    value: FieldValue
    level: Any = None


class PatchProfile(Input):
    fields: dict[
        Annotated[str, StringConstraints(max_length=64), STORABLE], ProfileFieldIn | None
    ] = Field(max_length=64)


class ProfileFieldOut(Output):
    value: Any
    level: int


class OwnProfileOut(Output):
    user_id: int
    fields: dict[str, ProfileFieldOut]


class ProfileOut(Output):
    user_id: int
    fields: dict[str, Any]


class PutRelation(Input):
    contact: bool | None = None
    subscribe: bool | None = None
    access_levels: list[Any] | None = None
    mode: Literal["replace", "merge"] = "replace"


class SyncRelations(Input):
    phones: list[Any]
    contact: bool | None = None
    subscribe: bool | None = None
    access_levels: list[Any] | None = None
    mode: Literal["replace", "merge"] = "replace"
    region: Region | None = None


class RelationOut(Output):
    user_id: int | None = None
    phone: str | None = None
    pending: bool
    contact: bool
    subscribe: bool
    access_levels: list[int]
    updated_at: int | None = None


class RelationsPage(Output):
    relations: list[RelationOut]
    next_cursor: str | None = None


class InvalidPhoneOut(Output):
    index: int
    phone: str | None = None
    reason: str


class SyncRelationsOut(Output):
    created: int
    updated: int
    unchanged: int
    removed: int
    pending: int
    invalid: list[InvalidPhoneOut]
    rewritten: list[RewrittenContact] = []


class BlocksPage(Output):
    blocked: list[int]
    next_cursor: str | None = None


class PairIn(Input):
    a: UserId
    b: UserId


class PairOut(Output):
    a: int
    b: int
    paired: bool


# --- conversations, messages, consent, sync, preferences ---------------------------------

BigId = UserId
ConsentState = Literal["allowed", "unknown", "denied"]
CONSENT_STATES: tuple[ConsentState, ...] = get_args(ConsentState)
GroupName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME), STORABLE
]
Description = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=MAX_DESCRIPTION), STORABLE
]
MAX_GROUP_MEMBERS = 1000


class CreateConversation(Input):
    kind: Literal["dm", "group"]
    members: Annotated[list[BigId], Field(max_length=MAX_GROUP_MEMBERS)]
    name: GroupName | None = None
    description: Description | None = None


class PatchConversation(Input):
    name: GroupName | None = None
    description: Description | None = None


class AddMembers(Input):
    user_ids: Annotated[list[BigId], Field(min_length=1, max_length=MAX_GROUP_MEMBERS)]


class SetConsent(Input):
    state: ConsentState


class SendMessage(Input):
    body: Text
    client_msg_id: ShortKey


class SyncRequest(Input):
    consent: Annotated[list[ConsentState], Field(min_length=1, max_length=3)] = ["allowed"]
    # {conversation_id: the last seq the client holds}; JSON object keys are strings.
    cursors: dict[Text, Seq] = Field(default_factory=dict)
    cursor: Annotated[Text | None, Field(max_length=200)] = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100
    message_limit: Annotated[int, Field(ge=1, le=1000)] = 100


class Preferences(Output):
    """Every preference of a user with its default (GET/PUT /v1/me/preferences). Unknown keys
    are refused; the types are strict (a boolean is `true`/`false`, not `"yes"` or `1`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # The consent a new conversation starts with for this user, when it was started by someone
    # whose number is in one of the user's address books, and when it was not.
    consent_from_contacts: Literal["allowed", "unknown"] = "allowed"
    consent_from_others: Literal["unknown", "denied"] = "unknown"
    # Notification choices, read by push delivery and by discovery.
    notify_messages: bool = True
    notify_message_requests: bool = True
    notify_conversations: bool = True
    notify_contact_joined: bool = True
    # Who may learn that this user is registered (None: the app's discoverable_by_default),
    # and who hears "X joined" when they register (services/discoverability.py).
    discoverable_by: Literal["everybody", "contacts", "nobody"] | None = None
    announce_join_to: Literal["everybody", "contacts", "nobody"] = "everybody"


class DeviceSyncRequest(Input):
    reason: Annotated[Text | None, Field(max_length=200)] = None


class MemberOut(Output):
    user_id: int
    role: str


class ConversationOut(Output):
    id: int
    kind: str
    name: str | None = None
    description: str | None = None
    created_by: int | None = None
    created_at: int
    updated_at: int
    last_seq: int
    members: list[MemberOut]
    member_count: int
    consent: ConsentState
    role: str
    joined_seq: int


class MessageOut(Output):
    conversation_id: int
    seq: int
    kind: Literal["text", "system"]
    sender_id: int | None = None
    body: str | None = None
    sent_at: int
    client_msg_id: str | None = None
    data: dict[str, Any] | None = None


class ConversationsPage(Output):
    conversations: list[ConversationOut]
    next_cursor: str | None = None


class MessagesPage(Output):
    messages: list[MessageOut]
    next_after: int


class SyncedConversation(ConversationOut):
    messages: list[MessageOut]
    has_more: bool
    cursor: int


class SyncExcluded(Output):
    id: int
    member: bool
    consent: ConsentState | None = None


class SyncOut(Output):
    eligible: int
    synced: int
    conversations: list[SyncedConversation]
    excluded: list[SyncExcluded]
    next_cursor: str | None = None


class DeviceOut(Output):
    device_id: str
    created_at: int
    active: bool


class DevicesOut(Output):
    devices: list[DeviceOut]


class TokensRevoked(Output):
    revoked: int


class BookCleared(Output):
    deleted: int


class PairsOut(Output):
    user_id: int
    paired_with: list[int]


class PushOutboxPage(Output):
    items: list[dict[str, Any]]
    counts: dict[str, int]
    next_cursor: str | None = None


class PushRequeued(Output):
    requeued: int


class SyncRequested(Output):
    seq: int | None = None
    device_id: str


# --- private discovery (docs/privacy.md) ---------------------------------------------------

MAX_POINTS = 100_000  # the hard bound; the app's max_contacts_per_request is the real limit
Point = Annotated[str, StringConstraints(max_length=64), STORABLE]


class DiscoveryInfo(Output):
    mode: Literal["stored", "private"]
    key_version: int
    version: int


class EvaluateIn(Input):
    key_version: Seq
    points: Annotated[list[Point], Field(max_length=MAX_POINTS)]


class EvaluateOut(Output):
    key_version: int
    points: list[str]


class ResolveIn(Input):
    key_version: Seq
    tags: Annotated[list[Point], Field(max_length=MAX_POINTS)]


class ResolvedUser(Output):
    tag: str
    user_id: int
    profile: dict[str, Any]


class ResolveOut(Output):
    users: list[ResolvedUser]


class FilterDelta(Output):
    key_version: int
    since: int
    version: int
    changes: str  # base64 of 9-byte records (contactsync.tagfilter)


class DiscoveryContacts(Output):
    key_version: int
    keys: list[str]  # filter keys, 16 hex digits each


class KeyRotated(Output):
    key_version: int
    done: bool  # in force; else still tagging users (GET /v1/admin/discovery/rotation)


class RotationStatus(Output):
    key_version: int  # in force
    rotating_to: int | None
    tagged: int  # users tagged under `rotating_to` (all of them when none)
    users: int
