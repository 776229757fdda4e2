"""The phone module: the forms users write, the reasons for failure, the cache."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contactsync import phone


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (415) 555-0100", None, "+14155550100"),
        ("+1 (415) 555-0100", "DE", "+14155550100"),
        ("00 44 20 7946 0958", "DE", "+442079460958"),
        ("00 44 20 7946 0958", "US", "+442079460958"),  # 00 is not the US prefix: still read
        ("00 44 20 7946 0958", None, "+442079460958"),
        ("030 1234567", "DE", "+49301234567"),
        ("030/1234567", "DE", "+49301234567"),
        ("(415) 555-0100", "US", "+14155550100"),
        ("415.555.0100", "us", "+14155550100"),
        ("011 49 30 1234567", "US", "+49301234567"),
        ("+1 415 555 0100 ext. 12", None, "+14155550100"),
        ("+1 415 555 0100;ext=7", None, "+14155550100"),
        ("tel:+14155550100", None, "+14155550100"),
        ("  +44 20 7946 0958  ", None, "+442079460958"),
        ("Phone: +44 20 7946 0958", None, "+442079460958"),
        ("+12015550123", None, "+12015550123"),
        ("+49 1512 3456789", None, "+4915123456789"),
    ],
)
def test_normalizes_common_written_forms(raw: str, region: str | None, expected: str) -> None:
    assert phone.normalize(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("ask Bob", "US", "not_a_number"),
        ("", "US", "not_a_number"),
        ("+", "US", "not_a_number"),
        ("n/a", "US", "not_a_number"),
        ("+999 123", "US", "invalid_country_code"),
        ("030 1234567", None, "invalid_country_code"),  # no country code and no region
        ("12", "US", "too_short"),
        ("555", "US", "too_short"),
        ("+1 415 555 010", None, "too_short"),
        ("+49 30 1234567890123456", None, "too_long"),
        ("1" * 65, "US", "too_long"),
        ("+1 200 555 0100", None, "invalid_number"),  # area code 200 does not exist
    ],
)
def test_reports_a_stable_reason(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(phone.InvalidNumber) as info:
        phone.normalize(raw, region)
    assert info.value.reason == reason
    assert info.value.reason in phone.REASONS
    assert phone.try_normalize(raw, region) == phone.Normalized(None, reason)


def test_non_string_input_is_not_a_number() -> None:
    assert phone.try_normalize(12345, "US").reason == "not_a_number"  # type: ignore[arg-type]


def test_repeats_come_from_the_cache() -> None:
    phone.cache_clear()
    phone.normalize("+1 (415) 555-0199", None)
    before = phone._cached.cache_info()
    phone.normalize("+1 (415) 555-0199", None)
    after = phone._cached.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses


def test_region_helpers() -> None:
    assert phone.valid_region("de") == "DE"
    assert phone.valid_region("XX") is None
    assert phone.region_of("+49301234567") == "DE"
    assert phone.mask("+14155550100") == "+14*******00"


REGIONS = ["US", "DE", "GB", "IN", "BR", "FR", "NG", "JP", "CA"]


@st.composite
def valid_numbers(draw: st.DrawFn) -> phonenumbers.PhoneNumber:
    region = draw(st.sampled_from(REGIONS))
    base = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    digits = str(base.national_number)
    tail = draw(st.text("0123456789", min_size=3, max_size=3))
    number = phonenumbers.PhoneNumber(
        country_code=base.country_code, national_number=int(digits[:-3] + tail)
    )
    if not phonenumbers.is_valid_number(number):
        return base
    return number


FORMATS = [
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.NATIONAL,
    phonenumbers.PhoneNumberFormat.RFC3966,
]


@settings(max_examples=300, deadline=None)
@given(valid_numbers(), st.sampled_from(FORMATS))
def test_every_written_form_of_a_valid_number_gives_its_e164(
    number: phonenumbers.PhoneNumber, fmt: int
) -> None:
    region = phonenumbers.region_code_for_number(number)
    written = phonenumbers.format_number(number, fmt)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    assert phone.normalize(written, region) == e164
    # Normalising is idempotent, and E.164 needs no region.
    assert phone.normalize(e164, None) == e164
    # International forms read the same from any region; "00" works from anywhere.
    if fmt != phonenumbers.PhoneNumberFormat.NATIONAL:
        assert phone.normalize(written, "BR") == e164
    assert phone.normalize("00" + e164[1:], "US") == e164


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80), st.sampled_from([None, *REGIONS]))
def test_any_text_gives_e164_or_a_known_reason(raw: str, region: str | None) -> None:
    result = phone.try_normalize(raw, region)
    if result.e164 is None:
        assert result.reason in phone.REASONS
    else:
        assert phone.normalize(result.e164, None) == result.e164


@settings(max_examples=1000, deadline=None)
@given(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True))
def test_e164_fast_path_agrees_with_the_full_parse(text: str) -> None:
    assert phone._validate_e164(text) == phone._full(text)


@settings(max_examples=300, deadline=None)
@given(valid_numbers())
def test_e164_fast_path_accepts_valid_numbers(number: phonenumbers.PhoneNumber) -> None:
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    assert phone._validate_e164(e164) == phone.Normalized(e164)
