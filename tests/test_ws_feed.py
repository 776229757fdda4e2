"""The batched log reader behind the sockets answers every request exactly as a direct read
of that user's log would, however many requests share a statement (both databases)."""

from __future__ import annotations

import asyncio
import random

from contactsync.server.services import events
from contactsync.server.services.feed import Feed
from tests.conftest import Api
from tests.live import emit


async def test_batched_reads_equal_direct_reads(api: Api) -> None:
    rng = random.Random(7)
    counts = [0, 1, 5, 199, 200, 201, 450]
    users = []
    for i, count in enumerate(counts):
        uid = (await api.create_user(f"+1415555{5000 + i:04d}"))["user_id"]
        if count:
            await emit(api.ctx, uid, count)
        users.append((uid, count))
    feed = Feed(api.ctx, page=200, max_users=7)  # several chunks per flush, too
    for _ in range(15):
        asks = [
            (uid, rng.choice([0, count, count + 3, rng.randint(0, count + 1)]))
            for uid, count in rng.choices(users, k=rng.randint(1, 25))
        ]
        before = feed.statements
        pages = await asyncio.gather(*(feed.read(uid, after) for uid, after in asks))
        assert feed.statements - before <= -(-len(set(asks)) // 7)
        for (uid, after), page in zip(asks, pages, strict=True):
            async with api.ctx.read() as tx:
                direct = await events.read(tx, uid, after, 201)
            assert [e.seq for e in page.events] == [e.seq for e in direct[:200]]
            assert page.events == direct[:200]
            assert page.more == (len(direct) >= 200)
