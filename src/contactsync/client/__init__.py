"""The contactsync Python SDK.

    from contactsync.client import ContactsManager, VCardSource

    manager = ContactsManager(VCardSource("contacts.vcf"), server=URL, token=TOKEN, region="US")
    metrics = await manager.start()      # sync now, then follow events and file changes
    manager.on_contact_joined(lambda event: print(event.data["name"], "joined"))

`SyncContactsManager` offers the same without `await`.
"""

from __future__ import annotations

from contactsync.client._auth import mint_token, request_otp, verify_otp
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
    Event,
    InvalidEntry,
    ManagerState,
    SourceProblem,
    SyncMetrics,
    SyncProgress,
)
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
    "CsvSource",
    "Event",
    "InvalidEntry",
    "ManagerState",
    "MemorySource",
    "NetworkError",
    "Profile",
    "RateLimited",
    "RetryPolicy",
    "SourceProblem",
    "StateError",
    "SyncContactsManager",
    "SyncMetrics",
    "SyncProgress",
    "VCardSource",
    "default_state_dir",
    "mint_token",
    "open_source",
    "request_otp",
    "verify_otp",
]
