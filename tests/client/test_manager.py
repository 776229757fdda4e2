"""ContactsManager against the real app in process, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from contactsync.client import (
    Contact,
    ContactsManager,
    Event,
    ManagerState,
    MemorySource,
    StateError,
    SyncProgress,
    VCardSource,
)
from contactsync.server.clock import ManualClock
from contactsync.server.services import app_settings
from tests.client.conftest import Factory, book
from tests.conftest import Api
from tests.live import eventually

ME = "+14155550100"


def people(n: int, start: int = 0) -> list[Contact]:
    return [
        Contact(f"id{i}", f"Person {i}", (f"(415) 555-{1000 + i:04d}",))
        for i in range(start, start + n)
    ]


async def test_first_sync_then_nothing_to_send(api: Api, managers: Factory) -> None:
    friend = await api.create_user("+14155551003", "Friend")
    _, me = await api.user_with_token(ME)
    source = MemorySource(people(7) + [Contact("bad", "Junk", ("ask Bob",))])
    progress: list[SyncProgress] = []
    manager = managers(source, me, batch_size=3, on_progress=progress.append)
    first = await manager.sync()
    assert (first.total, first.uploaded, first.batches, first.created) == (8, 7, 3, 7)
    assert first.failed == 0 and first.error is None and first.bytes > 0
    # with a progress callback the total is counted before the first batch goes
    assert [(p.done, p.total) for p in progress] == [(3, 7), (6, 7), (7, 7)]
    assert [r["user_id"] for r in first.registered] == [friend["user_id"]]
    assert [(i.contact_id, i.phone, i.reason) for i in first.invalid] == [
        ("bad", "ask Bob", "not_a_number")
    ]
    server = await book(api, me)
    assert server["+14155551003"] == "Person 3" and len(server) == 7

    again = await manager.sync()
    assert (again.total, again.unchanged, again.uploaded, again.batches, again.bytes) == (
        8,
        8,
        0,
        0,
        0,
    )
    assert len(again.invalid) == 1  # still reported: the source still holds it
    assert manager.last_metrics is again


async def test_the_progress_total_is_known_before_the_first_batch_and_never_grows(
    api: Api, managers: Factory, tmp_path: Path
) -> None:
    """Issue 16.7: every report of a sync carries the same total, the entries it ends with
    having sent (deletions included), on a first sync, a resync and a reinstall's first
    sync (which removes what the server held and the book no longer does)."""
    _, me = await api.user_with_token(ME)
    contacts = people(11)
    source = MemorySource(contacts)
    progress: list[SyncProgress] = []
    manager = managers(source, me, batch_size=3, on_progress=progress.append)

    def totals(metrics: Any) -> set[int]:
        assert metrics.error is None, metrics.error
        assert [p.done for p in progress][-1] == metrics.uploaded
        assert [p.batches for p in progress] == list(range(1, metrics.batches + 1))
        return {p.total for p in progress}

    first = await manager.sync()
    assert (first.uploaded, first.batches) == (11, 4)
    assert totals(first) == {11}

    # 4 deletions, 2 renames, 3 additions: 9 entries in 3 batches
    progress.clear()
    source.set(
        [Contact(c.id, "Renamed", c.phones) for c in contacts[4:6]]
        + contacts[6:]
        + people(3, start=20)
    )
    later = await manager.sync()
    assert (later.uploaded, later.deleted, later.batches) == (9, 4, 3)
    assert totals(later) == {9}

    # a reinstall: a new store learns the server's book, and its first sync removes the 4
    # numbers the book lost meanwhile along with sending the 2 it gained
    progress.clear()
    await manager.close()
    source.set(contacts[8:] + people(3, start=20) + people(2, start=40))
    again = managers(
        source, me, batch_size=3, on_progress=progress.append, state_dir=tmp_path / "new"
    )
    fresh = await again.sync()
    assert (fresh.uploaded, fresh.deleted) == (6, 4)
    assert totals(fresh) == {6}
    kept = [*range(8, 11), *range(20, 23), 40, 41]
    assert set(await book(api, me)) == {f"+1415555{1000 + i}" for i in kept}


async def test_edits_deletions_and_renames_reach_the_server(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    contacts = people(5)
    source = MemorySource(contacts)
    manager = managers(source, me)
    await manager.sync()
    contacts[0] = Contact("id0", "Renamed", contacts[0].phones)  # rename
    del contacts[1]  # deletion
    contacts[2] = Contact("id3", "Person 3", ("(415) 555-1003", "+44 20 7946 0958"))
    contacts.append(Contact("new", "Newcomer", ("415 555 1999",)))
    source.set(contacts)
    metrics = await manager.sync()
    assert (metrics.created, metrics.updated, metrics.deleted) == (2, 1, 1)
    assert await book(api, me) == {
        "+14155551000": "Renamed",
        "+14155551002": "Person 2",
        "+14155551003": "Person 3",
        "+442079460958": "Person 3",
        "+14155551004": "Person 4",
        "+14155551999": "Newcomer",
    }
    assert metrics.uploaded == 4 and metrics.unchanged == 2


async def test_shared_number_survives_deleting_one_holder(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    source = MemorySource(
        [Contact("a", "Mum", ("+14155551234",)), Contact("b", "Home", ("415-555-1234",))]
    )
    manager = managers(source, me)
    await manager.sync()
    assert await book(api, me) == {"+14155551234": "Mum"}
    source.set([Contact("b", "Home", ("415-555-1234",))])
    await manager.sync()
    assert await book(api, me) == {"+14155551234": "Home"}


async def test_force_sync_replaces_the_server_book(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    manager = managers(MemorySource(people(5)), me, batch_size=2)
    await manager.sync()
    # something else wrote to the book behind the manager's back
    r = await api.client.post(
        "/v1/addressbook", json={"contacts": [{"phone": "+14155559999", "name": "X"}]}, headers=me
    )
    assert r.status_code == 200
    metrics = await manager.force_sync()
    assert metrics.forced and metrics.batches == 3 and metrics.uploaded == 5
    assert sorted(await book(api, me)) == [f"+1415555{1000 + i}" for i in range(5)]
    assert (await manager.sync()).uploaded == 0


async def test_a_new_store_removes_what_the_server_has_but_the_device_does_not(
    api: Api, managers: Factory, tmp_path: Path
) -> None:
    _, me = await api.user_with_token(ME)
    await managers(MemorySource(people(4)), me, state_dir=tmp_path / "one").sync()
    # a reinstall: a fresh local store, a smaller book
    metrics = await managers(MemorySource(people(2)), me, state_dir=tmp_path / "two").sync()
    assert metrics.deleted == 2 and metrics.created == 0
    assert sorted(await book(api, me)) == ["+14155551000", "+14155551001"]


async def test_a_new_store_sends_no_removal_for_a_number_later_in_the_scan(
    api: Api, managers: Factory, tmp_path: Path
) -> None:
    _, me = await api.user_with_token(ME)
    await managers(MemorySource(people(4)), me, state_dir=tmp_path / "one").sync()
    # a reinstall whose first chunk holds none of the server's numbers: removals wait for the
    # end of the scan, so 1002 and 1003 (read later) are neither removed nor added again
    source = MemorySource(people(2, start=4) + people(2, start=2) + people(2, start=6))
    metrics = await managers(source, me, state_dir=tmp_path / "two", batch_size=2).sync()
    assert (metrics.deleted, metrics.created, metrics.batches) == (2, 4, 3)
    assert sorted(await book(api, me)) == [f"+1415555{n}" for n in range(1002, 1008)]


async def test_denied_access_uploads_and_deletes_nothing(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    source = MemorySource(people(3))
    manager = managers(source, me)
    await manager.sync()
    source.set([])
    source.access = False
    metrics = await manager.sync()
    assert metrics.error == "no_access" and metrics.uploaded == 0
    assert len(await book(api, me)) == 3


async def test_device_books_are_separate(api: Api, managers: Factory, tmp_path: Path) -> None:
    _, me = await api.user_with_token(ME)
    phone = managers(MemorySource(people(2)), me, device_id="phone")
    tablet = managers(MemorySource(people(3, 10)), me, device_id="tablet")
    await phone.sync()
    await tablet.sync()
    assert phone.store_path != tablet.store_path
    assert len(await book(api, me, "phone")) == 2
    assert len(await book(api, me, "tablet")) == 3
    assert await book(api, me) == {}


class LoseResponses(httpx.AsyncBaseTransport):
    """The request reaches the server and is applied, then the connection drops before the
    answer arrives — for the first `count` address-book uploads."""

    def __init__(self, inner: httpx.AsyncBaseTransport, count: int) -> None:
        self.inner = inner
        self.count = count
        self.uploads = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path == "/v1/addressbook":
            self.uploads += 1
            if self.uploads <= self.count:
                await response.aread()
                raise httpx.ReadError("connection reset", request=request)
        return response


async def test_lost_answers_are_retried_with_the_same_batch_id(api: Api, managers: Factory) -> None:
    await api.create_user("+14155551001", "Friend")
    _, me = await api.user_with_token(ME)
    flaky = LoseResponses(httpx.ASGITransport(app=api.app), count=2)
    manager = managers(MemorySource(people(4)), me, transport=flaky, batch_size=2)
    metrics = await manager.sync()
    assert metrics.error is None and metrics.batches == 2 and flaky.uploads == 4
    assert metrics.created == 4  # the replayed batch answers with its first result
    registered = [e for e in await api.events(me) if e["type"] == "contacts.registered"]
    assert len(registered) == 1  # applied once, not once per attempt
    assert len(await book(api, me)) == 4


async def test_server_down_leaves_the_outbox_for_next_time(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    flaky = LoseResponses(httpx.ASGITransport(app=api.app), count=100)
    source = MemorySource(people(3))
    down = managers(source, me, transport=flaky)
    metrics = await down.sync()
    assert metrics.error is not None and "ReadError" in metrics.error and metrics.failed == 3
    await down.close()
    # the app restarts; the outbox is resent with its batch_id, nothing is doubled
    up = managers(source, me)
    resumed = await up.sync()
    assert resumed.error is None and resumed.uploaded == 3 and resumed.batches == 1
    assert len(await book(api, me)) == 3
    assert (await up.sync()).uploaded == 0


async def test_the_discovery_quota_keeps_the_rest_queued_until_it_refills(
    api: Api, managers: Factory, clock: ManualClock
) -> None:
    _, me = await api.user_with_token(ME)
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"discovery_quota": 3, "discovery_quota_refill_per_day": 24})
    manager = managers(MemorySource(people(5)), me, batch_size=2)
    before = time.time()
    metrics = await manager.sync()
    # the quota's Retry-After is hours: not waited out, not an error, the rest kept queued
    assert metrics.error is None and metrics.failed == 0
    assert metrics.uploaded == 2 and metrics.waiting == 3 and metrics.total == 5
    assert metrics.quota is not None and metrics.quota["setting"] == "discovery_quota"
    assert metrics.retry_after is not None and 60 < metrics.retry_after <= 3600
    assert metrics.resume_at is not None
    assert before + metrics.retry_after <= metrics.resume_at <= time.time() + metrics.retry_after
    assert len(await book(api, me)) == 2
    # once the bucket has refilled, the next sync sends what waited, and only that
    clock.advance(metrics.retry_after * 3)
    again = await manager.sync()
    assert again.error is None and again.waiting == 0
    assert again.uploaded == 3 and len(await book(api, me)) == 5


async def test_a_started_manager_sends_what_waited_once_the_quota_refills(
    api: Api, managers: Factory, clock: ManualClock
) -> None:
    _, me = await api.user_with_token(ME)
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"discovery_quota": 3, "discovery_quota_refill_per_day": 24})
    manager = managers(MemorySource(people(5)), me, batch_size=2, watch_interval=0.02)
    now = time.time()
    manager._book.clock = lambda: now  # the client's wall clock, moved on below
    first = await manager.start()
    assert first.waiting == 3 and len(await book(api, me)) == 2
    assert first.retry_after is not None and first.retry_after > 60
    assert first.resume_at == now + first.retry_after
    # the refill time comes: the server's clock and the client's move on alike
    clock.advance(first.retry_after * 3)
    now += first.retry_after * 3

    async def sent_and_recorded() -> bool:
        # the run records its metrics after the server has stored the last batch
        metrics = manager.last_metrics
        return await book_size(api, me, 5) and metrics is not None and metrics.waiting == 0

    await eventually(sent_and_recorded, timeout=10)
    assert manager.last_metrics is not None and manager.last_metrics.waiting == 0


async def book_size(api: Api, me: dict[str, str], size: int) -> bool:
    return len(await book(api, me)) == size


async def test_server_limit_below_batch_size_replans(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    async with api.ctx.tx() as tx:
        await app_settings.update(tx, {"max_contacts_per_request": 2})
    metrics = await managers(MemorySource(people(5)), me, batch_size=10).sync()
    assert metrics.error is None and metrics.batches == 3 and len(await book(api, me)) == 5


async def test_logout_wipes_local_state_and_the_next_account_sees_nothing(
    api: Api, managers: Factory
) -> None:
    _, a = await api.user_with_token(ME)
    _, b = await api.user_with_token("+14155550200")
    first = managers(MemorySource(people(3)), a)
    await first.sync()
    path = first.store_path
    assert path is not None and path.exists()
    await first.logout()
    assert not path.exists() and first.state is ManagerState.UNINITIALISED
    assert (await api.client.get("/v1/me", headers=a)).status_code == 401
    with pytest.raises(StateError):
        first.drop_local_database_connection()
    second = managers(MemorySource(people(1, 50)), b)
    metrics = await second.sync()
    assert metrics.total == 1 and metrics.uploaded == 1
    assert second.store_path != path
    assert list(second.store_path.parent.iterdir()) == [second.store_path] or not any(
        p.name.startswith(path.name) for p in second.store_path.parent.iterdir()
    )
    assert await book(api, b) == {"+14155551050": "Person 50"}


async def test_drop_and_reconnect_local_database(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    source = MemorySource(people(2))
    manager = managers(source, me)
    await manager.sync()
    manager.drop_local_database_connection()
    with pytest.raises(StateError):
        await manager.sync()
    manager.reconnect_local_database()
    source.set(people(3))
    assert (await manager.sync()).uploaded == 1


async def test_vcard_file_with_malformed_cards(api: Api, managers: Factory, tmp_path: Path) -> None:
    _, me = await api.user_with_token(ME)
    path = tmp_path / "book.vcf"
    path.write_text(
        "BEGIN:VCARD\nVERSION:3.0\nUID:1\nFN:Good\nTEL:415 555 0111\nTEL:12\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nthis is not a property\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nUID:2\nFN:Also good\nTEL:+49 30 1234567\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nFN:Never ends\nTEL:415 555 0112\n"
    )
    metrics = await managers(VCardSource(path), me).sync()
    reasons = sorted((i.reason, i.where or "", i.phone or "") for i in metrics.invalid)
    assert reasons == [
        ("malformed_vcard", "book.vcf:18", ""),
        ("malformed_vcard", "book.vcf:8", ""),
        ("too_short", "", "12"),
    ]
    assert await book(api, me) == {"+14155550111": "Good", "+49301234567": "Also good"}


async def test_contact_joined_reaches_the_callback(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    manager = managers(MemorySource(people(2)), me)
    seen: list[Event] = []
    manager.on_contact_joined(seen.append)
    await manager.sync()
    await api.create_user("+14155551001", "Newcomer")
    assert await manager.poll_events() >= 1
    assert [(e.type, e.data["name"]) for e in seen] == [("contact.joined", "Person 1")]
    assert await manager.poll_events() == 0  # the cursor is kept


async def test_start_follows_events_and_source_changes(api: Api, managers: Factory) -> None:
    _, me = await api.user_with_token(ME)
    source = MemorySource(people(1))
    manager = managers(source, me, events=True, watch_interval=0.02, poll_interval=0.02)
    joined: asyncio.Queue[Event] = asyncio.Queue()
    manager.on_contact_joined(joined.put_nowait)
    await manager.start()
    source.set(people(2))
    manager.notify_changed()
    for _ in range(200):
        if len(await book(api, me)) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(await book(api, me)) == 2
    await api.create_user("+14155551001", "Joiner")
    event = await asyncio.wait_for(joined.get(), 5)
    assert event.data["name"] == "Person 1"
    sdk_tasks = {"contactsync-watch", "contactsync-events", "contactsync-answer"}
    running = [t.get_name() for t in asyncio.all_tasks() if not t.done()]
    assert {"contactsync-watch", "contactsync-events"} <= set(running)
    await manager.logout()  # stops the listener and the watcher
    assert manager.listener_state == "stopped"
    running = [t.get_name() for t in asyncio.all_tasks() if not t.done()]
    assert not sdk_tasks & set(running), running


async def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ContactsManager(MemorySource(), server="http://x", token="t", region="XX")
    with pytest.raises(ValueError):
        ContactsManager(MemorySource(), server="http://x", token="t", batch_size=0)


async def test_a_new_region_reads_local_numbers_again(
    api: Api, managers: Factory, tmp_path: Path
) -> None:
    _, me = await api.user_with_token(ME)
    source = MemorySource([Contact("1", "Local", ("030 1234567",))])
    us = await managers(source, me, region="US").sync()
    assert us.invalid[0].reason != "" and await book(api, me) == {}
    de = await managers(source, me, region="DE").sync()
    assert de.invalid == [] and await book(api, me) == {"+49301234567": "Local"}


async def wait_for_book(api: Api, headers: dict[str, str], size: int) -> dict[str, Any]:
    for _ in range(250):
        current = await book(api, headers)
        if len(current) == size:
            return current
        await asyncio.sleep(0.02)
    return await book(api, headers)


async def test_a_changed_file_and_granted_access_trigger_a_sync(
    api: Api, managers: Factory, tmp_path: Path
) -> None:
    _, me = await api.user_with_token(ME)
    path = tmp_path / "book.vcf"
    card = "BEGIN:VCARD\nVERSION:3.0\nUID:{0}\nFN:P{0}\nTEL:415 555 01{0:02d}\nEND:VCARD\n"
    path.write_text(card.format(1))
    manager = managers(VCardSource(path), me, watch_interval=0.02)
    await manager.start()
    assert len(await book(api, me)) == 1
    path.write_text(card.format(1) + card.format(2))
    assert len(await wait_for_book(api, me, 2)) == 2

    _, other = await api.user_with_token("+14155550300")
    denied = MemorySource(people(2), access=False)
    waiting = managers(denied, other, watch_interval=0.02, state_dir=tmp_path / "other")
    assert (await waiting.start()).error == "no_access"
    denied.access = True
    assert len(await wait_for_book(api, other, 2)) == 2


async def test_an_old_form_in_the_book_syncs_as_the_current_number(
    api: Api, managers: Factory
) -> None:
    friend = await api.create_user("+525512345678", "Amigo")
    _, me = await api.user_with_token(ME)
    source = MemorySource([Contact("mx", "Amigo", ("+52 1 55 1234 5678",))])
    metrics = await managers(source, me).sync()
    assert metrics.invalid == []
    assert metrics.rewritten == [{"phone": "+52 1 55 1234 5678", "e164": "+525512345678"}]
    assert [r["user_id"] for r in metrics.registered] == [friend["user_id"]]
    assert await book(api, me) == {"+525512345678": "Amigo"}


def _vcf(cards: list[tuple[str, str]]) -> str:
    """A file as a program writes it (the layout a resync splits fastest): (name, phone)."""
    return "".join(
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:u{i}\r\nFN:{name}\r\nTEL;TYPE=CELL:{phone}\r\n"
        "END:VCARD\r\n"
        for i, (name, phone) in enumerate(cards)
    )


async def test_resyncs_of_a_big_file_send_each_edit_and_never_a_stale_card(
    api: Api, managers: Factory, tmp_path: Path
) -> None:
    # enough cards for the source to remember the keys of the cards it read (a resync
    # hashes only the edited ones) and for the sync to skip known cards whole-list
    _, me = await api.user_with_token(ME)
    cards = [(f"Person {i}", f"(415) 555-{2000 + i:04d}") for i in range(300)]
    path = tmp_path / "book.vcf"
    path.write_text(_vcf(cards))
    manager = managers(VCardSource(path), me)
    first = await manager.sync()
    assert first.uploaded == 300 and first.error is None

    original = list(cards)
    cards[3] = ("Person 3 (edited)", cards[3][1])  # renamed
    cards[150] = (cards[150][0], "415.555.2999")  # a new number: read and sent as E.164
    cards[299] = ("Person 299", "+1 415 555 2998")  # both
    path.write_text(_vcf(cards))
    edits = await manager.sync()
    assert edits.error is None and edits.unchanged == 297
    server = await book(api, me)
    assert server["+14155552003"] == "Person 3 (edited)"
    assert server["+14155552999"] == "Person 150" and "+14155552150" not in server
    assert server["+14155552998"] == "Person 299" and "+14155552299" not in server
    assert len(server) == 300

    # back to texts the source met before (it still knows their keys; the store does not
    # hold them any more): read again and sent again, as on the first sync
    path.write_text(_vcf(original))
    back = await manager.sync()
    assert back.error is None and back.unchanged == 297
    server = await book(api, me)
    assert server["+14155552003"] == "Person 3"
    assert server["+14155552150"] == "Person 150" and "+14155552999" not in server
    assert server["+14155552299"] == "Person 299" and "+14155552998" not in server
    assert len(server) == 300

    # a card written twice, then one removed: the copy keeps its number on the server
    path.write_text(_vcf(original) + _vcf([original[5]]).replace("UID:u0", "UID:u5"))
    twice = await manager.sync()
    assert twice.error is None and twice.total == 301
    path.write_text(_vcf(original[:5] + original[6:]) + _vcf([original[5]]).replace("u0", "u5"))
    once = await manager.sync()
    assert once.error is None and once.total == 300
    server = await book(api, me)
    assert server["+14155552005"] == "Person 5" and len(server) == 300
    assert (await manager.sync()).uploaded == 0
