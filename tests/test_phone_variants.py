"""Old and variant forms of the same number (contactsync.phone_variants), rule by rule.

Each rule's numbers are written every way phone books hold them: international, national,
with the old prefix or token, with 00 (and 011 from the US). Sources are in the rules' comments
in src/contactsync/phone_variants.py and in docs/numbers.md.
"""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contactsync import phone, phone_variants

# (raw, region, canonical E.164): each raw is an old form, refused by libphonenumber, that its
# rule rewrites.
OLD_FORMS = [
    # Mexico 2019: the mobile token 1 after +52, the national prefixes 044/045/01.
    ("+52 1 55 1234 5678", None, "+525512345678"),
    ("+5215512345678", None, "+525512345678"),
    ("+52 1 33 1234 5678", "US", "+523312345678"),
    ("00 52 1 55 1234 5678", "US", "+525512345678"),
    ("00 52 1 55 1234 5678", "MX", "+525512345678"),
    ("011 52 1 55 1234 5678", "US", "+525512345678"),
    ("044 55 1234 5678", "MX", "+525512345678"),
    ("045 55 1234 5678", "MX", "+525512345678"),
    ("01 55 1234 5678", "MX", "+525512345678"),
    ("1 55 1234 5678", "MX", "+525512345678"),
    # Brazil 2012-2016: the ninth digit of mobiles.
    ("+55 11 8765-4321", None, "+5511987654321"),
    ("+551187654321", None, "+5511987654321"),
    ("(11) 8765-4321", "BR", "+5511987654321"),
    ("011 8765 4321", "BR", "+5511987654321"),
    ("0 21 11 8765 4321", "BR", "+5511987654321"),  # with a carrier-selection code
    ("00 55 21 9654 3210", "US", "+5521996543210"),
    # Vietnam 2018: 11-digit mobiles.
    ("0162 345 6789", "VN", "+84323456789"),
    ("+84 162 345 6789", None, "+84323456789"),
    ("+84 (0) 120 345 6789", None, "+84703456789"),
    ("00 84 129 345 6789", "US", "+84823456789"),
    ("0084 199 345 6789", "DE", "+84593456789"),
    # Vietnam 2017: Hanoi's area code 4 -> 24.
    ("04 3825 1234", "VN", "+842438251234"),
    ("+84 4 3825 1234", None, "+842438251234"),
    ("00 84 4 3825 1234", "FR", "+842438251234"),
    # Egypt 2011: mobiles to 11 digits.
    ("010 123 4567", "EG", "+201001234567"),
    ("+20 12 345 6789", None, "+201223456789"),
    ("0020 11 234 5678", "DE", "+201112345678"),
    ("00 20 19 123 4567", "US", "+201091234567"),
    # Cameroon 2014: 6 before mobiles, 2 before fixed lines.
    ("77 12 34 56", "CM", "+237677123456"),
    ("+237 99 12 34 56", None, "+237699123456"),
    ("00237 50 12 34 56", "FR", "+237650123456"),
    ("+237 22 21 23 45", None, "+237222212345"),
    ("33 42 12 34", "CM", "+237233421234"),
    # Côte d'Ivoire 2021: mobiles to 10 digits with the operator's prefix.
    ("07 12 34 56", "CI", "+2250707123456"),
    ("+225 07 12 34 56", None, "+2250707123456"),
    ("+225 45 12 34 56", None, "+2250545123456"),
    ("00225 02 12 34 56", "FR", "+2250102123456"),
    ("00 225 77 12 34 56", "US", "+2250777123456"),
    # Benin 2024: 01 before every number.
    ("97 12 34 56", "BJ", "+2290197123456"),
    ("+229 97 12 34 56", None, "+2290197123456"),
    ("00229 66 12 34 56", "FR", "+2290166123456"),
    # Colombia 2021: fixed lines are 60 + the old area code.
    ("+57 1 234 5678", None, "+576012345678"),
    ("(1) 234 5678", "CO", "+576012345678"),
    ("03 1 234 5678", "CO", "+576012345678"),  # the old mobile-to-fixed prefix 03
    ("09 4 234 5678", "CO", "+576042345678"),  # long distance through carrier 9
    ("00 57 4 234 5678", "US", "+576042345678"),
]


@pytest.mark.parametrize(("raw", "region", "e164"), OLD_FORMS)
def test_an_old_form_is_rewritten_to_the_current_number(
    raw: str, region: str | None, e164: str
) -> None:
    number = phonenumbers.parse(raw, region) if not raw.startswith("00") else None
    if number is not None:  # libphonenumber itself refuses the old form
        assert not phonenumbers.is_valid_number(number)
    result = phone.try_normalize(raw, region)
    assert (result.e164, result.reason, result.rewritten) == (e164, None, True)
    assert phone.normalize(raw, region) == e164
    # the current number itself is current: read as is, never rewritten
    again = phone.try_normalize(e164, None)
    assert (again.e164, again.rewritten) == (e164, False)


@pytest.mark.parametrize(("old", "new"), sorted(phone_variants._VN_MOBILE.items()))
def test_every_vietnamese_network_code_of_2018(old: str, new: str) -> None:
    result = phone.try_normalize(f"0{old} 234 5678", "VN")
    assert (result.e164, result.rewritten) == (f"+84{new}2345678", True)


# (raw, region, E.164 as written, the same-line variants)
SAME_LINE = [
    ("+54 9 11 2345 6789", None, "+5491123456789", ("+541123456789",)),
    ("+54 11 2345 6789", None, "+541123456789", ("+5491123456789",)),
    ("011 15 2345 6789", "AR", "+5491123456789", ("+541123456789",)),  # national mobile form
    ("011 2345 6789", "AR", "+541123456789", ("+5491123456789",)),
    ("0054 9 351 234 5678", "DE", "+5493512345678", ("+543512345678",)),
    ("00 54 351 234 5678", "US", "+543512345678", ("+5493512345678",)),
    ("+54 11 15 2345 6789", None, "+5491123456789", ("+541123456789",)),
]


@pytest.mark.parametrize(("raw", "region", "e164", "others"), SAME_LINE)
def test_argentine_mobiles_have_both_forms(
    raw: str, region: str | None, e164: str, others: tuple[str, ...]
) -> None:
    result = phone.try_normalize(raw, region)
    assert (result.e164, result.rewritten) == (e164, False)  # both forms are valid: kept
    assert phone.variants(e164) == others
    assert phone.canonical_and_variants(raw, region) == (e164, others)
    for other in others:
        assert e164 in phone.variants(other)


@pytest.mark.parametrize(
    "e164", ["+14155550100", "+442079460958", "+4915123456789", "+525512345678", "+5511987654321"]
)
def test_most_numbers_have_no_variants(e164: str) -> None:
    assert phone.variants(e164) == ()
    assert phone.canonical_and_variants(e164) == (e164, ())


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("+52 1 55 1234 567", None, "invalid_number"),  # one digit short of an old form
        ("+52 2 55 1234 5678", None, "too_long"),  # not the mobile token
        ("+54 9 11 15 2345 6789", None, "too_long"),
        ("+84 130 345 6789", None, "invalid_number"),  # 130 was never a mobile code
        ("+225 21 12 34 56", None, "too_short"),  # old fixed line: the operator is unknown
    ],
)
def test_near_misses_stay_refused(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(phone.InvalidNumber) as info:
        phone.normalize(raw, region)
    assert info.value.reason == reason
    with pytest.raises(phone.InvalidNumber):
        phone.canonical_and_variants(raw, region)


def test_every_rule_has_a_test() -> None:
    tested = {phonenumbers.parse(e164).country_code for _, _, e164 in OLD_FORMS} | {54}
    assert {rule.country_code for rule in phone_variants.RULES} <= tested


# --- properties: a variant never joins two different people --------------------------------

RULE_REGIONS = ["AR", "MX", "BR", "VN", "CI", "BJ", "CO", "EG", "CM"]


@st.composite
def valid_numbers(draw: st.DrawFn, region: str | None = None) -> str:
    """A valid number of a country with rules (or not): an example number with digits
    varied, kept when libphonenumber calls it valid."""
    region = region or draw(st.sampled_from([*RULE_REGIONS, "US", "DE", "GB"]))
    kind = draw(st.sampled_from([phonenumbers.PhoneNumberType.MOBILE,
                                 phonenumbers.PhoneNumberType.FIXED_LINE]))  # fmt: skip
    base = phonenumbers.example_number_for_type(region, kind)
    assume(base is not None)
    digits = phonenumbers.national_significant_number(base)
    keep = draw(st.integers(1, 3))
    tail = draw(st.text("0123456789", min_size=len(digits) - keep, max_size=len(digits) - keep))
    number = phonenumbers.parse(f"+{base.country_code}{digits[:keep]}{tail}")
    assume(phonenumbers.is_valid_number(number))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@st.composite
def nearby(draw: st.DrawFn, e164: str) -> str:
    """Another valid number close to `e164`: a digit inserted, removed or changed near the
    country code (where the rules work), so pairs that could collide are drawn often."""
    number = phonenumbers.parse(e164)
    cc, nsn = str(number.country_code), phonenumbers.national_significant_number(number)
    at = draw(st.one_of(st.integers(0, min(3, len(nsn))), st.integers(0, len(nsn))))
    digit = draw(st.sampled_from("0123456789"))
    edit = draw(st.sampled_from(["insert", "delete", "change"]))
    if edit == "insert":
        nsn = nsn[:at] + digit + nsn[at:]
    elif edit == "delete":
        nsn = nsn[:at] + nsn[at + 1 :]
    else:
        nsn = nsn[:at] + digit + nsn[at + 1 :]
    try:
        other = phonenumbers.parse(f"+{cc}{nsn}")
    except phonenumbers.NumberParseException:
        assume(False)
    assume(phonenumbers.is_valid_number(other))
    return phonenumbers.format_number(other, phonenumbers.PhoneNumberFormat.E164)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_variants_of_distinct_numbers_overlap_only_where_a_rule_says_same_line(
    data: st.DataObject,
) -> None:
    a = data.draw(valid_numbers())
    forms_a = {a, *phone.variants(a)}
    # Every number sharing a form with `a` is a variant of one of a's forms: so whatever b
    # shares a form with a must be a itself or one of its variants (same line is closed).
    for form in forms_a:
        assert {form, *phone.variants(form)} <= forms_a
    b = data.draw(st.one_of(nearby(a), valid_numbers()))
    assume(a != b)
    forms_b = {b, *phone.variants(b)}
    if forms_a & forms_b:
        # the only overlap allowed: a rule says a and b are one line, both ways
        assert b in phone.variants(a) and a in phone.variants(b)
        assert {rule.country_code for rule in phone_variants.RULES if rule.same_line} >= {
            phonenumbers.parse(a).country_code
        }


@settings(max_examples=300, deadline=None)
@given(valid_numbers())
def test_a_valid_number_is_never_rewritten_and_its_variants_are_valid_and_mutual(
    e164: str,
) -> None:
    result = phone.try_normalize(e164, None)
    assert (result.e164, result.rewritten) == (e164, False)
    for other in phone.variants(e164):
        assert other != e164
        assert phonenumbers.is_valid_number(phonenumbers.parse(other))
        assert e164 in phone.variants(other)
