"""libphonenumber's validity of a number in E.164 form, its own rules read once per region.

`phonenumbers.is_valid_number` picks the number's region, then tries the region's number
types one after another (premium rate, toll free, …, fixed line, mobile), each a length check
and a regular expression: some sixteen calls of Python a number, 8 µs, most of a first
upload's reading of 10,000 numbers. Validity asks only whether *any* type matches, and the
order of the types decides only which one. So here each region's type patterns for a given
length are joined into one expression (with the general pattern as a look-ahead), compiled
once: one match a number. The region is picked exactly as libphonenumber picks it (leading
digits, else the first region whose types match), from the same metadata.

`is_valid` answers as `phonenumbers.is_valid_number` does, for every number: tests/
test_phone_validity.py compares the two on every calling code, length and type, on the
examples of every region and on random digits.
"""

from __future__ import annotations

import re

from phonenumbers import (
    REGION_CODE_FOR_NON_GEO_ENTITY,
    PhoneMetadata,
    country_code_for_valid_region,
)
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

# In libphonenumber's order (`_number_type_helper`); mobile last, and only when its pattern
# is not the fixed line's.
_TYPES = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)
_NEVER = re.compile(r"(?!)")
_BACKREFERENCE = re.compile(r"\\[1-9]|\(\?P=")


class _InTurn:
    """Patterns that cannot be joined into one expression (one refers back to a group of its
    own, which joining would renumber; no metadata has one today): matched one after
    another, as libphonenumber does. The general pattern first, then any of the types."""

    def __init__(self, general: str, kinds: list[str]) -> None:
        self.general = re.compile(general)
        self.kinds = [re.compile(kind) for kind in kinds]

    def fullmatch(self, nsn: str) -> bool | None:
        if self.general.fullmatch(nsn) is None:
            return None
        return any(kind.fullmatch(nsn) for kind in self.kinds) or None


_COMPILED: dict[tuple[int, str, int], re.Pattern[str] | _InTurn] = {}


def is_valid(country_code: int, nsn: str) -> bool:
    """`phonenumbers.is_valid_number` of the number with this calling code and national
    significant number (as `phonenumbers.national_significant_number` spells it)."""
    plan = _PLANS.get(country_code)
    if plan is None:
        plan = _PLANS[country_code] = _plan(country_code)
    if not isinstance(plan, list):
        return plan is not None and _typed(plan, nsn)
    # a calling code shared by several regions (`_region_code_for_number_from_list`): the
    # first whose leading digits begin the number is its region, or with none, the first
    # whose types match it; then the number is valid if of a type of that region
    for leading, metadata, own in plan:
        if leading is not None:
            if leading.match(nsn):
                return own and _typed(metadata, nsn)
        elif _typed(metadata, nsn):
            return own
    return False


_Plan = PhoneMetadata | list[tuple[re.Pattern[str] | None, PhoneMetadata, bool]] | None
_PLANS: dict[int, _Plan] = {}


def _plan(country_code: int) -> _Plan:
    """What `is_valid` looks at for a calling code, read from the metadata once: its one
    region's metadata (None: no number of it is valid), or its regions' in order."""
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if regions is None:
        return None
    if len(regions) == 1:
        region = regions[0]
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region.upper())
        if metadata is None or (
            region != REGION_CODE_FOR_NON_GEO_ENTITY
            and country_code != country_code_for_valid_region(region)
        ):
            return None
        return metadata
    shared: list[tuple[re.Pattern[str] | None, PhoneMetadata, bool]] = []
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        leading = metadata.leading_digits
        # (whether the region has this calling code: is_valid_number_for_region's check)
        own = country_code == country_code_for_valid_region(region)
        shared.append((None if leading is None else re.compile(leading), metadata, own))
    return shared


def _typed(metadata: PhoneMetadata, nsn: str) -> bool:
    """Whether `nsn` is of some number type of the region (`_number_type_helper` is not
    UNKNOWN)."""
    key = (metadata.country_code or 0, metadata.id or "", len(nsn))
    pattern = _COMPILED.get(key)
    if pattern is None:
        pattern = _COMPILED[key] = _compile(metadata, len(nsn))
    return pattern.fullmatch(nsn) is not None


def _compile(metadata: PhoneMetadata, length: int) -> re.Pattern[str] | _InTurn:
    general = _pattern(metadata.general_desc, length)
    if general is None:
        return _NEVER
    names = _TYPES if metadata.same_mobile_and_fixed_line_pattern else (*_TYPES, "mobile")
    kinds = [p for name in names if (p := _pattern(getattr(metadata, name), length)) is not None]
    if not kinds:
        return _NEVER
    if any(_BACKREFERENCE.search(p) for p in (general, *kinds)):
        return _InTurn(general, kinds)
    alternatives = "|".join(f"(?:{p})" for p in kinds)
    return re.compile(f"(?=(?:{general})\\Z)(?:{alternatives})")


def _pattern(desc: object, length: int) -> str | None:
    """The desc's pattern when a number of `length` digits may match it (its possible lengths
    include it, or it has none), else None: `_is_number_matching_desc`."""
    if desc is None:
        return None
    lengths = desc.possible_length  # type: ignore[attr-defined]
    pattern = desc.national_number_pattern  # type: ignore[attr-defined]
    if (lengths and length not in lengths) or not pattern:
        return None
    return str(pattern)
