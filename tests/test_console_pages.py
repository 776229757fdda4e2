"""The console pages operators look for (issue 16.6): the push outbox (by state, with the
error, retry), a user's address book (masked), conversations, relations and recent events;
formatted figures, message and conversation counts, the current hour labelled on the chart."""

from __future__ import annotations

import re

import sqlalchemy as sa

from contactsync import phone as phones
from contactsync.server.console.routes import chart
from contactsync.server.store.tables import push_outbox
from tests.conftest import Api
from tests.test_console import ANN, BOB, post, sign_in

CLEO = "+14155550103"


async def test_figures_are_formatted_and_messages_and_conversations_counted(api: Api) -> None:
    ann, ann_token = await api.user_with_token(ANN, "Ann")
    bob, bob_token = await api.user_with_token(BOB, "Bob")
    contacts = [{"phone": f"+1415556{n:04d}"} for n in range(1234)]
    r = await api.client.post("/v1/addressbook", json={"contacts": contacts}, headers=ann_token)
    assert r.status_code == 200, r.text
    dm = await api.client.post(
        "/v1/conversations", json={"kind": "dm", "members": [bob["user_id"]]}, headers=ann_token
    )
    assert dm.status_code in (200, 201), dm.text
    for n in range(2):
        sent = await api.client.post(
            f"/v1/conversations/{dm.json()['id']}/messages",
            json={"body": f"hi {n}", "client_msg_id": f"m{n}"},
            headers=ann_token,
        )
        assert sent.status_code in (200, 201), sent.text
    await sign_in(api)
    page = (await api.client.get("/console/overview")).text
    assert re.search(r'id="stat-entries">1,234<', page)
    assert re.search(r'id="stat-conversations">1<', page)
    assert re.search(r'id="stat-messages">2<', page)
    user = (await api.client.get(f"/console/users/{ann['user_id']}")).text
    assert 'id="book-size">1,234 entries' in user


def test_the_current_hour_is_labelled_on_the_chart() -> None:
    hours = [h * 3600 * 1000 for h in range(24)]
    drawn = chart(hours, {"uploads": [0] * 23 + [40046], "joins": [0] * 24})
    labels = drawn["labels"]
    assert labels[-1]["text"] == "now"
    last_bar = max(b["x"] for b in drawn["bars"])
    assert labels[-1]["x"] > last_bar - 30  # under the last slot
    assert len(labels) == 8 and all(re.fullmatch(r"\d\dh", lab["text"]) for lab in labels[:-1])
    assert drawn["ticks"][-1]["text"] == "40,046"


async def test_a_users_page_shows_their_book_conversations_relations_and_events(
    api: Api,
) -> None:
    ann, ann_token = await api.user_with_token(ANN, "Ann")
    bob = await api.create_user(BOB, "Bob")
    r = await api.client.post(
        "/v1/addressbook",
        json={"contacts": [{"phone": BOB, "name": "Bobby"}, {"phone": CLEO, "name": "Cleo"}]},
        headers=ann_token,
    )
    assert r.status_code == 200, r.text
    dm = await api.client.post(
        "/v1/conversations", json={"kind": "dm", "members": [bob["user_id"]]}, headers=ann_token
    )
    assert dm.status_code in (200, 201), dm.text
    rel = await api.client.put(
        f"/v1/relations/{bob['user_id']}", json={"contact": True}, headers=ann_token
    )
    assert rel.status_code in (200, 201), rel.text
    await sign_in(api)
    page = (await api.client.get(f"/console/users/{ann['user_id']}")).text
    book = page[page.index('id="book"') : page.index("</table>", page.index('id="book"'))]
    # names and masked numbers; the registered one links to its user
    assert "Bobby" in book and "Cleo" in book
    assert BOB not in page and CLEO not in page
    assert phones.mask(BOB) in book and phones.mask(CLEO) in book
    assert f'href="/console/users/{bob["user_id"]}">user {bob["user_id"]}' in book
    conversations = page[page.index('id="conversations"') :]
    assert f'href="/console/users/{bob["user_id"]}">Bob</a>' in conversations
    relations = page[page.index('id="relations"') :]
    assert ">Bob</a>" in relations
    events = page[page.index('id="events"') :]
    assert "conversation.created" in events


async def test_outbox_page_lists_by_state_shows_the_error_and_retries(api: Api) -> None:
    ann = await api.create_user(ANN)
    async with api.ctx.tx() as tx:
        for seq, state, error in (
            (1, "failed", "HTTP 500 from https://hooks.example/push"),
            (2, "failed", "timed out after 10 s"),
            (3, "pending", None),
        ):
            await tx.conn.execute(
                sa.insert(push_outbox).values(
                    user_id=ann["user_id"],
                    seq=seq,
                    state=state,
                    attempts=8 if state == "failed" else 1,
                    next_attempt_at=tx.now + 3_600_000,
                    last_error=error,
                    created_at=tx.now,
                    updated_at=tx.now,
                )
            )
    csrf = await sign_in(api)
    page = (await api.client.get("/console/outbox")).text
    assert "HTTP 500 from https://hooks.example/push" in page
    assert "timed out after 10 s" in page
    assert re.search(r"failed <span class=\"count\">2</span>", page)
    assert re.search(r"pending <span class=\"count\">1</span>", page)
    pending = (await api.client.get("/console/outbox?state=pending")).text
    assert "timed out" not in pending and ">#3<" in pending
    # retrying needs the CSRF token; without it nothing changes
    refused = await post(api, "/console/outbox/retry", {})
    assert refused.status_code == 403
    async with api.ctx.read() as tx:
        first = await tx.conn.scalar(sa.select(push_outbox.c.id).where(push_outbox.c.seq == 1))
    one = await post(api, "/console/outbox/retry", {"csrf": csrf, "id": str(first)})
    assert one.status_code == 303 and one.headers["location"].endswith("done=retried")
    async with api.ctx.read() as tx:
        states = dict(
            (await tx.conn.execute(sa.select(push_outbox.c.seq, push_outbox.c.state))).all()
        )
    assert states[1] == "pending" and states[2] == "failed"
    everything = await post(api, "/console/outbox/retry", {"csrf": csrf})
    assert everything.status_code == 303
    async with api.ctx.read() as tx:
        left = await tx.conn.scalar(
            sa.select(sa.func.count()).where(push_outbox.c.state == "failed")
        )
    assert left == 0
    empty = (await api.client.get("/console/outbox?state=failed")).text
    assert 'id="outbox-empty"' in empty
