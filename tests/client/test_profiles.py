"""Profiles and relations through the SDK, against the real app (SQLite and PostgreSQL)."""

from __future__ import annotations

from contactsync.client import MemorySource
from tests.client.conftest import Factory
from tests.conftest import Api


async def test_profile_access_levels_decide_what_the_other_sees(
    api: Api, managers: Factory
) -> None:
    a_user, a = await api.user_with_token("+14155550100", "Alice")
    b_user, b = await api.user_with_token("+14155550101", "Bob")
    alice = managers(MemorySource(), a)
    bob = managers(MemorySource(), b)
    await alice.initialize()
    await bob.initialize()
    await alice.set_my_profile({"status": ("hiking", 1), "bio": ("public", 0)})

    seen = await bob.profile(a_user["user_id"]).fetch()
    assert seen.fields == {"bio": "public"}  # level 1 is not granted to Bob yet

    relation = await alice.profile("+1 415 555 0101").contact().set_access_levels([1]).save()
    assert relation["user_id"] == b_user["user_id"] and relation["access_levels"] == [1]
    seen = await bob.profile(a_user["user_id"]).fetch()
    assert seen.fields == {"bio": "public", "status": "hiking"}

    await alice.profile(b_user["user_id"]).set_access_levels([]).save()
    assert (await bob.profile(a_user["user_id"]).fetch()).fields == {"bio": "public"}


async def test_pending_relation_for_an_unregistered_number(api: Api, managers: Factory) -> None:
    _, a = await api.user_with_token("+14155550100")
    alice = managers(MemorySource(), a)
    await alice.initialize()
    profile = alice.profile("+14155550199").contact().subscribe()
    relation = await profile.save()
    assert relation["pending"] and relation["subscribe"] and relation["user_id"] is None
    joined = await api.create_user("+14155550199")
    fetched = await alice.profile("+14155550199").fetch()
    assert fetched.relation is not None and fetched.relation["user_id"] == joined["user_id"]


async def test_synchronizer_queues_then_replaces_or_merges(api: Api, managers: Factory) -> None:
    _, a = await api.user_with_token("+14155550100")
    friend = await api.create_user("+14155550102")
    alice = managers(MemorySource(), a)
    await alice.initialize()
    sync = alice.synchronizer(access_levels=[1])
    assert await sync.sync(["415 555 0102", "415 555 0103"]) is None
    assert sync.queued == ["415 555 0102", "415 555 0103"]
    first = await sync.sync_now()
    assert first["created"] == 2 and first["pending"] == 1 and sync.queued == []
    merged = await sync.sync_as_update(["+14155550102"], access_levels=[2])
    assert merged["updated"] == 1
    relation = (await alice.profile(friend["user_id"]).fetch()).relation
    assert relation is not None and relation["access_levels"] == [1, 2]
    replaced = await sync.sync(["+14155550102"], now=True)
    assert replaced is not None and replaced["updated"] == 1
    relation = (await alice.profile(friend["user_id"]).fetch()).relation
    assert relation is not None and relation["access_levels"] == [1]
    bad = await sync.sync(["not a number"], now=True)
    assert bad is not None and [i["reason"] for i in bad["invalid"]] == ["not_a_number"]
