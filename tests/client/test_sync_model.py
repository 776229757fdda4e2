"""The incremental sync against a model: after any sequence of edits to the source (adds,
deletions, renames, numbers moving between contacts, shared numbers, junk), one sync makes the
server's book exactly what the source says, and a second sync sends nothing."""

from __future__ import annotations

import random

import httpx
import pytest

from contactsync import phone
from contactsync.client import Contact, MemorySource
from tests.client.conftest import Factory, book
from tests.client.test_manager import LoseResponses
from tests.conftest import Api

NUMBERS = [f"(415) 555-{1000 + i:04d}" for i in range(40)] + ["+44 20 7946 0958", "n/a", "12"]


def expected(contacts: dict[str, Contact]) -> dict[str, str | None]:
    """Per number, the name of the contact with the smallest id holding it."""
    out: dict[str, tuple[str, str | None]] = {}
    for contact in contacts.values():
        for raw in contact.phones:
            e164 = phone.try_normalize(raw, "US").e164
            if e164 is not None and (e164 not in out or contact.id < out[e164][0]):
                out[e164] = (contact.id, contact.name)
    return {e164: name for e164, (_, name) in out.items()}


def edit(rng: random.Random, contacts: dict[str, Contact], serial: list[int]) -> None:
    for _ in range(rng.randint(1, 6)):
        action = rng.random()
        if action < 0.35 or not contacts:
            serial[0] += 1
            cid = f"c{serial[0]:03d}"
            phones = tuple(rng.sample(NUMBERS, rng.randint(1, 3)))
            contacts[cid] = Contact(cid, f"Name {serial[0]}", phones)
        elif action < 0.55:
            del contacts[rng.choice(sorted(contacts))]
        elif action < 0.8:
            cid = rng.choice(sorted(contacts))
            contacts[cid] = Contact(cid, f"Renamed {rng.randint(0, 999)}", contacts[cid].phones)
        else:
            cid = rng.choice(sorted(contacts))
            phones = tuple(rng.sample(NUMBERS, rng.randint(0, 3)))
            contacts[cid] = Contact(cid, contacts[cid].name, phones)


@pytest.mark.parametrize("seed", [1, 2])
async def test_any_edit_sequence_converges(api: Api, managers: Factory, seed: int) -> None:
    _, me = await api.user_with_token("+14155550100")
    rng = random.Random(seed)
    contacts: dict[str, Contact] = {}
    serial = [0]
    source = MemorySource()
    manager = managers(source, me, batch_size=4)
    for round_ in range(12):
        edit(rng, contacts, serial)
        source.set(contacts.values())
        if round_ % 4 == 3:
            # an answer lost on the way back: the retry must not double anything
            manager.api.http._transport = LoseResponses(httpx.ASGITransport(app=api.app), 1)
        metrics = await manager.sync() if round_ != 7 else await manager.force_sync()
        manager.api.http._transport = httpx.ASGITransport(app=api.app)
        assert metrics.error is None
        assert await book(api, me) == expected(contacts), f"round {round_}"
        again = await manager.sync()
        assert again.uploaded == 0 and again.batches == 0
