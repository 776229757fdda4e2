"""The durable event log: per-user seq without gaps or duplicates, even under concurrency."""

from __future__ import annotations

import asyncio
import random

from contactsync.server.services import events
from tests.conftest import Api


async def test_concurrent_fan_outs_give_gapless_sequences(api: Api) -> None:
    ids = [(await api.create_user(f"+1415555{1000 + i:04d}"))["user_id"] for i in range(8)]
    rng = random.Random(5)
    batches = [rng.sample(ids, rng.randint(1, len(ids))) for _ in range(40)]

    async def fan_out(n: int, recipients: list[int]) -> None:
        # Reverse order in half the batches: lock ordering must not depend on input order.
        order = recipients if n % 2 else list(reversed(recipients))
        async with api.ctx.tx() as tx:
            await events.append(
                tx, [events.NewEvent(u, "test.fanout", {"batch": n}) for u in order]
            )

    await asyncio.gather(*(fan_out(n, b) for n, b in enumerate(batches)))
    for user_id in ids:
        async with api.ctx.read() as tx:
            log = await events.read(tx, user_id, 0, 1000)
            last = await events.last_seq(tx, user_id)
        expected = sum(user_id in b for b in batches)
        assert [e.seq for e in log] == list(range(1, expected + 1))
        assert last == expected
        assert len({e.data["batch"] for e in log}) == expected


async def test_several_events_for_one_user_in_one_append(api: Api) -> None:
    user, headers = await api.user_with_token("+14155550100")
    async with api.ctx.tx() as tx:
        written = await events.append(
            tx,
            [
                events.NewEvent(user["user_id"], "a", {"i": 1}),
                events.NewEvent(user["user_id"], "b", {"i": 2}),
                events.NewEvent(999_999, "c", {"i": 3}),  # unknown recipients are dropped
            ],
        )
    assert written == [(user["user_id"], 1), (user["user_id"], 2)]
    log = await api.events(headers)
    assert [(e["seq"], e["type"], e["data"]) for e in log] == [
        (1, "a", {"i": 1}),
        (2, "b", {"i": 2}),
    ]
    assert log[0]["at"].endswith("Z")


async def test_reading_pages_with_after(api: Api) -> None:
    user, headers = await api.user_with_token("+14155550100")
    async with api.ctx.tx() as tx:
        await events.append(
            tx, [events.NewEvent(user["user_id"], "n", {"i": i}) for i in range(25)]
        )
    seen: list[int] = []
    after = 0
    while True:
        r = await api.client.get(f"/v1/events?after={after}&limit=10", headers=headers)
        page = r.json()
        if not page["events"]:
            assert page["next_after"] == after
            break
        seen += [e["data"]["i"] for e in page["events"]]
        after = page["next_after"]
    assert seen == list(range(25))
    beyond = await api.client.get("/v1/events?after=1000", headers=headers)
    assert beyond.json() == {"events": [], "next_after": 1000}


async def test_events_are_private(api: Api) -> None:
    ann, ann_headers = await api.user_with_token("+14155550101")
    _, bob_headers = await api.user_with_token("+14155550102")
    async with api.ctx.tx() as tx:
        await events.append(tx, [events.NewEvent(ann["user_id"], "secret", {"x": 1})])
    assert len(await api.events(ann_headers)) == 1
    assert await api.events(bob_headers) == []
