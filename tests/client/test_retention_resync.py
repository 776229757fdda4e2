"""The SDK after its cursor fell behind the server's retention period (issue 13 item 12):
410 events_trimmed makes it resync fully and follow from the log's end."""

from __future__ import annotations

from contactsync.client import MemorySource
from contactsync.server.clock import ManualClock
from contactsync.server.services import retention
from tests.client.conftest import Factory
from tests.conftest import Api
from tests.test_conversations import send

DAY = 24 * 3600


async def test_the_sdk_resyncs_fully_after_a_trim(
    api: Api, clock: ManualClock, managers: Factory
) -> None:
    a, ha = await api.user_with_token("+14155550100")
    b, hb = await api.user_with_token("+14155550101")
    manager = managers(MemorySource([]), hb)
    await manager.initialize()
    r = await api.client.post(
        "/v1/conversations", json={"kind": "dm", "members": [b["user_id"]]}, headers=ha
    )
    await send(api, ha, r.json()["id"], "old news", "m1")
    clock.advance(31 * DAY)
    async with api.ctx.tx() as tx:
        await retention.trim(tx)
    # the device was offline all that time: its cursor (0) is before the trimmed point
    await manager.poll_events()
    assert manager.store is not None
    assert manager.store.get("event_cursor") == "2"  # followed from the log's end
    texts = [m.body for m in await manager.conversation(r.json()["id"]).messages()]
    assert texts == ["old news"]  # brought by the full resync, not by events
