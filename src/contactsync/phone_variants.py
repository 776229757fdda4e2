"""Numbering-plan changes that phone books outlived: the rules behind :mod:`contactsync.phone`.

Countries change their numbering plans; phone books keep the old forms for years. Two kinds of
rule, each a fact about one country's national significant numbers (the digits after the
country code), with its source:

- an **old form** (``same_line=False``): the written form is no longer valid, and the plan
  change says which current number it became (Mexico's mobile ``1``, Brazil's ninth digit,
  Vietnam's 11-digit mobiles, ...). :func:`rewrite` turns it into the current number; the
  phone module applies it only to input libphonenumber refuses, so it never changes the
  meaning of a number that is valid today.
- a **same line** (``same_line=True``): two forms that are both valid today and may both be
  one subscriber's line (Argentina's mobile ``9``). Neither is rewritten; :func:`variants`
  gives the other, and matching looks up both.

What libphonenumber already reads itself is not repeated here (the Argentine national ``15``
mobile prefix, ``011 15 …`` and ``+54 11 15 …``; Brazil's carrier-selection prefixes; the
Colombian ``03``/``09`` long-distance carrier prefixes). ``docs/numbers.md`` lists the rules,
their sources and how to add one; every rule has a test in ``tests/test_phone_variants.py``.

Cost: :func:`variants` is two string slices and a dict miss for a country without same-line
rules; :func:`rewrite` runs only for numbers that failed validation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException

__all__ = [
    "RULES",
    "RULES_VERSION",
    "Rule",
    "has_old_forms",
    "rewrite",
    "same_line_codes",
    "variants",
    "variants_of",
]

# Bump when a rule is added or changed: stored results computed under older rules (the SDK's
# local normalisation cache) can tell they are stale.
RULES_VERSION = 2


@dataclass(frozen=True, slots=True)
class Rule:
    """National significant numbers of `country_code` matching `pattern` (whole) have another
    form, `to` (a `re` template, or a function of the match)."""

    country_code: int
    name: str
    pattern: re.Pattern[str]
    to: str | Callable[[re.Match[str]], str]
    same_line: bool = False

    def other(self, nsn: str) -> str | None:
        """The other form's national significant number, or None when the rule does not apply."""
        match = self.pattern.fullmatch(nsn)
        if match is None:
            return None
        return match.expand(self.to) if isinstance(self.to, str) else self.to(match)


def _prefix_map(mapping: dict[str, str]) -> Callable[[re.Match[str]], str]:
    return lambda match: mapping[match.group(1)] + match.group(2)


# Vietnam, 11-digit mobile numbers to 10 digits, 15 September 2018 (MIC plan announced
# 29 May 2018; parallel dialling until 14 November 2018): the network code changes, the last 7
# digits stay. Source: MobiFone's conversion plan (mobifone.vn, "Ke hoach trien khai chuyen doi
# thue bao"), Viettel/VinaPhone/Vietnamobile/Gmobile tables as published by the operators;
# libphonenumber dropped the 12x/16x/18x/199 mobile ranges accordingly.
_VN_MOBILE = {
    # MobiFone
    "120": "70", "121": "79", "122": "77", "126": "76", "128": "78",
    # VinaPhone
    "123": "83", "124": "84", "125": "85", "127": "81", "129": "82",
    # Viettel
    "162": "32", "163": "33", "164": "34", "165": "35", "166": "36", "167": "37",
    "168": "38", "169": "39",
    # Vietnamobile
    "186": "56", "188": "58",
    # Gmobile
    "199": "59",
}  # fmt: skip


# Egypt, mobile numbers from 10 to 11 digits, 6 October 2011 (NTRA press release "increase
# the length of the current mobile numbers from 10 to 11 digits", tra.gov.eg): a digit after
# the 01 by operator, the rest unchanged. Mobinil 012/017/018 -> 0122/0127/0128, Vodafone
# 010/016/019 -> 0100/0106/0109, Etisalat 011/014 -> 0111/0114. (The 015x numbers renamed at
# the same time, 0150 -> 0120 etc., are valid WE numbers today: not rewritten.)
_EG_MOBILE = {"12": "122", "17": "127", "18": "128", "10": "100", "16": "106", "19": "109",
              "11": "111", "14": "114"}  # fmt: skip


def _ci_mobile(match: re.Match[str]) -> str:
    # Côte d'Ivoire, 8 to 10 digits, 31 January 2021 (ARTCI, press conference of 28 July 2020):
    # mobiles take their operator's prefix, 01 Moov, 05 MTN, 07 Orange. The operator is the
    # one the old range was allocated to, told by the old number's second digit (0-3 Moov,
    # 4-6 MTN, 7-9 Orange; the ranges in libphonenumber's pre-2021 CI metadata). A number
    # ported to another operator before 2021 took that operator's prefix and is not found.
    old = match.group(0)
    return {"0": "01", "1": "01", "2": "01", "3": "01", "4": "05", "5": "05", "6": "05"}.get(
        old[1], "07"
    ) + old


RULES: tuple[Rule, ...] = (
    # Mexico, 3 August 2019 (IFT, "marcación a 10 dígitos"): the mobile token `1` after +52
    # and the national prefixes 01 (long distance), 02, 044 and 045 (mobile, local and long
    # distance) were abolished; every number is its 10 digits. libphonenumber v8.10.17
    # release notes (2019-08-15) and google/libphonenumber#3710 (tokens removed from the
    # metadata, v8.13.38): "+52 1 55 …" and "044 55 …" are refused since.
    Rule(52, "MX tokens 1, 01, 02, 044, 045", re.compile(r"(?:1|0[12]|04[45])(\d{10})"), r"\1"),
    # Argentina: a mobile is dialled +54 9 <area> <number> from abroad and 0 <area> 15
    # <number> at home; books hold it as +54 <area> <number> too (no 9), which libphonenumber
    # reads as a valid fixed-line number. Area code + number is one 10-digit space for fixed
    # and mobile lines alike (the 9 and the 15 only say "dialling a mobile"), so both forms
    # are the same line. libphonenumber's FAQ.md on Argentina's 9 and 15 (updated in
    # google/libphonenumber#2693); the 15 form libphonenumber already turns into the 9 form
    # itself (AR nationalPrefixTransformRule "9$1").
    Rule(54, "AR mobile 9 missing", re.compile(r"([1-8]\d{9})"), r"9\1", same_line=True),
    Rule(54, "AR mobile 9 present", re.compile(r"9([1-8]\d{9})"), r"\1", same_line=True),
    # Brazil, ninth digit on mobiles (Anatel Resolução 553/2010): 8-digit mobiles, which began
    # with 6-9, gained a leading 9, area by area from São Paulo (29 July 2012) to the last
    # areas (6 November 2016). libphonenumber no longer accepts the 8-digit mobile form.
    Rule(55, "BR ninth digit", re.compile(r"([1-9][1-9])([6-9]\d{7})"), r"\g<1>9\g<2>"),
    # Vietnam 2018 mobiles (see _VN_MOBILE).
    Rule(
        84,
        "VN 11-digit mobiles",
        re.compile(r"(1(?:2\d|6[2-9]|8[68]|99))(\d{7})"),
        lambda m: _VN_MOBILE[m.group(1)] + m.group(2) if m.group(1) in _VN_MOBILE else "",
    ),
    # Vietnam, fixed-line area codes, February to August 2017 (MIC; "the change to fixed
    # telephone area codes was completed nation-wide on August 31", Viet Nam News): every
    # area code now starts with 2. Only Hanoi's is here, where the change was adding the 2
    # (4 -> 24) and no current number has the old form; Ho Chi Minh City's old 8 + 8 digits
    # mostly reads as a valid 8x mobile today, and the other provinces were renumbered.
    Rule(84, "VN Hanoi area code 4 -> 24", re.compile(r"4(\d{8})"), r"24\1"),
    # Egypt 2011 mobiles (see _EG_MOBILE).
    Rule(
        20,
        "EG mobiles to 11 digits",
        re.compile(r"(1[0-246-9])(\d{7})"),
        lambda m: _EG_MOBILE[m.group(1)] + m.group(2) if m.group(1) in _EG_MOBILE else "",
    ),
    # Cameroon, 8 to 9 digits, 21 November 2014 (ART and the Minister of Posts and
    # Telecommunications, press conference of 24 September 2014): 6 before every mobile
    # number (Orange, MTN, Nexttel), 2 before Camtel's fixed numbers.
    Rule(237, "CM mobiles: 6 before", re.compile(r"[5-9]\d{7}"), r"6\g<0>"),
    Rule(237, "CM fixed lines: 2 before", re.compile(r"[23]\d{7}"), r"2\g<0>"),
    # Côte d'Ivoire 2021 mobiles (see _ci_mobile). Old fixed lines took 21/25/27 by the
    # operator, which the old number does not tell; they are not rewritten.
    Rule(225, "CI mobiles to 10 digits", re.compile(r"0\d{7}|[4-9]\d{7}"), _ci_mobile),
    # Benin, 8 to 10 digits, 30 November 2024 (ARCEP Bénin): every number, whatever the
    # operator, is prefixed with 01 ("faites précéder le numéro de votre destinataire de 01",
    # AllAfrica, 30 November 2024).
    Rule(229, "BJ 01 prefix", re.compile(r"\d{8}"), r"01\g<0>"),
    # Colombia, single national dialling, 1 September 2021 (CRC Resolución 5826 de 2019):
    # fixed lines are 60 + the old one-digit area code + the 7-digit number ("+57 1 234 5678"
    # is now "+57 601 234 5678").
    Rule(57, "CO fixed lines 60 + area", re.compile(r"([1-8])(\d{7})"), r"60\1\2"),
)

_OLD: dict[int, tuple[Rule, ...]] = {}
_SAME: dict[str, tuple[Rule, ...]] = {}
for _rule in RULES:
    if _rule.same_line:
        _SAME[str(_rule.country_code)] = (*_SAME.get(str(_rule.country_code), ()), _rule)
    else:
        _OLD[_rule.country_code] = (*_OLD.get(_rule.country_code, ()), _rule)
_SAME_CC_LENGTHS = tuple(sorted({len(cc) for cc in _SAME}))
_SAME_PREFIXES = tuple(f"+{cc}" for cc in _SAME)


def same_line_codes() -> tuple[str, ...]:
    """The country codes (as strings) with same-line rules: only their numbers have variants."""
    return tuple(_SAME)


def has_old_forms(country_code: int) -> bool:
    """Whether any old-form rule exists for this country (so a refused number may be one)."""
    return country_code in _OLD


def _valid_e164(country_code: int, nsn: str) -> str | None:
    if not nsn:
        return None
    e164 = f"+{country_code}{nsn}"
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException:
        return None
    return e164 if phonenumbers.is_valid_number(number) else None


def rewrite(country_code: int, nsn: str) -> str | None:
    """The current E.164 number an old form (`nsn`, refused today) became, or None.

    Only meant for numbers libphonenumber refuses: the phone module never calls it for a valid
    one, so a rule cannot change the meaning of a number in use today.
    """
    for rule in _OLD.get(country_code, ()):
        other = rule.other(nsn)
        if other is not None and (found := _valid_e164(country_code, other)) is not None:
            return found
    return None


def variants(e164: str) -> tuple[str, ...]:
    """The other valid E.164 numbers that may be the same line as `e164` (itself excluded).

    An empty tuple for nearly every number: only countries with same-line rules have any.
    Symmetric: `b in variants(a)` exactly when `a in variants(b)`.
    """
    for length in _SAME_CC_LENGTHS:
        if e164[1 : 1 + length] in _SAME:
            return _variants(e164, length)
    return ()


def of_same_line_countries(numbers: Iterable[str]) -> list[str]:
    """Those of `numbers` (E.164) of a country with same-line rules, the only ones that may
    have variants: one C-level prefix test a number (nearly none is)."""
    return [n for n in numbers if n.startswith(_SAME_PREFIXES)]


def variants_of(numbers: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """{number: variants} for those of `numbers` (E.164) that have any; the bulk form of
    :func:`variants`, for uploads of thousands of numbers."""
    found: dict[str, tuple[str, ...]] = {}
    for number in of_same_line_countries(numbers):
        for length in _SAME_CC_LENGTHS:
            if number[1 : 1 + length] in _SAME and (others := _variants(number, length)):
                found[number] = others
    return found


@lru_cache(maxsize=50_000)
def _variants(e164: str, length: int) -> tuple[str, ...]:
    country_code, nsn = int(e164[1 : 1 + length]), e164[1 + length :]
    found: list[str] = []
    for rule in _SAME[e164[1 : 1 + length]]:
        other = rule.other(nsn)
        if other is not None and (valid := _valid_e164(country_code, other)) is not None:
            if valid != e164 and valid not in found:
                found.append(valid)
    return tuple(found)


def cache_clear() -> None:
    _variants.cache_clear()
