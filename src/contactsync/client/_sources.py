"""Where contacts come from: a list in memory, vCard files or folders, CSV exports.

A source is scanned as (key, record) pairs, the key being a hash of the record's raw content.
The manager parses and normalises only records whose key it has not seen before, which is
what makes a resync after a few edits cost milliseconds: unchanged cards are never parsed.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from contactsync.client._csv import problem_of, read_rows
from contactsync.client._models import Contact, SourceProblem
from contactsync.client._vcard import (
    card_bytes,
    decode_bytes,
    decode_card,
    line_at,
    name_in,
    parse_card,
    split_cards,
)

__all__ = ["ContactSource", "MemorySource", "VCardSource", "CsvSource", "open_source"]

Record = tuple[str, Any]


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


def _unique_batches(batches: Iterable[list[Record]]) -> Iterator[Record]:
    """`_unique` over records that come in lists (a file's cards): a list without a key
    seen before passes whole, with no Python step per record (most of a resync's scan)."""
    seen: dict[str, int] = {}

    def unique(batch: list[Record]) -> list[Record]:
        keys = dict.fromkeys([key for key, _ in batch], 1)
        if len(keys) == len(batch) and seen.keys().isdisjoint(keys):
            seen.update(keys)
            return batch
        return list(_unique_in(batch, seen))

    return itertools.chain.from_iterable(map(unique, batches))


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
        self._read_before: dict[Path, tuple[int, int, list[Record]]] = {}

    def scan(self) -> Iterator[Record]:
        # one file at a time, each file's cards as one list built with whole-list operations
        if not self.path.is_dir():
            self._read_before.clear()
            return _unique_batches(map(self._records, self.files()))
        files = self.files()
        for gone in set(self._read_before) - set(files):
            del self._read_before[gone]
        return _unique_batches(map(self._folder_records, files))

    def _folder_records(self, path: Path) -> list[Record]:
        try:
            st = path.stat()
        except OSError:
            return self._records(path)
        before = self._read_before.get(path)
        if before is not None and before[:2] == (st.st_size, st.st_mtime_ns):
            return before[2]
        records = self._records(path)
        # an unreadable file is tried again: access may come back without a new mtime
        if not records or records[0][1][2] >= 0:
            self._read_before[path] = (st.st_size, st.st_mtime_ns, records)
        return records

    def _records(self, path: Path) -> list[Record]:
        label = self._label(path)
        try:
            data = card_bytes(path.read_bytes())
        except OSError:
            return [(content_key("unreadable", label), (label, b"", -1, None))]
        cards = list(split_cards(data))
        offsets = [offset for offset, _ in cards]
        bodies = [body for _, body in cards]
        blake2b = hashlib.blake2b
        if None in bodies:
            keys = [
                blake2b(body, digest_size=16).hexdigest()
                if body is not None
                else content_key(label, str(offset))
                for offset, body in zip(offsets, bodies, strict=True)
            ]
        else:
            keys = [blake2b(body, digest_size=16).hexdigest() for body in bodies]  # type: ignore[arg-type]
        records = zip(itertools.repeat(label), itertools.repeat(data), offsets, bodies)
        return list(zip(keys, records, strict=True))

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
