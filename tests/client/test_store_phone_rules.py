"""The SDK's local normalisation cache and the phone module's old-form rules."""

from __future__ import annotations

from pathlib import Path

from contactsync import phone, phone_variants
from contactsync.client._store import LocalStore


def test_refusals_cached_under_older_rules_are_read_again(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = LocalStore(path)
    # As an SDK before the Mexican rule cached them: the old form refused, a number accepted.
    store.cache_numbers(
        "US",
        [("+52 1 55 1234 5678", None, "too_long"), ("+1 415 555 0100", "+14155550100", None)],
    )
    store.put("phone_rules", str(phone_variants.RULES_VERSION - 1))
    store.close()

    store = LocalStore(path)
    cached = store.cached_numbers(["+52 1 55 1234 5678", "+1 415 555 0100"], "US")
    assert cached == {"+1 415 555 0100": ("+14155550100", None)}  # the refusal is forgotten
    assert phone.try_normalize("+52 1 55 1234 5678", "US").e164 == "+525512345678"
    store.close()

    # Under the same rules nothing is forgotten.
    store = LocalStore(path)
    store.cache_numbers("US", [("ask Bob", None, "not_a_number")])
    store.close()
    store = LocalStore(path)
    assert store.cached_numbers(["ask Bob"], "US") == {"ask Bob": (None, "not_a_number")}
    store.close()
