"""Reproducible users and address books for benchmarks and tests, with no outside files.

Numbers come from each country's mobile example number with the subscriber digits varied,
like ../shared/tools/gen_book.py, but fast enough for a million users: a few hundred prefixes
per country are validated once with libphonenumber, then only the last four digits vary (which
keeps the number valid). Books mix national and international styles, `00` and `011`
prefixes, dots and slashes, extensions and junk, and names in many scripts.
"""

from __future__ import annotations

import random
from functools import cache

import phonenumbers as pn

COUNTRIES = [
    ("US", 0.40),
    ("DE", 0.12),
    ("IN", 0.12),
    ("GB", 0.10),
    ("BR", 0.08),
    ("FR", 0.06),
    ("NG", 0.04),
    ("JP", 0.04),
    ("CA", 0.04),
]
NAMES = [
    "Ana",
    "Bob",
    "Chen Wei",
    "Dmitri",
    "Élodie",
    "Farah",
    "Gökhan",
    "Hiro",
    "Ines",
    "José",
    "Kwame",
    "Lena",
    "Müller",
    "Nnamdi",
    "Olga",
    "Priya",
    "Quentin",
    "Rūta",
    "Saanvi",
    "Tomás",
    "山田 太郎",
    "Анна",
    "محمد",
    "Δημήτρης",
    "😀 Mum",
    "O'Brien",
    "van der Berg",
    "Zoë",
]
JUNK = ["ask Bob", "n/a", "0", "+", "12", "call me", "+999 123", "tel:", "555", "++4930"]


@cache
def _prefixes(region: str, count: int = 400) -> tuple[tuple[int, str], ...]:
    """(country code, national prefix without its last 4 digits) pairs that give valid numbers."""
    rng = random.Random(f"prefix-{region}")
    base = pn.example_number_for_type(region, pn.PhoneNumberType.MOBILE)
    digits = str(base.national_number)
    found: set[str] = set()
    keep = max(1, len(digits) - 7)
    for _ in range(count * 20):
        cand = digits[:keep] + "".join(rng.choice("0123456789") for _ in range(len(digits) - keep))
        if all(
            pn.is_valid_number(
                pn.PhoneNumber(
                    country_code=base.country_code, national_number=int(cand[:-4] + tail)
                )
            )
            for tail in ("0000", "5555", "9999")
        ):
            found.add(cand[:-4])
        if len(found) >= count:
            break
    return tuple((base.country_code, p) for p in sorted(found))


def _region(rng: random.Random) -> str:
    r, acc = rng.random(), 0.0
    for region, share in COUNTRIES:
        acc += share
        if r < acc:
            return region
    return "US"


def random_e164(rng: random.Random, region: str | None = None) -> str:
    cc, prefix = rng.choice(_prefixes(region or _region(rng)))
    return f"+{cc}{prefix}{rng.randrange(10_000):04d}"


def users(count: int, seed: int = 1) -> list[str]:
    """`count` distinct E.164 numbers."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        number = random_e164(rng)
        if number not in seen:
            seen.add(number)
            out.append(number)
    return out


def written(rng: random.Random, e164: str, home: str) -> str:
    """The number as a person might have typed it, seen from a phone in region `home`."""
    n = pn.parse(e164, None)
    region = pn.region_code_for_number(n)
    intl = pn.format_number(n, pn.PhoneNumberFormat.INTERNATIONAL)
    style = rng.random()
    if region == home and style < 0.45:
        s = pn.format_number(n, pn.PhoneNumberFormat.NATIONAL)
    elif style < 0.60:
        s = intl
    elif style < 0.70:
        s = {"US": "011 ", "CA": "011 ", "JP": "010 "}.get(home, "00") + intl[1:]
    elif style < 0.80:
        s = e164
    elif style < 0.88:
        s = intl.replace(" ", ".").replace("-", ".")
    elif style < 0.94 and region == home:
        s = pn.format_number(n, pn.PhoneNumberFormat.NATIONAL).replace(" ", "/", 1)
    else:
        s = intl.replace(" ", "")
    if rng.random() < 0.02:
        s += rng.choice([" ext. 12", " x3", ";ext=7"])
    return s


def book(
    count: int,
    *,
    registered: list[str] | None = None,
    ratio: float = 0.05,
    seed: int = 2,
    home: str = "US",
    style: str = "e164",
    junk: float = 0.0,
) -> list[dict[str, str]]:
    """An address book of `count` contacts; about `ratio` of them drawn from `registered`.

    style "e164" writes numbers as the SDK sends them; "written" as people type them.
    """
    rng = random.Random(seed)
    taken = set(registered or ())
    contacts: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(contacts) < count:
        if registered and rng.random() < ratio:
            number = rng.choice(registered)
        else:
            number = random_e164(rng)
            if number in taken:
                continue
        if number in seen:
            continue
        seen.add(number)
        name = f"{rng.choice(NAMES)} {len(contacts)}"
        if junk and rng.random() < junk:
            contacts.append({"name": name, "phone": rng.choice(JUNK)})
            continue
        phone = number if style == "e164" else written(rng, number, home)
        contacts.append({"name": name, "phone": phone})
    return contacts
