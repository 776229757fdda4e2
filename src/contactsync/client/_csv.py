"""CSV contact exports: Google Contacts (old and new layouts) and Outlook, read by header.

Google writes "Name" or "First Name"/"Last Name" and pairs of "Phone N - Type|Label" and
"Phone N - Value" columns, several numbers in one cell joined by " ::: ". Outlook writes
"First Name", "Middle Name", "Last Name" and one column per kind of phone ("Mobile Phone",
"Business Phone", "Home Phone 2", …). Any other column whose header names a phone is read too.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from contactsync.client._models import Contact, SourceProblem

__all__ = ["CsvLayout", "read_rows"]

_NAME = ("name", "display name", "full name", "file as")
_FIRST = ("first name", "given name")
_MIDDLE = ("middle name", "additional name")
_LAST = ("last name", "family name")
_ORG = ("organization name", "organization 1 - name", "company")
_ID = ("uid", "id", "contact id")
_PHONE_WORDS = ("phone", "mobile", "pager", "callback", "telephone", "fax")


class CsvLayout:
    """Which columns hold what, worked out once from the header row."""

    def __init__(self, header: list[str]) -> None:
        low = [h.strip().lower() for h in header]
        self.width = len(header)

        def first(names: tuple[str, ...]) -> int | None:
            for name in names:
                if name in low:
                    return low.index(name)
            return None

        self.name = first(_NAME)
        self.first = first(_FIRST)
        self.middle = first(_MIDDLE)
        self.last = first(_LAST)
        self.org = first(_ORG)
        self.id = first(_ID)
        self.phones = [
            i
            for i, h in enumerate(low)
            if any(w in h for w in _PHONE_WORDS)
            and not h.endswith((" - type", " - label"))
            and "fax" not in h
        ]
        self.usable = bool(self.phones) and (
            self.name is not None or self.first is not None or self.last is not None
        )

    def contact(self, row: list[str], fallback_id: str) -> Contact:
        def cell(i: int | None) -> str:
            return row[i].strip() if i is not None and i < len(row) else ""

        name = cell(self.name) or " ".join(
            p for p in (cell(self.first), cell(self.middle), cell(self.last)) if p
        )
        name = name or cell(self.org)
        phones: list[str] = []
        for i in self.phones:
            for part in cell(i).split(":::"):
                if part.strip():
                    phones.append(part.strip())
        return Contact(cell(self.id) or fallback_id, name or None, tuple(phones))


def read_rows(text: str) -> tuple[CsvLayout | None, Iterator[tuple[int, list[str]]]]:
    """The header's layout and the (line number, cells) of each data row."""
    sample = text[:4096]
    delimiter = ","
    first_line = sample.split("\n", 1)[0]
    if first_line.count(";") > first_line.count(",") and first_line.count(";") > 0:
        delimiter = ";"  # European Excel and Outlook locales
    elif first_line.count("\t") > first_line.count(","):
        delimiter = "\t"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return None, iter(())
    layout = CsvLayout(header)

    def rows() -> Iterator[tuple[int, list[str]]]:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a NUL byte; skip the line, report it
                yield reader.line_num, ["\x00error", str(exc)]
                continue
            if any(cell.strip() for cell in row):
                yield reader.line_num, row

    return layout, rows()


def problem_of(row: list[str], layout: CsvLayout, where: str) -> SourceProblem | None:
    if row and row[0] == "\x00error":
        return SourceProblem(where, "malformed_csv_row", f"unreadable CSV row: {row[1]}"[:200])
    if len(row) > layout.width + 2:
        return SourceProblem(
            where, "malformed_csv_row", f"{len(row)} cells where the header has {layout.width}"
        )
    return None
