"""Profiles and relations from the SDK: one user's profile with the relation the caller holds
to it, and the bulk synchroniser for thousands of numbers in one call.

    profile = manager.profile("+14155550123")       # a number (registered or not) or a user id
    await profile.subscribe().set_access_levels([1]).save()
    sync = manager.synchronizer()
    sync.sync(numbers)                                # queued
    await sync.sync_now()                             # one POST /v1/relations/sync
    await sync.sync_as_update(more, access_levels=[2])  # merge: only adds levels
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from contactsync.client._http import ApiClient
from contactsync.client._wire import answer, body
from contactsync.protocol import (
    ProfileOut,
    PutRelation,
    RelationOut,
    SyncRelations,
    SyncRelationsOut,
)

__all__ = ["Profile", "ContactSynchronizer"]


class Profile:
    """Another user's profile (by user id or number) and the caller's relation to it.
    Setters only record the change; `save()` sends it in one request."""

    def __init__(self, api: ApiClient, target: int | str) -> None:
        self.api = api
        self.target = target
        self.relation: dict[str, Any] | None = None
        self.fields: dict[str, Any] = {}
        self._change: dict[str, Any] = {}

    @property
    def _path(self) -> str:
        return f"/v1/relations/{quote(str(self.target), safe='')}"

    def contact(self, value: bool = True) -> Profile:
        self._change["contact"] = value
        return self

    def subscribe(self, value: bool = True) -> Profile:
        """Receive `profile.updated` events for this user."""
        self._change["subscribe"] = value
        return self

    def set_access_levels(self, levels: Iterable[int], *, merge: bool = False) -> Profile:
        """Which of the caller's own profile levels this user may see (replace, or merge)."""
        self._change["access_levels"] = sorted(set(levels))
        self._change["mode"] = "merge" if merge else "replace"
        return self

    async def save(self) -> dict[str, Any]:
        """Send the recorded changes; returns the relation as the server now holds it."""
        raw = await self.api.request("PUT", self._path, json_body=body(PutRelation, self._change))
        answer(RelationOut, raw)
        self.relation = dict(raw)
        self._change = {}
        return self.relation

    async def fetch(self) -> Profile:
        """Load the relation, and the profile fields the caller may see (registered users)."""
        raw = await self.api.request("GET", self._path)
        relation = answer(RelationOut, raw)
        self.relation = dict(raw)
        if relation.user_id is not None:
            profile = answer(
                ProfileOut, await self.api.request("GET", f"/v1/users/{relation.user_id}/profile")
            )
            self.fields = dict(profile.fields)
        return self

    async def remove(self) -> None:
        await self.api.request("DELETE", self._path)
        self.relation = None


class ContactSynchronizer:
    """Queue numbers, then set contact/subscribe/access levels for all of them in one call."""

    def __init__(
        self,
        api: ApiClient,
        *,
        region: str | None = None,
        contact: bool | None = True,
        subscribe: bool | None = None,
        access_levels: Iterable[int] | None = None,
    ) -> None:
        self.api = api
        self.region = region
        self.contact = contact
        self.subscribe = subscribe
        self.access_levels = None if access_levels is None else sorted(set(access_levels))
        self._queue: dict[str, None] = {}  # ordered, without repeats

    @property
    def queued(self) -> list[str]:
        return list(self._queue)

    async def sync(self, numbers: Iterable[str], now: bool = False) -> dict[str, Any] | None:
        """Queue numbers; with `now`, send the queue at once."""
        for number in numbers:
            self._queue[number] = None
        return await self.sync_now() if now else None

    async def sync_now(self) -> dict[str, Any]:
        """Send the queue in replace mode (access levels become exactly the configured ones)."""
        return await self._send(list(self._queue), "replace", self.access_levels, clear=True)

    async def sync_as_update(
        self, numbers: Iterable[str], *, access_levels: Iterable[int] | None = None
    ) -> dict[str, Any]:
        """Merge mode: only adds access levels, never removes any."""
        levels = self.access_levels if access_levels is None else sorted(set(access_levels))
        return await self._send(list(numbers), "merge", levels, clear=False)

    async def _send(
        self, phones: list[str], mode: str, levels: list[int] | None, *, clear: bool
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"phones": phones, "mode": mode}
        for key, value in (
            ("contact", self.contact),
            ("subscribe", self.subscribe),
            ("access_levels", levels),
            ("region", self.region),
        ):
            if value is not None:
                fields[key] = value
        request = body(SyncRelations, fields)
        raw = await self.api.request("POST", "/v1/relations/sync", json_body=request)
        answer(SyncRelationsOut, raw)
        result = dict(raw)
        if clear:
            self._queue.clear()
        return result
