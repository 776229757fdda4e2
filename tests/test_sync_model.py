"""Random histories: whatever mix of sends, retries, group changes and partial syncs (small
pages, few messages per conversation) happens, a device that keeps syncing ends up holding
exactly the server's timeline of every conversation, in order, with nothing twice."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.conftest import Api
from tests.test_conversations import H, dm, group, person, send


async def _timeline(api: Api, headers: H, conversation_id: int) -> list[tuple[int, str, Any]]:
    out: list[tuple[int, str, Any]] = []
    after = 0
    while True:
        r = await api.client.get(
            f"/v1/conversations/{conversation_id}/messages?after={after}&limit=7", headers=headers
        )
        page = r.json()
        if not page["messages"]:
            return out
        out += [(m["seq"], m["kind"], m["body"] or m["data"]) for m in page["messages"]]
        after = page["next_after"]


@pytest.mark.parametrize("seed", [11, 12, 13])
async def test_random_histories_converge_to_the_server_timeline(api: Api, seed: int) -> None:
    rng = random.Random(seed)
    people = [await person(api, n) for n in range(1, 5)]
    (u0, h0), (u1, h1), (u2, h2), (u3, h3) = people
    laptop = await api.token(u0, "laptop")
    convs = {
        (await dm(api, h0, u1))["id"]: [h0, h1],
        (await dm(api, h0, u2))["id"]: [h0, h2],
        (await group(api, h0, [u1, u2, u3]))["id"]: [h0, h1, h2, h3],
    }
    cursors: dict[str, int] = {}
    held: dict[int, list[tuple[int, str, Any]]] = {}
    sent: list[tuple[H, int, str, str]] = []

    async def sync_page(page_cursor: str | None, limit: int, message_limit: int) -> Any:
        body: dict[str, Any] = {"cursors": cursors, "limit": limit, "message_limit": message_limit}
        if page_cursor:
            body["cursor"] = page_cursor
        r = await api.client.post("/v1/sync", json=body, headers=laptop)
        assert r.status_code == 200, r.text
        result = r.json()
        for c in result["conversations"]:
            got = held.setdefault(c["id"], [])
            for m in c["messages"]:
                assert not got or m["seq"] > got[-1][0], "a message came twice or out of order"
                got.append((m["seq"], m["kind"], m["body"] or m["data"]))
            cursors[str(c["id"])] = c["cursor"]
        return result

    for step in range(50):
        roll = rng.random()
        if roll < 0.6:
            cid = rng.choice(list(convs))
            headers = rng.choice(convs[cid])
            cmid = f"s{seed}-{step}"
            await send(api, headers, cid, f"message {step}", cmid)
            sent.append((headers, cid, f"message {step}", cmid))
        elif roll < 0.7 and sent:
            headers, cid, body, cmid = rng.choice(sent)
            await send(api, headers, cid, body, cmid)  # a retry changes nothing
        elif roll < 0.78:
            gid = list(convs)[2]
            r = await api.client.patch(
                f"/v1/conversations/{gid}",
                json={"name": f"name {step}"},
                headers=rng.choice(convs[gid]),
            )
            assert r.status_code == 200
        else:
            # A partial sync: one page only, small pages, few messages each.
            await sync_page(None, rng.randint(1, 2), rng.randint(1, 3))

    for _ in range(100):
        result = await sync_page(None, 2, 3)
        page_cursor = result["next_cursor"]
        while page_cursor:
            page_cursor = (await sync_page(page_cursor, 2, 3))["next_cursor"]
        if result["synced"] == 0:
            break
    else:
        raise AssertionError("sync did not converge")

    for cid in convs:
        assert held.get(cid, []) == await _timeline(api, h0, cid)
    # The laptop's event log told it about each text message once.
    texts = sum(1 for cid in convs for m in held.get(cid, []) if m[1] == "text")
    log = await api.events(laptop)
    assert sum(1 for e in log if e["type"] == "message.created") == texts
