"""The SDK's conversations, preferences and sync requests against the real app in process, on
SQLite and PostgreSQL: what the local store holds after each call, and what the server holds."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from contactsync.client import (
    ApiError,
    ContactsManager,
    MemorySource,
    NetworkError,
    RetryPolicy,
)
from tests.client.conftest import Factory
from tests.conftest import Api

A, B, C = "+14155550101", "+14155550102", "+14155550103"
ALL = ("allowed", "unknown", "denied")


async def people(api: Api, managers: Factory, *phones: str) -> list[tuple[int, ContactsManager]]:
    out = []
    for phone in phones:
        user, headers = await api.user_with_token(phone)
        out.append((user["user_id"], managers(MemorySource([]), headers)))
    return out


async def server_messages(api: Api, headers: dict[str, str], cid: int) -> list[dict[str, Any]]:
    r = await api.client.get(f"/v1/conversations/{cid}/messages?limit=500", headers=headers)
    assert r.status_code == 200, r.text
    return list(r.json()["messages"])


async def test_sync_all_brings_new_conversations_and_only_new_messages(
    api: Api, managers: Factory
) -> None:
    (a_id, a), (b_id, b) = await people(api, managers, A, B)
    chat = await a.conversations.new_dm(b_id)
    for text in ("one", "two", "three"):
        await chat.send(text)

    # B's book does not hold A: the DM waits in B's "unknown" (message requests)
    allowed = await b.conversations.sync_all()
    assert (allowed.eligible, allowed.synced, allowed.messages) == (0, 0, 0)
    assert await b.conversations.list() == []

    first = await b.conversations.sync_all(consent=["allowed", "unknown"])
    assert (first.eligible, first.synced, first.messages) == (1, 1, 3)
    [view] = await b.conversations.list()
    assert (view.id, view.kind, view.consent, view.member) == (chat.id, "dm", "unknown", True)
    assert set(view.member_ids) == {a_id, b_id} and view.cursor == view.last_seq
    stored = await b.conversation(chat.id).messages()
    assert [(m.body, m.sender_id) for m in stored] == [
        ("one", a_id),
        ("two", a_id),
        ("three", a_id),
    ]
    assert [m.seq for m in stored] == sorted(m.seq for m in stored)

    again = await b.conversations.sync_all(consent=["allowed", "unknown"])
    assert (again.eligible, again.synced, again.messages, again.requests) == (1, 0, 0, 1)

    await chat.send("four")
    later = await b.conversations.sync_all(consent=["allowed", "unknown"])
    assert (later.synced, later.messages) == (1, 1)
    assert [m.body for m in await b.conversation(chat.id).messages()][-1] == "four"
    # the sender's own store holds what it sent, in order, nothing pending
    mine = await a.conversation(chat.id).messages()
    assert [m.body for m in mine] == ["one", "two", "three", "four"]
    assert not any(m.pending for m in mine)


async def test_sync_all_pages_conversations_and_long_histories(api: Api, managers: Factory) -> None:
    (_, a), (b_id, b), (c_id, c) = await people(api, managers, A, B, C)
    groups = [await a.conversations.new_group([b_id, c_id], name=f"g{i}") for i in range(3)]
    for i in range(7):
        await groups[1].send(f"m{i}")
    summary = await b.conversations.sync_all(consent=ALL, page_size=1, message_limit=2)
    assert (summary.eligible, summary.synced) == (3, 3)
    assert summary.requests >= 3 + 3  # three pages, then more rounds for the long history
    texts = [m.body for m in await b.conversation(groups[1].id).messages() if m.kind == "text"]
    assert texts == [f"m{i}" for i in range(7)]
    # one conversation per page, two messages per answer: nothing lost, nothing twice
    assert {v.name for v in await b.conversations.list()} == {"g0", "g1", "g2"}
    assert (await c.conversations.sync_all(consent=ALL)).messages == summary.messages


async def test_excluded_conversations_update_the_local_store(api: Api, managers: Factory) -> None:
    (a_id, a), (b_id, b), (c_id, _) = await people(api, managers, A, B, C)
    group = await a.conversations.new_group([b_id, c_id], name="Trip")
    dm = await a.conversations.new_dm(b_id)
    await group.send("hello group")
    await dm.send("hello dm")
    await b.conversations.sync_all(consent=ALL)

    # B denies the DM on another device, and A removes B from the group
    other = await api.token(b_id, "tablet")
    r = await api.client.put(
        f"/v1/conversations/{dm.id}/consent", json={"state": "denied"}, headers=other
    )
    assert r.status_code == 200, r.text
    a_headers = {"Authorization": f"Bearer {a.api.token}"}
    r = await api.client.delete(f"/v1/conversations/{group.id}/members/{b_id}", headers=a_headers)
    assert r.status_code == 204, r.text

    summary = await b.conversations.sync_all(consent=["allowed", "unknown"])
    excluded = {e["id"]: e for e in summary.excluded}
    assert excluded[dm.id]["consent"] == "denied"
    assert excluded[group.id]["member"] is False
    views = {v.id: v for v in await b.conversations.list()}
    assert views[dm.id].consent == "denied" and views[group.id].member is False
    # the history B saw stays readable; the group is no longer synced
    texts = [m.body for m in await b.conversation(group.id).messages() if m.kind == "text"]
    assert texts == ["hello group"]
    await group.send("after B left")
    assert (await b.conversations.sync_all(consent=ALL)).messages == 0
    assert [v.id for v in await b.conversations.list(consent=["denied"])] == [dm.id]
    assert a_id in views[dm.id].member_ids


async def test_conversation_sync_fetches_one_conversation(api: Api, managers: Factory) -> None:
    (_, a), (b_id, b), (_, c) = await people(api, managers, A, B, C)
    group = await a.conversations.new_group([b_id], name="Pair")
    await group.send("x")
    await group.send("y")
    mine = b.conversation(group.id)
    assert await mine.info() is None
    new = await mine.sync()
    assert [m.body for m in new if m.kind == "text"] == ["x", "y"]
    info = await mine.info()
    assert info is not None and info.name == "Pair" and info.cursor == info.last_seq
    assert await mine.sync() == []
    await group.update(name="Pair 2")
    await group.send("z")
    new = await mine.sync()
    assert [m.kind for m in new] == ["system", "text"] and new[0].data["name"] == "Pair 2"
    assert (await mine.info()).name == "Pair 2"  # type: ignore[union-attr]

    # not a member: the same error as for an id never used, and nothing stored
    with pytest.raises(ApiError) as refused:
        await c.conversation(group.id).sync()
    assert (refused.value.status, refused.value.code) == (404, "conversation_not_found")
    assert await c.conversations.list() == []


async def test_conversations_sync_lists_changes_without_messages(
    api: Api, managers: Factory
) -> None:
    (_, a), (b_id, b) = await people(api, managers, A, B)
    dm = await a.conversations.new_dm(b_id)
    await dm.send("hi")
    changed = await b.conversations.sync()
    assert [(v.id, v.consent, v.cursor) for v in changed] == [(dm.id, "unknown", None)]
    assert await b.conversation(dm.id).messages() == []
    assert await b.conversations.sync() == []  # nothing changed since
    await b.conversation(dm.id).set_consent("allowed")
    assert [v.consent for v in await b.conversations.list()] == ["allowed"]
    # the conversation known without messages comes whole with the next sync_all
    summary = await b.conversations.sync_all()
    assert (summary.synced, summary.messages) == (1, 1)


async def test_live_events_keep_the_store_current(api: Api, managers: Factory) -> None:
    (a_id, a), (b_id, b) = await people(api, managers, A, B)
    # b holds a as a contact, so a's group messages come to b live (a stranger's would not)
    r = await api.client.put(
        f"/v1/relations/{a_id}",
        json={"contact": True},
        headers={"Authorization": f"Bearer {b.api.token}"},
    )
    assert r.status_code == 200, r.text
    group = await a.conversations.new_group([b_id], name="Live")
    await group.send("first")
    await group.send("second")
    joined: list[int] = []
    b.on_conversation(lambda e: joined.append(e.data["conversation"]["id"]))
    assert await b.poll_events() >= 1
    assert joined == [group.id]
    texts = [m.body for m in await b.conversation(group.id).messages() if m.kind == "text"]
    assert texts == ["first", "second"]
    # the events were contiguous, so the cursor moved with them: nothing left to sync
    summary = await b.conversations.sync_all(consent=ALL)
    assert (summary.synced, summary.messages) == (0, 0)


async def test_an_old_event_never_overwrites_a_newer_sync(api: Api, managers: Factory) -> None:
    (_, a), (b_id, b) = await people(api, managers, A, B)
    group = await a.conversations.new_group([b_id], name="Old name")
    await group.update(name="New name")
    await group.send("hello")
    await b.conversations.sync_all(consent=ALL)
    # the log still holds conversation.created with the old name and last_seq 0
    await b.poll_events()
    [view] = await b.conversations.list()
    assert (view.name, view.last_seq, view.cursor) == ("New name", 2, 2)
    texts = [m.body for m in await b.conversation(group.id).messages() if m.kind == "text"]
    assert texts == ["hello"]


class LostAnswers(httpx.AsyncBaseTransport):
    """The network between the SDK and the app: the first `lose` message posts reach the server
    but their answers are lost; while `down`, nothing gets through."""

    def __init__(self, inner: httpx.AsyncBaseTransport, lose: int = 0) -> None:
        self.inner = inner
        self.lose = lose
        self.down = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if request.method == "POST" and request.url.path.endswith("/messages") and self.lose:
            self.lose -= 1
            await response.aread()
            raise httpx.ReadError("connection reset", request=request)
        return response


async def test_a_send_whose_answer_was_lost_is_posted_once(
    api: Api, managers: Factory, tmp_path: Path
) -> None:
    (_, a), (b_id, _) = await people(api, managers, A, B)
    user, headers = await api.user_with_token("+14155550109")
    net = LostAnswers(httpx.ASGITransport(app=api.app), lose=2)
    sender = managers(MemorySource([]), headers, transport=net)
    dm = await sender.conversations.new_dm(b_id)
    message = await dm.send("only once")  # two lost answers, then the retry is answered
    assert message.body == "only once" and message.seq is not None
    texts = [m["body"] for m in await server_messages(api, headers, dm.id) if m["kind"] == "text"]
    assert texts == ["only once"]

    # the server unreachable: the message waits in the local store, then goes out once
    net.down = True
    with pytest.raises(NetworkError):
        await dm.send("while offline")
    waiting = await dm.messages()
    assert [(m.body, m.pending) for m in waiting][-1] == ("while offline", True)
    net.down = False
    summary = await sender.conversations.sync_all()
    assert summary.sent == 1
    texts = [m["body"] for m in await server_messages(api, headers, dm.id) if m["kind"] == "text"]
    assert texts == ["only once", "while offline"]
    assert not any(m.pending for m in await dm.messages())
    assert await sender.conversations.flush() == 0
    assert user["user_id"] != b_id


async def test_a_refused_send_leaves_nothing_waiting(api: Api, managers: Factory) -> None:
    (a_id, a), (b_id, b) = await people(api, managers, A, B)
    dm = await a.conversations.new_dm(b_id)
    b_headers = {"Authorization": f"Bearer {b.api.token}"}
    r = await api.client.put(f"/v1/blocks/{a_id}", headers=b_headers)
    assert r.status_code == 204, r.text
    with pytest.raises(ApiError) as refused:
        await dm.send("let me in")
    assert (refused.value.status, refused.value.code) == (403, "blocked")
    assert await dm.messages() == []
    assert (await a.conversations.sync_all(consent=ALL)).sent == 0
    with pytest.raises(ValueError):
        await a.conversations.sync_all(consent=["maybe"])


async def test_preferences_sync_update_and_events(api: Api, managers: Factory) -> None:
    user, headers = await api.user_with_token(A)
    phone = managers(MemorySource([]), headers)
    tablet = managers(MemorySource([]), await api.token(user["user_id"], "tablet"))
    assert await phone.preferences.get() is None
    prefs = await phone.preferences.sync()
    assert prefs["notify_contact_joined"] is True
    assert await phone.preferences.get() == prefs

    # mute "X joined" from the tablet; the phone learns it from its event log
    updated = await tablet.preferences.update(notify_contact_joined=False)
    assert updated["notify_contact_joined"] is False
    r = await api.client.get("/v1/me/preferences", headers=headers)
    assert r.json()["notify_contact_joined"] is False
    await phone.poll_events()
    assert (await phone.preferences.get())["notify_contact_joined"] is False  # type: ignore[index]

    # a bad value is refused whole: nothing changes, nothing stays pending
    with pytest.raises(ApiError) as refused:
        await phone.preferences.update(notify_messages="loud", consent_from_others="denied")
    assert (refused.value.status, refused.value.code) == (422, "invalid_request")
    assert (await phone.preferences.sync())["consent_from_others"] == "unknown"


async def test_preferences_changed_offline_are_sent_by_the_next_sync(
    api: Api, managers: Factory
) -> None:
    _, headers = await api.user_with_token(A)
    net = LostAnswers(httpx.ASGITransport(app=api.app))
    manager = managers(MemorySource([]), headers, transport=net, retry=RetryPolicy(attempts=1))
    await manager.preferences.sync()
    net.down = True
    with pytest.raises(NetworkError):
        await manager.preferences.update(notify_messages=False)
    assert (await manager.preferences.get())["notify_messages"] is False  # type: ignore[index]
    net.down = False
    assert (await manager.preferences.sync())["notify_messages"] is False
    r = await api.client.get("/v1/me/preferences", headers=headers)
    assert r.json()["notify_messages"] is False


async def test_a_sync_request_makes_the_other_device_sync(api: Api, managers: Factory) -> None:
    (a_id, a), (b_id, _) = await people(api, managers, A, B)
    net = LostAnswers(httpx.ASGITransport(app=api.app))
    phone_headers = await api.token(b_id, "phone")
    phone = managers(MemorySource([]), phone_headers, transport=net, retry=RetryPolicy(attempts=1))
    tablet = managers(MemorySource([]), await api.token(b_id, "tablet"))
    group = await a.conversations.new_group([b_id], name="Asked")
    await group.send("from A")
    await phone.poll_events()
    # the phone writes a message while its network is down: it waits in the phone's store
    net.down = True
    with pytest.raises(NetworkError):
        await phone.conversation(group.id).send("written offline")
    net.down = False

    await tablet.initialize()
    assert phone.store_path != tablet.store_path  # two devices of one user, two stores
    asked = await tablet.send_sync_request("new tablet")
    assert asked["device_id"] == "tablet"
    requests: list[Any] = []
    tablet.on_sync_requested(requests.append)
    await tablet.poll_events()  # its own request: seen, not answered
    assert len(requests) == 1 and tablet.last_sync_answer is None

    await phone.poll_events()  # asked: the phone syncs, sending what was waiting
    for _ in range(500):
        if phone.last_sync_answer is not None:
            break
        await asyncio.sleep(0.01)
    assert phone.last_sync_answer is not None
    assert (phone.last_sync_answer.eligible, phone.last_sync_answer.sent) == (1, 1)
    texts = [
        (m["sender_id"], m["body"])
        for m in await server_messages(api, phone_headers, group.id)
        if m["kind"] == "text"
    ]
    assert texts == [(a_id, "from A"), (b_id, "written offline")]
    await tablet.conversations.sync_all(consent=ALL)
    mine = [m.body for m in await tablet.conversation(group.id).messages() if m.kind == "text"]
    assert mine == ["from A", "written offline"]


async def test_logout_wipes_conversations_and_the_next_account_sees_none(
    api: Api, managers: Factory, tmp_path: Path
) -> None:
    (_, a), (b_id, b) = await people(api, managers, A, B)
    dm = await a.conversations.new_dm(b_id)
    await dm.send("private")
    await b.conversations.sync_all(consent=ALL)
    await b.preferences.sync()
    path = b.store_path
    assert path is not None and path.exists()
    assert b.conversations.last_summary is not None
    await b.logout()
    assert not path.exists() and b.conversations.last_summary is None
    _, headers = await api.user_with_token(C)
    other = managers(MemorySource([]), headers)
    assert await other.conversations.list() == []
    assert await other.conversation(dm.id).messages() == []
    with pytest.raises(ApiError):
        await other.conversation(dm.id).sync()
