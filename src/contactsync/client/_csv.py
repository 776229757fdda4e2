"""CSV contact exports: Google Contacts (old and new layouts) and Outlook, read by header.

Google writes "Name" or "First Name"/"Last Name" and pairs of "Phone N - Type|Label" and
"Phone N - Value" columns, several numbers in one cell joined by " ::: ". Outlook writes
"First Name", "Middle Name", "Last Name" and one column per kind of phone ("Mobile Phone",
"Business Phone", "Home Phone 2", …), in the language of the user's Outlook ("Vorname",
"Mobiltelefon", "Téléphone domicile"…). Any other column whose header names a phone is read
too. Excel's `sep=;` first line sets the delimiter.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from contactsync.client._models import Contact, SourceProblem

__all__ = ["CsvLayout", "read_rows"]

# English first, then the headers of localised Outlook and contacts-export apps (de, fr, es,
# it, pt, nl)
_NAME = ("name", "display name", "full name", "file as", "anzeigename", "nom complet")
_FIRST = ("first name", "given name", "first", "vorname", "prénom", "nombre", "nome", "voornaam")
_MIDDLE = ("middle name", "additional name", "weitere vornamen", "deuxième prénom")
_LAST = (
    "last name",
    "family name",
    "last",
    "nachname",
    "nom",
    "apellidos",
    "apellido",
    "cognome",
    "sobrenome",
    "achternaam",
)
_ORG = ("organization name", "organization 1 - name", "company", "firma", "société", "empresa")
_ID = ("uid", "id", "contact id")
_PHONE_WORDS = (
    "phone",
    "mobile",
    "pager",
    "callback",
    "telephone",
    "telefon",
    "mobil",
    "handy",
    "téléphone",
    "portable",
    "teléfono",
    "móvil",
    "celular",
    "telefone",
    "telefono",
    "cellulare",
    "telefoon",
    "mobiel",
    "fax",
)


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
    skipped = 0
    sep = first_line.strip().lower()
    if sep.startswith("sep=") and len(sep) == 5:  # Excel: "sep=;" names the delimiter
        delimiter = first_line.strip()[4]
        text = text.split("\n", 1)[1] if "\n" in text else ""
        skipped = 1
    elif first_line.count(";") > first_line.count(",") and first_line.count(";") > 0:
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
                yield reader.line_num + skipped, ["\x00error", str(exc)]
                continue
            if any(cell.strip() for cell in row):
                yield reader.line_num + skipped, row

    return layout, rows()


def problem_of(row: list[str], layout: CsvLayout, where: str) -> SourceProblem | None:
    if row and row[0] == "\x00error":
        return SourceProblem(where, "malformed_csv_row", f"unreadable CSV row: {row[1]}"[:200])
    if len(row) > layout.width + 2:
        return SourceProblem(
            where, "malformed_csv_row", f"{len(row)} cells where the header has {layout.width}"
        )
    return None
