"""The private-discovery filter: a compact set of 63-bit tag keys, and the deltas after it.

Format (version 1), zlib-compressed after the 4-byte magic `CSF1`:
    header  >B bits, >I count, >Q version, >I key_version
    counts  2**bits bytes: how many keys fall in each bucket (the top `bits` bits of a key)
    prints  count x 4 bytes, big-endian: the next 32 bits of each key, bucket by bucket, sorted

`bits` is the smallest value with 2**bits >= count, so a bucket holds about one key and a
lookup of a key that is not in the set matches with probability (keys in its bucket) / 2**32,
at most about 2.3e-10 (the issue asks for <= 1e-9). The fingerprints are random, so they stay
4 bytes each; the bucket counts compress to well under a byte a key: about 4.3 bytes a key in
all (measured by `scripts/bench private`).

A delta is a run of 9-byte records: a flag byte (bit 0: added, else removed; bit 1: the
addition is a registration whose holders may be told "X joined") and the 8-byte key. Later
records win over earlier ones and over the base filter.
"""

from __future__ import annotations

import struct
import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate

MAGIC = b"CSF1"
KEY_BITS = 63
PRINT_BITS = 32
_HEADER = struct.Struct(">BIQI")
_RECORD = struct.Struct(">BQ")
ADDED = 1
ANNOUNCE = 2
MAX_BITS = KEY_BITS - PRINT_BITS


class BadFilter(ValueError):
    """Bytes that are not a filter or delta of this format."""


def _bits_for(count: int) -> int:
    bits = max(1, (max(count, 1) - 1).bit_length())
    return min(bits, MAX_BITS)


def encode(keys: Iterable[int], *, version: int, key_version: int) -> bytes:
    """The filter of these keys (any order, duplicates allowed)."""
    ordered = sorted(set(keys))
    bits = _bits_for(len(ordered))
    while True:
        shift = KEY_BITS - bits
        counts = bytearray(1 << bits)
        try:
            for key in ordered:
                counts[key >> shift] += 1
        except ValueError:  # a bucket above 255 keys: never in practice, but stay correct
            bits += 1
            if bits > MAX_BITS:
                raise
            continue
        break
    low = shift - PRINT_BITS
    prints = array("I", [(key >> low) & 0xFFFFFFFF for key in ordered])
    if sys.byteorder == "little":
        prints.byteswap()
    body = _HEADER.pack(bits, len(ordered), version, key_version) + bytes(counts)
    return MAGIC + zlib.compress(body + prints.tobytes(), 6)


@dataclass
class Filter:
    """A decoded filter: `contains` answers for the base set only (see `FilterState`)."""

    bits: int
    count: int
    version: int
    key_version: int
    offsets: array
    prints: array

    @classmethod
    def decode(cls, data: bytes) -> Filter:
        if not data.startswith(MAGIC):
            raise BadFilter("not a contactsync filter")
        try:
            body = zlib.decompress(data[len(MAGIC) :])
            bits, count, version, key_version = _HEADER.unpack_from(body)
        except (zlib.error, struct.error) as exc:
            raise BadFilter(str(exc)) from None
        start = _HEADER.size
        buckets = 1 << bits
        counts = body[start : start + buckets]
        prints = array("I")
        prints.frombytes(body[start + buckets : start + buckets + 4 * count])
        if len(counts) != buckets or len(prints) != count or sum(counts) != count:
            raise BadFilter("truncated filter")
        if sys.byteorder == "little":
            prints.byteswap()
        offsets = array("I", [0])
        offsets.extend(accumulate(counts))
        return cls(bits, count, version, key_version, offsets, prints)

    def contains(self, key: int) -> bool:
        shift = KEY_BITS - self.bits
        bucket = key >> shift
        fingerprint = (key >> (shift - PRINT_BITS)) & 0xFFFFFFFF
        lo, hi = self.offsets[bucket], self.offsets[bucket + 1]
        at = bisect_left(self.prints, fingerprint, lo, hi)
        return at < hi and self.prints[at] == fingerprint


def encode_changes(changes: Iterable[tuple[int, bool, bool]]) -> bytes:
    """(key, added, announce) records in order."""
    return b"".join(
        _RECORD.pack((ADDED if added else 0) | (ANNOUNCE if announce else 0), key)
        for key, added, announce in changes
    )


def decode_changes(data: bytes) -> Iterator[tuple[int, bool, bool]]:
    if len(data) % _RECORD.size:
        raise BadFilter("a delta is a whole number of 9-byte records")
    for flags, key in _RECORD.iter_unpack(data):
        yield key, bool(flags & ADDED), bool(flags & ANNOUNCE)


@dataclass
class FilterState:
    """A base filter plus the deltas applied after it: what a client matches against."""

    base: Filter | None = None
    overrides: dict[int, bool] = field(default_factory=dict)

    def apply(self, changes: Iterable[tuple[int, bool, bool]]) -> None:
        for key, added, _announce in changes:
            self.overrides[key] = added

    def contains(self, key: int) -> bool:
        known = self.overrides.get(key)
        if known is not None:
            return known
        return self.base is not None and self.base.contains(key)
