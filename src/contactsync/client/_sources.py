"""Where contacts come from: a list in memory, vCard files or folders, CSV exports.

A source is scanned as (key, record) pairs, the key being a hash of the record's raw content.
The manager parses and normalises only records whose key it has not seen before, which is
what makes a resync after a few edits cost milliseconds: unchanged cards are never parsed.
It takes them as lists (`scan_lists`: keys, records), which a vCard file gives without a
pair, a record or a hash per unchanged card: it remembers the keys of the card texts it read.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from contactsync.client._csv import problem_of, read_rows
from contactsync.client._models import Contact, SourceProblem
from contactsync.client._vcard import (
    card_bytes,
    decode_bytes,
    decode_card,
    line_at,
    name_in,
    parse_card,
    split_card_lists,
)

__all__ = ["ContactSource", "MemorySource", "VCardSource", "CsvSource", "open_source"]

Record = tuple[str, Any]
Records = tuple[list[str], Sequence[Any]]  # (keys, records): records[i] has key keys[i]
_LIST = 2_000  # records per list when a source's scan is taken as lists


def content_key(*parts: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()


class ContactSource:
    """Base of every source. Subclasses implement `scan` and `parse`."""

    def has_access(self) -> bool:
        """Whether the user allowed access to these contacts (always, for files)."""
        return True

    def fingerprint(self) -> str | None:
        """A cheap summary that changes when the contents may have changed (None: unknown)."""
        return None

    def scan(self) -> Iterator[Record]:
        """(content key, raw record) for every record; keys are unique within one scan."""
        raise NotImplementedError

    def scan_lists(self) -> Iterator[Records]:
        """The records of `scan`, in its order, as lists: (keys, records), records[i] keyed
        keys[i]. A source that reads records in bulk (a file's cards) gives them without a
        (key, record) pair per record: a resync goes through every record of the book and
        only looks at those whose key is new."""
        records = iter(self.scan())
        while batch := list(itertools.islice(records, _LIST)):
            yield [key for key, _ in batch], [record for _, record in batch]

    def parse(self, record: Any) -> Contact | SourceProblem:
        """The contact in one raw record, or why it cannot be read."""
        raise NotImplementedError

    def contacts(self) -> list[Contact | SourceProblem]:
        """Everything, parsed (for tools and tests; sync uses scan/parse)."""
        return [self.parse(record) for _, record in self.scan()]


def _unique(records: Iterable[Record]) -> Iterator[Record]:
    """Identical records (the same card twice) still get distinct keys."""
    return _unique_in(records, {})


def _unique_in(records: Iterable[Record], seen: dict[str, int]) -> Iterator[Record]:
    for key, record in records:
        count = seen.get(key, 0)
        seen[key] = count + 1
        yield (key if count == 0 else f"{key}.{count}"), record


def _unique_lists(batches: Iterable[Records]) -> Iterator[Records]:
    """`_unique` over records that come in lists (a file's cards): a list without a key
    seen before passes whole, with no Python step per record (most of a resync's scan)."""
    seen: dict[str, int] = {}
    for keys, records in batches:
        fresh = dict.fromkeys(keys, 1)
        if len(fresh) == len(keys) and seen.keys().isdisjoint(fresh):
            if seen:
                seen.update(fresh)
            else:
                seen = fresh
            yield keys, records
        else:
            pairs = _unique_in(zip(keys, itertools.repeat(None)), seen)
            yield [key for key, _ in pairs], records


class MemorySource(ContactSource):
    """Contacts held by the application; call `set(...)` then the manager's `notify_changed()`."""

    def __init__(self, contacts: Iterable[Contact] = (), *, access: bool = True) -> None:
        self._contacts = list(contacts)
        self.access = access

    def set(self, contacts: Iterable[Contact]) -> None:
        self._contacts = list(contacts)

    def has_access(self) -> bool:
        return self.access

    def scan(self) -> Iterator[Record]:
        return _unique((content_key(c.id, c.name or "", *c.phones), c) for c in self._contacts)

    def parse(self, record: Any) -> Contact | SourceProblem:
        return record  # type: ignore[no-any-return]


class _FileSource(ContactSource):
    suffixes: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def files(self) -> list[Path]:
        if self.path.is_dir():
            return sorted(
                p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in self.suffixes
            )
        return [self.path] if self.path.exists() else []

    def has_access(self) -> bool:
        return self.path.exists() and os.access(self.path, os.R_OK)

    def fingerprint(self) -> str | None:
        parts = []
        for p in self.files():
            try:
                st = p.stat()
            except OSError:
                continue
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
        return content_key(*parts)

    def _label(self, path: Path) -> str:
        return path.name if not self.path.is_dir() else str(path.relative_to(self.path))

    def _read(self, path: Path) -> str | None:
        try:
            return decode_bytes(path.read_bytes())
        except OSError:
            return None


class VCardSource(_FileSource):
    """One .vcf file or a folder of them (searched recursively)."""

    suffixes = (".vcf", ".vcard")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        # a folder's files as the last scan read them, by path: (size, mtime, records); an
        # unchanged file is not read again (one file per contact is the usual folder)
        self._read_before: dict[Path, tuple[int, int, Records]] = {}
        # per file, the content key of each card body the last scans met: a card is hashed
        # only the first time its text is met (an edit hashes the edited cards only). The key
        # is a hash of the body alone, so a body found here has exactly this key.
        self._keys_before: dict[Path, dict[bytes, str]] = {}

    def scan(self) -> Iterator[Record]:
        return itertools.chain.from_iterable(
            zip(keys, records, strict=True) for keys, records in self.scan_lists()
        )

    def scan_lists(self) -> Iterator[Records]:
        # one file at a time, each file's cards as lists built with whole-list operations
        files = self.files()
        for gone in set(self._keys_before) - set(files):
            del self._keys_before[gone]
        if not self.path.is_dir():
            self._read_before.clear()
            return _unique_lists(map(self._records, files))
        for gone in set(self._read_before) - set(files):
            del self._read_before[gone]
        return _unique_lists(map(self._folder_records, files))

    def _folder_records(self, path: Path) -> Records:
        try:
            st = path.stat()
        except OSError:
            return self._records(path)
        before = self._read_before.get(path)
        if before is not None and before[:2] == (st.st_size, st.st_mtime_ns):
            return before[2]
        keys, cards = self._records(path)
        # an unreadable file is tried again: access may come back without a new mtime
        if not cards or cards[0][2] >= 0:
            self._read_before[path] = (st.st_size, st.st_mtime_ns, (keys, cards))
        return keys, cards

    def _records(self, path: Path) -> tuple[list[str], _Cards]:
        label = self._label(path)
        try:
            data = card_bytes(path.read_bytes())
        except OSError:
            self._keys_before.pop(path, None)
            return [content_key("unreadable", label)], _Cards(label, b"", [-1], [None])
        offsets, bodies = split_card_lists(data)
        return self._keys(path, label, offsets, bodies), _Cards(label, data, offsets, bodies)

    def _keys(
        self, path: Path, label: str, offsets: list[int], bodies: list[bytes | None]
    ) -> list[str]:
        """The content key of each card, hashing only bodies the last scans did not meet."""
        before = self._keys_before.get(path)
        if before is None or len(bodies) < _REMEMBER:
            keys = _card_keys(label, offsets, bodies)
            if len(bodies) >= _REMEMBER:
                self._keys_before[path] = _bodies_keys(bodies, keys)
            return keys
        found: list[str | None] = list(map(before.get, bodies))  # type: ignore[arg-type]
        # the places of the bodies not met before (a key is never empty)
        missing = list(itertools.compress(range(len(found)), map(operator.not_, found)))
        if not missing:
            return found  # type: ignore[return-value]
        computed = _card_keys(label, [offsets[i] for i in missing], [bodies[i] for i in missing])
        for i, key in zip(missing, computed, strict=True):
            found[i] = key
        if len(before) + len(missing) > 2 * len(bodies) + 1_000:
            # edits left many bodies no longer in the file: keep the current ones only
            self._keys_before[path] = _bodies_keys(bodies, found)  # type: ignore[arg-type]
        else:
            for i, key in zip(missing, computed, strict=True):
                body = bodies[i]
                if body is not None:
                    before[body] = key
        return found  # type: ignore[return-value]  # (no None left)

    def parse(self, record: Any) -> Contact | SourceProblem:
        label, data, offset, body = record

        def where() -> str:  # counted only for the few cards that need it
            return f"{label}:{line_at(data, offset)}"

        if body is None:
            if offset < 0:
                return SourceProblem(label, "unreadable_file", "the file cannot be read")
            rest = data[offset + 11 : offset + 11 + 65536]  # a card is far shorter
            later = rest.upper().find(b"BEGIN:VCARD")
            text = decode_card(rest if later < 0 else rest[:later])
            return SourceProblem(
                where(), "malformed_vcard", "BEGIN:VCARD without END:VCARD", name_in(text)
            )
        text = decode_card(body)

        def fallback_id() -> str:
            # without a UID the content is the identity: an edit reads as remove + add, which
            # gives the same address book on the server (hashed only for such cards)
            return f"{label}#{content_key(text)[:16]}"

        return parse_card(text, fallback_id=fallback_id, where=where)


class _Cards(Sequence[tuple[str, bytes, int, "bytes | None"]]):
    """A file's cards as records, (label, file data, offset, body), made when looked at: a
    resync looks at the few new cards only."""

    __slots__ = ("label", "data", "offsets", "bodies")

    def __init__(
        self, label: str, data: bytes, offsets: list[int], bodies: list[bytes | None]
    ) -> None:
        self.label, self.data, self.offsets, self.bodies = label, data, offsets, bodies

    def __len__(self) -> int:
        return len(self.bodies)

    @overload
    def __getitem__(self, index: int) -> tuple[str, bytes, int, bytes | None]: ...
    @overload
    def __getitem__(self, index: slice) -> list[tuple[str, bytes, int, bytes | None]]: ...
    def __getitem__(
        self, index: int | slice
    ) -> tuple[str, bytes, int, bytes | None] | list[tuple[str, bytes, int, bytes | None]]:
        if isinstance(index, slice):
            label, data = itertools.repeat(self.label), itertools.repeat(self.data)
            return list(zip(label, data, self.offsets[index], self.bodies[index], strict=False))
        return self.label, self.data, self.offsets[index], self.bodies[index]

    def __iter__(self) -> Iterator[tuple[str, bytes, int, bytes | None]]:
        label, data = itertools.repeat(self.label), itertools.repeat(self.data)
        return zip(label, data, self.offsets, self.bodies, strict=False)


_REMEMBER = 100  # cards in a file from which the keys of its card bodies are remembered


def _card_keys(label: str, offsets: list[int], bodies: list[bytes | None]) -> list[str]:
    """Content keys of cards: a hash of the body; a card that never ends, by its place."""
    blake2b = hashlib.blake2b
    if None in bodies:
        return [
            blake2b(body, digest_size=16).hexdigest()
            if body is not None
            else content_key(label, str(offset))
            for offset, body in zip(offsets, bodies, strict=True)
        ]
    return [blake2b(body, digest_size=16).hexdigest() for body in bodies]  # type: ignore[arg-type]


def _bodies_keys(bodies: list[bytes | None], keys: list[str]) -> dict[bytes, str]:
    if None in bodies:
        return {body: key for body, key in zip(bodies, keys, strict=True) if body is not None}
    return dict(zip(bodies, keys, strict=True))  # type: ignore[arg-type]


class CsvSource(_FileSource):
    """A Google or Outlook CSV export, or a folder of them."""

    suffixes = (".csv",)

    def scan(self) -> Iterator[Record]:
        def records() -> Iterator[Record]:
            for path in self.files():
                label = self._label(path)
                text = self._read(path)
                layout, rows = read_rows(text or "")
                if layout is None or not layout.usable:
                    yield content_key("layout", label, text or ""), (label, 0, None, None)
                    continue
                header = content_key(*map(str, [layout.width, layout.phones, layout.name]))
                for line, row in rows:
                    yield content_key(header, *row), (label, line, layout, row)

        return _unique(records())

    def parse(self, record: Any) -> Contact | SourceProblem:
        label, line, layout, row = record
        where = f"{label}:{line}"
        if layout is None:
            return SourceProblem(
                label,
                "unknown_csv_layout",
                "no name and phone columns found (expected a Google or Outlook export)",
            )
        problem = problem_of(row, layout, where)
        if problem is not None:
            return problem
        contact: Contact = layout.contact(row, fallback_id=f"{label}#{content_key(*row)[:16]}")
        return contact


def open_source(path: str | os.PathLike[str]) -> ContactSource:
    """A source for a .vcf/.vcard file, a .csv file, or a folder (vCards, else CSVs)."""
    p = Path(path)
    if p.is_dir():
        vcards = VCardSource(p)
        if vcards.files() or not CsvSource(p).files():
            return vcards
        return CsvSource(p)
    if p.suffix.lower() == ".csv":
        return CsvSource(p)
    return VCardSource(p)
