"""The oblivious pseudo-random function of private discovery, on ristretto255 (libsodium).

F_k(n) = SHA-512("contactsync/oprf/v1/out" | n | H(n)^k)[:16], with H(n) libsodium's
`crypto_core_ristretto255_from_hash` of a domain-separated SHA-512 of the E.164 number (the
2HashDH construction, as in Kales et al., "Mobile Private Contact Discovery at Scale").

The client blinds: it sends H(n)^r for a fresh random scalar r, the server answers
(H(n)^r)^k, and the client unblinds with r^-1 to H(n)^k. The server never sees n or H(n); the
client never sees k. The server computes F_k(n) of its own users directly (`tag`).

Every group operation is libsodium's, through `rbcl` (a maintained binding whose wheel carries
libsodium itself, so no system package is needed). Nothing here is elliptic-curve arithmetic of
our own: this module only chains libsodium calls and hashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Iterable, Sequence

import rbcl

__all__ = [
    "POINT_BYTES",
    "SCALAR_BYTES",
    "TAG_BYTES",
    "InvalidPoint",
    "blind",
    "evaluate",
    "filter_key",
    "finalize",
    "is_valid_point",
    "new_key",
    "tag",
    "unblind",
]

POINT_BYTES = 32
SCALAR_BYTES = 32
TAG_BYTES = 16


def _drop_library_copy() -> None:
    """rbcl writes the libsodium it carries to a new temporary file at every import and
    loads it from there, never deleting it: 2.8 MB left in $TMPDIR by every process that
    imports it (each server worker, SDK app and CLI run; 647 files, 1.7 GB, in this
    machine's /tmp after a morning of test runs). Once loaded, the mapping no longer needs
    the file on Linux and macOS, so it goes now; Windows keeps a loaded DLL locked (the
    unlink fails, harmlessly). The copy is also why $TMPDIR must not be mounted noexec."""
    for name in ("rbcl._sodium", "_sodium"):
        path = getattr(sys.modules.get(name), "lib_path", None)
        if isinstance(path, str) and path.endswith((".so", ".pyd")):
            with contextlib.suppress(OSError):
                os.unlink(path)


_drop_library_copy()

_HASH_DOMAIN = b"contactsync/oprf/v1/hash-to-group\x00"
_OUT_DOMAIN = b"contactsync/oprf/v1/out\x00"


class InvalidPoint(ValueError):
    """Bytes that are not the canonical encoding of a ristretto255 group element."""


def _hash_to_group(e164: str) -> bytes:
    digest = hashlib.sha512(_HASH_DOMAIN + e164.encode()).digest()
    return bytes(rbcl.crypto_core_ristretto255_from_hash(digest))


def new_key() -> bytes:
    """A fresh server key: a uniformly random non-zero scalar."""
    return bytes(rbcl.crypto_core_ristretto255_scalar_random())


def blind(e164: str) -> tuple[bytes, bytes]:
    """(r, H(n)^r) for a fresh random scalar r: the point is what the client sends."""
    r = bytes(rbcl.crypto_core_ristretto255_scalar_random())
    return r, bytes(rbcl.crypto_scalarmult_ristretto255(r, _hash_to_group(e164)))


_IDENTITY = bytes(POINT_BYTES)


def is_valid_point(point: bytes) -> bool:
    """A canonical encoding of a group element other than the identity (which libsodium
    accepts as valid but refuses to multiply)."""
    return (
        len(point) == POINT_BYTES
        and point != _IDENTITY
        and bool(rbcl.crypto_core_ristretto255_is_valid_point(point))
    )


def evaluate(key: bytes, point: bytes) -> bytes:
    """The server's step: point^k, refusing anything that is not a valid group element."""
    if not is_valid_point(point):
        raise InvalidPoint("not a canonical ristretto255 point")
    try:
        return bytes(rbcl.crypto_scalarmult_ristretto255(key, point))
    except RuntimeError:  # the identity: libsodium refuses to multiply it
        raise InvalidPoint("the identity element") from None


def unblind(r: bytes, evaluated: bytes) -> bytes:
    """H(n)^k from the server's answer (H(n)^r)^k."""
    if not is_valid_point(evaluated):
        raise InvalidPoint("the server answered with an invalid point")
    inverse = rbcl.crypto_core_ristretto255_scalar_invert(r)
    return bytes(rbcl.crypto_scalarmult_ristretto255(inverse, evaluated))


def finalize(e164: str, point: bytes) -> bytes:
    """F_k(n) from n and H(n)^k."""
    return hashlib.sha512(_OUT_DOMAIN + e164.encode() + b"\x00" + point).digest()[:TAG_BYTES]


def tag(key: bytes, e164: str) -> bytes:
    """F_k(n) computed with the key (the server, for its own users: one scalar multiplication)."""
    return finalize(e164, bytes(rbcl.crypto_scalarmult_ristretto255(key, _hash_to_group(e164))))


def filter_key(value: bytes) -> int:
    """The 63-bit integer of a tag that the filter and its deltas are built from."""
    return int.from_bytes(value[:8], "big") >> 1


def evaluate_many(key: bytes, points: Sequence[bytes]) -> list[bytes]:
    return [evaluate(key, p) for p in points]


def tags(key: bytes, numbers: Iterable[str]) -> list[bytes]:
    return [tag(key, n) for n in numbers]
