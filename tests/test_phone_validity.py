"""`phone_validity.is_valid` answers exactly as `phonenumbers.is_valid_number`: on every
calling code and length, the examples of every region and type and their neighbours, random
digits, and (hypothesis) any digits at all; and the E.164 path that uses it reads as the
full parse does."""

from __future__ import annotations

import random
from types import SimpleNamespace

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumber, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from contactsync import phone, phone_validity
from contactsync.phone_validity import is_valid

TYPES = [v for k, v in vars(PhoneNumberType).items() if k.isupper()]


def libphonenumber(country_code: int, national: str) -> tuple[bool, str]:
    """phonenumbers' answer for the number, and its national significant number."""
    number = PhoneNumber(country_code=country_code, national_number=int(national))
    zeros = len(national) - len(national.lstrip("0"))
    if zeros:
        number.italian_leading_zero = True
        number.number_of_leading_zeros = zeros
    return phonenumbers.is_valid_number(number), phonenumbers.national_significant_number(number)


def cases() -> list[tuple[int, str]]:
    rng = random.Random(20261204)
    found: list[tuple[int, str]] = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            nsn = phonenumbers.national_significant_number(example)
            found.append((example.country_code, nsn))
            for _ in range(4):  # neighbours: other last digits, one digit more or less
                found.append((example.country_code, nsn[:-2] + f"{rng.randrange(100):02d}"))
            found += [(example.country_code, nsn + "5"), (example.country_code, nsn[:-1])]
    for code in sorted(COUNTRY_CODE_TO_REGION_CODE):
        for length in range(1, 16):
            for _ in range(8):
                found.append((code, "".join(rng.choice("0123456789") for _ in range(length))))
    return found


def test_it_answers_as_libphonenumber_on_every_region_type_and_length() -> None:
    checked = valid = 0
    for country_code, national in cases():
        expected, nsn = libphonenumber(country_code, national)
        assert is_valid(country_code, nsn) == expected, (country_code, national)
        checked += 1
        valid += expected
    assert checked > 20_000 and valid > 2_000  # both answers well represented


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(sorted(COUNTRY_CODE_TO_REGION_CODE)),
    st.text(alphabet="0123456789", min_size=1, max_size=14),
)
def test_any_digits_answer_as_libphonenumber(country_code: int, national: str) -> None:
    expected, nsn = libphonenumber(country_code, national)
    assert is_valid(country_code, nsn) == expected


def test_the_e164_path_reads_as_the_full_parse() -> None:
    for country_code, national in cases()[::7]:
        text = f"+{country_code}{national}"
        phone.cache_clear()
        fast = phone.try_normalize(text)
        full = phone._full(text)
        assert fast == full, text


def test_patterns_that_refer_back_to_a_group_are_matched_one_by_one() -> None:
    """Joined, a back-reference would point at another pattern's group."""

    def desc(pattern: str) -> SimpleNamespace:
        return SimpleNamespace(possible_length=(4,), national_number_pattern=pattern)

    metadata = SimpleNamespace(
        general_desc=desc(r"\d{4}"),
        same_mobile_and_fixed_line_pattern=False,
        **{name: None for name in phone_validity._TYPES},
    )
    metadata.fixed_line = desc(r"(1)2\1\d")  # 121x
    metadata.mobile = desc(r"(9)\d\1\d")  # 9x9x
    matcher = phone_validity._compile(metadata, 4)  # type: ignore[arg-type]
    assert [bool(matcher.fullmatch(n)) for n in ("1213", "9092", "1223", "9012", "12")] == [
        True,
        True,
        False,
        False,
        False,
    ]
