"""How a request's numbers are read: which region a number without a country code is read in,
and what a number that does not read becomes (`InvalidPhone`, or an entry of the `invalid[]`
report). Parsing itself is `contactsync.phone`'s.

The region rule, the one place it lives: the request's own region (which must be valid), else
the caller's (the region of their own number), else the server's `default_region`.
"""

from __future__ import annotations

from contactsync import phone as phones
from contactsync.errors import InvalidPhone, InvalidRegion


def check_region(region: str) -> str:
    """The upper-cased code of a region libphonenumber knows, else InvalidRegion."""
    code = phones.valid_region(region)
    if code is None:
        raise InvalidRegion(details={"region": region})
    return code


def resolve_region(region: str | None, *fallbacks: str | None) -> str | None:
    """The first usable region: the request's (which must be valid), else the fallbacks."""
    if region:
        return check_region(region)
    for candidate in fallbacks:
        if candidate:
            return candidate
    return None


def normalize_phone(raw: str, region: str | None, field: str = "phone") -> str:
    """One number as E.164, else InvalidPhone naming the request's field and the reason."""
    try:
        return phones.normalize(raw, region)
    except phones.InvalidNumber as exc:
        raise InvalidPhone(exc.reason, field=field) from None
