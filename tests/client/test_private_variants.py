"""Legacy and variant number forms (issue 17) in private discovery, on both databases: the SDK
evaluates a number's variant forms itself, so a friend saved in an old or variant form is
found by a private sync exactly as by a stored-mode upload of the same book.

One app in stored mode serves both: the private-discovery endpoints answer in either mode
(private mode only refuses uploads), so the same users and the same book are matched both
ways."""

from __future__ import annotations

import pytest

from contactsync.client import Contact, MemorySource
from tests.client.conftest import Factory
from tests.conftest import Api
from tests.test_number_variants_api import FORMS


@pytest.mark.parametrize("region", sorted({r or "" for _, _, r in FORMS}))
async def test_a_legacy_or_variant_form_matches_in_private_mode_as_in_stored_mode(
    api: Api, managers: Factory, region: str
) -> None:
    forms = [(canonical, raw) for canonical, raw, r in FORMS if (r or "") == region]
    users = {}
    for canonical, _ in forms:
        if canonical not in users:
            users[canonical] = (await api.create_user(canonical))["user_id"]
    book = [Contact(f"c{i}", f"Friend {i}", (raw,)) for i, (_, raw) in enumerate(forms)]
    results = {}
    for mode, phone in (("stored", "+14155550100"), ("private", "+14155550109")):
        _, headers = await api.user_with_token(phone)
        sdk = managers(
            MemorySource(book),
            headers,
            region=region or "US",
            discovery=mode,
            state_dir=api.ctx.settings.data_dir / f"sdk-{mode}",
        )
        metrics = await sdk.sync()
        assert sdk.discovery == mode
        assert metrics.error is None, metrics.error
        results[mode] = {(u["user_id"], u["phone"]) for u in metrics.registered}
    # every friend is found, under the number as the book holds it (normalised)
    assert {uid for uid, _ in results["stored"]} == set(users.values())
    assert results["private"] == results["stored"]
