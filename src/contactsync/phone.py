"""The one place phone numbers are parsed and normalised.

Every number that enters contactsync — a registration, an address-book entry, a relation by
number, an OTP request — goes through :func:`normalize`. It turns what a person typed into E.164
using libphonenumber's rules, read in a region when the number has no country code, or says why
it cannot (a stable reason code).

Address books repeat the same numbers constantly (across syncs, devices and users), and
libphonenumber costs tens of microseconds a number, so results are kept in a bounded LRU cache
keyed by (raw, region). Numbers already in E.164 — what the SDK sends — take a cheaper path that
skips the region logic but still validates.

Phone books outlive numbering plans. A number libphonenumber refuses that an old-form rule of
:mod:`contactsync.phone_variants` maps to a valid current number ("+52 1 55 1234 5678", Mexico
before 2019) is accepted and rewritten to it (`Normalized.rewritten`); :func:`variants` gives
the other current forms that may be the same line ("+54 11 …" and "+54 9 11 …"), which
matching looks up too. Both cost nothing for a number without rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumber, PhoneNumberFormat, ValidationResult
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from contactsync import phone_validity, phone_variants
from contactsync.phone_variants import variants

__all__ = [
    "REASONS",
    "InvalidNumber",
    "Normalized",
    "normalize",
    "try_normalize",
    "variants",
    "canonical_and_variants",
    "region_of",
    "valid_region",
    "mask",
    "read_all",
    "outcomes",
    "outcome",
    "invalid_entry",
]

# Stable reason codes, part of the API (address-book `invalid[].reason`, error details).
REASONS = ("not_a_number", "invalid_country_code", "too_short", "too_long", "invalid_number")

_MAX_RAW = 64  # longer than any real number with formatting and an extension
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_PARSE_REASON = {
    NumberParseException.INVALID_COUNTRY_CODE: "invalid_country_code",
    NumberParseException.NOT_A_NUMBER: "not_a_number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too_short",
    NumberParseException.TOO_SHORT_NSN: "too_short",
    NumberParseException.TOO_LONG: "too_long",
}
_POSSIBLE_REASON = {
    ValidationResult.INVALID_COUNTRY_CODE: "invalid_country_code",
    ValidationResult.TOO_SHORT: "too_short",
    ValidationResult.TOO_LONG: "too_long",
    ValidationResult.INVALID_LENGTH: "invalid_number",
}
_REGIONS = frozenset(phonenumbers.SUPPORTED_REGIONS)

# libphonenumber compiles its metadata's patterns on every use, through re.compile and its
# cache; keeping them compiled (a bounded set: the metadata is fixed) makes a cold number about
# 20% cheaper, on the server and in the SDK. Versions before 9.0 have no such switch.
_keep_patterns = getattr(phonenumbers, "enable_pattern_cache", None)
if _keep_patterns is not None:
    _keep_patterns()


class InvalidNumber(ValueError):
    """A string that is not a valid phone number; `reason` is one of :data:`REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Normalized:
    """Outcome of normalising one raw string: `e164` on success, else `reason`. `rewritten`
    says an old form was read as the current number it became (phone_variants)."""

    e164: str | None
    reason: str | None = None
    rewritten: bool = False


def valid_region(region: str | None) -> str | None:
    """Upper-cased ISO 3166 alpha-2 code when libphonenumber knows it, else None."""
    if not region:
        return None
    code = region.strip().upper()
    return code if code in _REGIONS else None


def normalize(raw: str, region: str | None = None) -> str:
    """Return `raw` as E.164, reading it in `region` when it has no country code.

    Raises :class:`InvalidNumber` with a stable reason. Handles the usual written forms:
    "+1 (415) 555-0100", "00 44 20 7946 0958", "030 1234567" (region DE), extensions
    (dropped), "tel:" URIs and surrounding junk as libphonenumber does.
    """
    result = try_normalize(raw, region)
    if result.e164 is None:
        raise InvalidNumber(result.reason or "invalid_number")
    return result.e164


def try_normalize(raw: str, region: str | None = None) -> Normalized:
    """Like :func:`normalize` but returns the reason instead of raising (for bulk paths)."""
    if not isinstance(raw, str):
        return _FAILED["not_a_number"]
    return outcome(_cached(raw, region.upper() if region else None))


def outcomes(raws: Sequence[str], region: str | None) -> list[str]:
    """Each number's outcome in the compact form the cache keeps: "+E164", "~+E164" (an old
    form rewritten) or "!reason". What a worker process reading numbers for another one hands
    back (`read_all(..., found=)` takes it): a list of short strings is cheap to send."""
    key = region.upper() if region else None
    return [_cached(raw, key) if isinstance(raw, str) else "!not_a_number" for raw in raws]


def outcome(found: str) -> Normalized:
    """The result an `outcomes` string stands for."""
    if found[0] == "+":
        return Normalized(found)
    return _FAILED[found[1:]] if found[0] == "!" else Normalized(found[1:], None, True)


def canonical_and_variants(raw: str, region: str | None = None) -> tuple[str, tuple[str, ...]]:
    """The canonical E.164 of `raw` (old forms rewritten) and the other numbers that may be
    the same line. Raises :class:`InvalidNumber` as :func:`normalize` does."""
    e164 = normalize(raw, region)
    return e164, variants(e164)


def invalid_entry(raw: object, reason: str, index: int | None = None) -> dict[str, Any]:
    """The report of one number that was not taken: `{index, phone, reason}` (the address
    book's and the relation sync's `invalid[]`, the SDK's invalid entries). `phone` is the raw
    text as sent (None when it was not a string); `index` its place in the request."""
    entry: dict[str, Any] = {} if index is None else {"index": index}
    entry["phone"] = raw if isinstance(raw, str) else None
    entry["reason"] = reason
    return entry


def rewritten_entry(raw: str, e164: str, index: int) -> dict[str, Any]:
    """The report of a number read in an old form and taken as the current number it became:
    `{index, from, to}` (the address book's and the relation sync's `rewritten[]`)."""
    return {"index": index, "from": raw, "to": e164}


def read_all(
    raws: Iterable[object], region: str | None, found: Sequence[str] | None = None
) -> tuple[list[tuple[int, Normalized]], list[dict[str, Any]]]:
    """Normalise a request's numbers: `(index, result)` for each one that reads (its `e164`
    set), in order, and the `invalid_entry` report (by index) of the ones that do not.
    `found`: their `outcomes`, read elsewhere (a worker process), to report instead."""
    valid: list[tuple[int, Normalized]] = []
    invalid: list[dict[str, Any]] = []
    for index, raw in enumerate(raws):
        if found is not None:
            result = outcome(found[index])
        elif isinstance(raw, str):
            result = try_normalize(raw, region)
        else:
            result = _FAILED["not_a_number"]
        if result.e164 is None:
            invalid.append(invalid_entry(raw, result.reason or "invalid_number", index))
        else:
            valid.append((index, result))
    return valid, invalid


# One shared result per failure reason.
_FAILED = {reason: Normalized(None, reason) for reason in REASONS}


@lru_cache(maxsize=200_000)
def _cached(raw: str, region: str | None) -> str:
    # The cache holds plain strings ("+E164", "~+E164" when rewritten, or "!reason"): strings
    # are invisible to the cyclic garbage collector, 200,000 result objects would add ~20 ms
    # to every full pass.
    result = _uncached(raw, region)
    if result.e164 is None:
        return "!" + (result.reason or "invalid_number")
    return "~" + result.e164 if result.rewritten else result.e164


def _uncached(raw: str, region: str | None) -> Normalized:
    if len(raw) > _MAX_RAW:
        return Normalized(None, "too_long")
    text = raw.strip()
    if _E164.fullmatch(text):
        return _validate_e164(text)
    result, number = _validate(text, region)
    if result.e164 is None:
        # "00" is the international prefix almost everywhere, but libphonenumber only reads
        # it so when the region's own prefix is 00; an "00 44 …" number in a US phone book
        # would otherwise never match.
        digits = text.lstrip(" (")
        retried = None
        if digits.startswith("00") and not digits.startswith("000"):
            retry, retried = _validate("+" + digits[2:], None)
            if retry.e164 is not None:
                return retry
        for parsed in (number, retried):
            if parsed is not None and (old := _old_form(parsed)) is not None:
                return old
    return result


def _old_form(number: PhoneNumber) -> Normalized | None:
    """A refused number that an old-form rule maps to a valid current one, rewritten."""
    country_code = number.country_code or 0
    if not phone_variants.has_old_forms(country_code):
        return None
    nsn = phonenumbers.national_significant_number(number)
    current = phone_variants.rewrite(country_code, nsn)
    return None if current is None else Normalized(current, None, True)


def _validate_e164(text: str) -> Normalized:
    """The cheap path for input already in E.164 (what the SDK sends): no parsing, since the
    digits are already canonical; only the country code is split off and validity checked."""
    for length in (1, 2, 3):
        country_code = int(text[1 : 1 + length])
        if country_code in COUNTRY_CODE_TO_REGION_CODE:
            national = text[1 + length :]
            # the national significant number as libphonenumber spells it: Italian-style
            # numbers keep their leading zeros in E.164
            zeros = len(national) - len(national.lstrip("0"))
            nsn = "0" * zeros + str(int(national))
            if phone_validity.is_valid(country_code, nsn):  # phonenumbers.is_valid_number
                return Normalized(text)
            # Not valid as written: the full path gives the precise reason (or the old form).
            return _full(text)
    return Normalized(None, "invalid_country_code")


def _full(text: str) -> Normalized:
    """The full path for a number with its country code: parse, validate, old forms."""
    result, parsed = _validate(text, None)
    if result.e164 is None and parsed is not None:
        return _old_form(parsed) or result
    return result


def _validate(text: str, region: str | None) -> tuple[Normalized, PhoneNumber | None]:
    """The outcome, and the parsed number when there was one (for the old-form rules)."""
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException as exc:
        return Normalized(None, _PARSE_REASON.get(exc.error_type, "not_a_number")), None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != ValidationResult.IS_POSSIBLE and possible in _POSSIBLE_REASON:
        return Normalized(None, _POSSIBLE_REASON[possible]), number
    if not phonenumbers.is_valid_number(number):
        return Normalized(None, "invalid_number"), number
    return Normalized(phonenumbers.format_number(number, PhoneNumberFormat.E164)), number


@lru_cache(maxsize=50_000)
def region_of(e164: str) -> str | None:
    """The region a normalised number belongs to ("US", "DE", …), or None."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except NumberParseException:
        return None
    return region if region in _REGIONS else None


def mask(e164: str) -> str:
    """A number fit for logs and screens: country code and last two digits only."""
    if len(e164) < 6:
        return "***"
    return e164[:3] + "*" * (len(e164) - 5) + e164[-2:]


def cache_clear() -> None:
    """Forget cached results (benchmarks measure the cold path with it)."""
    _cached.cache_clear()
    region_of.cache_clear()
    phone_variants.cache_clear()
