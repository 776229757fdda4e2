"""The contactsync Python SDK.

    from contactsync.client import ContactsManager, VCardSource

    manager = ContactsManager(VCardSource("contacts.vcf"), server=URL, token=TOKEN, region="US")
    metrics = await manager.start()      # sync now, then follow events and file changes
    manager.on_contact_joined(lambda event: print(event.data["name"], "joined"))

    summary = await manager.conversations.sync_all(consent=["allowed"])
    chat = await manager.conversations.new_dm(friend_user_id)
    await chat.send("hi")
    await manager.preferences.update(notify_contact_joined=False)

`SyncContactsManager` offers the same without `await`.
"""

from __future__ import annotations

from contactsync.client._auth import mint_token, request_otp, verify_otp
from contactsync.client._conversations import Conversation, Conversations
from contactsync.client._errors import (
    ApiError,
    AuthError,
    ClientError,
    NetworkError,
    RateLimited,
    StateError,
)
from contactsync.client._http import ApiClient, RetryPolicy
from contactsync.client._manager import ContactsManager, default_state_dir
from contactsync.client._models import (
    Contact,
    ConversationView,
    Event,
    InvalidEntry,
    ManagerState,
    Message,
    SourceProblem,
    SyncMetrics,
    SyncProgress,
    SyncSummary,
)
from contactsync.client._preferences import Preferences
from contactsync.client._profiles import ContactSynchronizer, Profile
from contactsync.client._sources import (
    ContactSource,
    CsvSource,
    MemorySource,
    VCardSource,
    open_source,
)
from contactsync.client._sync import SyncContactsManager

__all__ = [
    "ApiClient",
    "ApiError",
    "AuthError",
    "ClientError",
    "Contact",
    "ContactSource",
    "ContactSynchronizer",
    "ContactsManager",
    "Conversation",
    "ConversationView",
    "Conversations",
    "CsvSource",
    "Event",
    "InvalidEntry",
    "ManagerState",
    "Message",
    "MemorySource",
    "NetworkError",
    "Preferences",
    "Profile",
    "RateLimited",
    "RetryPolicy",
    "SourceProblem",
    "StateError",
    "SyncContactsManager",
    "SyncMetrics",
    "SyncProgress",
    "SyncSummary",
    "VCardSource",
    "default_state_dir",
    "mint_token",
    "open_source",
    "request_otp",
    "verify_otp",
]
