"""Contact sources: vCard 2.1/3.0/4.0 and CSV layouts, read from files written here."""

from __future__ import annotations

from pathlib import Path

import vobject

from contactsync.client import (
    Contact,
    CsvSource,
    MemorySource,
    SourceProblem,
    VCardSource,
    open_source,
)
from contactsync.client._vcard import line_at, split_card_lists, split_cards

V21 = (
    "BEGIN:VCARD\r\n"
    "VERSION:2.1\r\n"
    "N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;J=C3=BCrgen;;;\r\n"
    "FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:J=C3=BCrgen M=C3=BC=\r\n"
    "ller\r\n"
    "TEL;CELL;PREF:+49 151 23456789\r\n"
    "TEL;HOME:030 1234567\r\n"
    "item1.TEL;WORK:(0)30-7654321\r\n"
    "END:VCARD\r\n"
)
V30 = (
    "BEGIN:VCARD\n"
    "VERSION:3.0\n"
    "UID:abc-1\n"
    "FN:A very long name that is folded\n"
    "  across two lines\n"
    "N:Smith;Anne;;;\n"
    "TEL;TYPE=CELL,VOICE:+1 (415) 555-0101\n"
    "TEL;TYPE=HOME:415.555.0102\n"
    "END:VCARD\n"
)
V40 = (
    "BEGIN:VCARD\r\n"
    "VERSION:4.0\r\n"
    "UID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1\r\n"
    "FN:Zoë\\, the \\;escaped\r\n"
    'TEL;VALUE=uri;TYPE="voice,cell";PREF=1:tel:+1-415-555-0103;ext=7\r\n'
    "END:VCARD\r\n"
)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def only_contacts(items: list[Contact | SourceProblem]) -> list[Contact]:
    return [c for c in items if isinstance(c, Contact)]


def test_vcard_versions_several_numbers_folding_and_encodings(tmp_path: Path) -> None:
    source = VCardSource(write(tmp_path / "book.vcf", V21 + V30 + V40))
    a, b, c = source.contacts()
    assert isinstance(a, Contact) and isinstance(b, Contact) and isinstance(c, Contact)
    assert a.name == "Jürgen Müller"
    assert a.phones == ("+49 151 23456789", "030 1234567", "(0)30-7654321")
    assert b.id == "abc-1"
    assert b.name == "A very long name that is folded across two lines"
    assert b.phones == ("+1 (415) 555-0101", "415.555.0102")
    assert c.id == "urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1"
    assert c.name == "Zoë, the ;escaped"
    assert c.phones == ("+1-415-555-0103 ext. 7",)


def test_fast_parser_agrees_with_vobject(tmp_path: Path) -> None:
    text = V30 + "".join(
        f"BEGIN:VCARD\nVERSION:3.0\nUID:c{i}\nFN:Name {i} 山田\nTEL:+1 415 555 {i:04d}\n"
        f"TEL;TYPE=WORK:00 44 20 7946 {i:04d}\nEND:VCARD\n"
        for i in range(50)
    )
    mine = only_contacts(VCardSource(write(tmp_path / "b.vcf", text)).contacts())
    ref = [
        (str(c.uid.value), str(c.fn.value), tuple(str(t.value) for t in c.contents["tel"]))
        for c in vobject.readComponents(text)
    ]
    assert [(c.id, c.name, c.phones) for c in mine] == ref


def test_latin1_file_and_charset_parameter(tmp_path: Path) -> None:
    latin = "BEGIN:VCARD\nVERSION:2.1\nFN:José Ñandú\nTEL:+34 612 345 678\nEND:VCARD\n"
    cyr = (
        "BEGIN:VCARD\nVERSION:2.1\nFN;CHARSET=windows-1251:Анна\nTEL:+7 912 345 67 89\nEND:VCARD\n"
    )
    path = tmp_path / "old.vcf"
    path.write_bytes(latin.encode("latin-1") + cyr.encode("cp1251"))
    a, b = only_contacts(VCardSource(path).contacts())
    assert a.name == "José Ñandú"
    assert b.name == "Анна"


def test_utf16_with_bom(tmp_path: Path) -> None:
    [a] = only_contacts(
        VCardSource(write(tmp_path / "u.vcf", "\ufeff" + V30, "utf-16-le")).contacts()
    )
    assert a.id == "abc-1"


def test_malformed_cards_are_problems_and_the_rest_is_read(tmp_path: Path) -> None:
    broken = "BEGIN:VCARD\nVERSION:3.0\nFN:No end\nTEL:+1 415 555 0199\n"
    garbage = "BEGIN:VCARD\nVERSION:3.0\nthis line has no colon\nFN:Bad\nEND:VCARD\n"
    items = VCardSource(write(tmp_path / "m.vcf", V30 + garbage + broken + V40)).contacts()
    problems = [i for i in items if isinstance(i, SourceProblem)]
    contacts = only_contacts(items)
    assert {c.id for c in contacts} == {"abc-1", "urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1"}
    assert any(p.reason == "malformed_vcard" and "END:VCARD" in p.message for p in problems)
    # the unterminated card is reported with its line in the file, the garbage one too
    assert sorted(p.where for p in problems) == ["m.vcf:10", "m.vcf:15"]


def test_folder_of_vcards_and_stable_keys(tmp_path: Path) -> None:
    folder = tmp_path / "cards"
    (folder / "sub").mkdir(parents=True)
    write(folder / "a.vcf", V30)
    write(folder / "sub" / "b.VCF", V40)
    write(folder / "notes.txt", "ignore me")
    source = open_source(folder)
    assert isinstance(source, VCardSource)
    keys1 = [k for k, _ in source.scan()]
    keys2 = [k for k, _ in source.scan()]
    assert len(keys1) == 2 and keys1 == keys2
    write(folder / "a.vcf", V30.replace("0102", "0109"))
    keys3 = [k for k, _ in source.scan()]
    assert keys3[1] == keys1[1] and keys3[0] != keys1[0]
    # the same card in two files: distinct keys, the same ones on every scan
    write(folder / "c.vcf", V30)
    write(folder / "d.vcf", V30)
    keys4 = [k for k, _ in source.scan()]
    assert len(set(keys4)) == 4 and keys4 == [k for k, _ in source.scan()]
    (folder / "c.vcf").unlink()
    (folder / "sub" / "b.VCF").unlink()
    assert [k for k, _ in source.scan()] == [keys3[0], keys4[1]]


def test_files_written_by_programs_split_like_any_other() -> None:
    cards = [V30, V30.replace("abc-1", "abc-2"), "BEGIN:VCARD\nEND:VCARD\n"]
    for eol in ("\n", "\r\n"):
        uniform = "".join(cards).replace("\n", eol).encode()
        # the same cards with a blank line between them take the general path
        spaced = eol.join(cards).replace("\n", eol).encode()
        got = list(split_cards(uniform))
        assert [body for _, body in got] == [body for _, body in split_cards(spaced)]
        assert [body for _, body in got] == [c[12:-10].replace("\n", eol).encode() for c in cards]
        assert [line_at(uniform, offset) for offset, _ in got] == [1, 10, 19]
        assert all(uniform[offset:].startswith(b"BEGIN:VCARD") for offset, _ in got)


def test_a_value_that_looks_like_a_card_line_is_read_as_a_value() -> None:
    cards = [V30, V30.replace("abc-1", "abc-2").replace("N:Smith", "NOTE:END:VCARD\nN:Smith")]
    data = "".join(cards).encode()
    got = list(split_cards(data))
    assert [body for _, body in got] == [c[12:-10].encode() for c in cards]
    assert split_card_lists(data) == ([o for o, _ in got], [b for _, b in got])


def _program_file(n: int, edited: dict[int, str] | None = None) -> str:
    edited = edited or {}
    return "".join(
        f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:u{i % 150}\r\nFN:{edited.get(i, f'P {i % 150}')}\r\n"
        f"TEL:+1 415 555 {i % 150:04d}\r\nEND:VCARD\r\n"
        for i in range(n)
    )


def test_a_rescanned_file_reads_as_a_fresh_read_of_it(tmp_path: Path) -> None:
    # a file big enough for the source to remember its cards' keys between scans; cards
    # 150.. repeat 0.. (identical cards get distinct keys)
    path = write(tmp_path / "big.vcf", _program_file(200))
    source = VCardSource(path)

    def same_as_fresh() -> list[str]:
        scanned = list(source.scan())
        fresh = list(VCardSource(path).scan())
        assert [k for k, _ in scanned] == [k for k, _ in fresh]
        assert [source.parse(r) for _, r in scanned] == [source.parse(r) for _, r in fresh]
        lists = source.scan_lists()
        assert [p for keys, recs in lists for p in zip(keys, recs, strict=True)] == scanned
        return [k for k, _ in scanned]

    first = same_as_fresh()
    assert len(set(first)) == 200
    write(path, _program_file(200, {3: "Renamed", 160: "Other"}))
    edited = same_as_fresh()
    # (card 153 is a copy of card 3's first text: now the only one, it takes that text's key)
    assert [i for i in range(200) if edited[i] != first[i]] == [3, 153, 160]
    assert edited[153] == first[3]
    renamed = source.parse(dict(source.scan())[edited[3]])
    assert isinstance(renamed, Contact) and renamed.name == "Renamed"
    # a new number at the end of a card
    write(path, _program_file(200).replace("555 0007\r\n", "555 0999\r\n", 1))
    renumbered = same_as_fresh()
    assert [i for i in range(200) if renumbered[i] != first[i]] == [7, 157]
    card = source.parse(dict(source.scan())[renumbered[7]])
    assert isinstance(card, Contact) and card.phones == ("+1 415 555 0999",)
    write(path, _program_file(200))  # back to the first text: the first keys
    assert same_as_fresh() == first
    # an unended card at the end, then a file that is not one a program wrote
    write(path, _program_file(200) + "BEGIN:VCARD\r\nFN:Never ends\r\n")
    assert same_as_fresh()[:200] == first
    write(path, _program_file(200).replace("BEGIN:VCARD", "begin:vcard", 1))
    assert same_as_fresh() == first
    for many in range(15):  # many edits: what the source remembers stays bounded
        write(path, _program_file(200, {i: f"E{many}" for i in range(0, 200, 2)}))
        same_as_fresh()
    assert len(source._keys_before[path]) <= 2 * 200 + 1_000 + 100


def test_identical_cards_get_distinct_keys(tmp_path: Path) -> None:
    keys = [k for k, _ in VCardSource(write(tmp_path / "d.vcf", V30 + V30)).scan()]
    assert len(set(keys)) == 2


GOOGLE = (
    "Name,Given Name,Family Name,Phone 1 - Type,Phone 1 - Value,Phone 2 - Type,Phone 2 - Value\n"
    "Anne Smith,Anne,Smith,Mobile,+1 415 555 0101 ::: 415-555-0104,Home,(415) 555-0102\n"
    'Ngozi "N" Okafor,Ngozi,Okafor,Mobile,0803 123 4567,,\n'
)
GOOGLE_NEW = (
    "First Name,Middle Name,Last Name,Phone 1 - Label,Phone 1 - Value\n"
    "Hiro,,Tanaka,Mobile,090-1234-5678\n"
)
OUTLOOK = (
    "First Name,Middle Name,Last Name,Company,Business Phone,Home Phone,Mobile Phone,Business Fax\n"
    "Jürgen,,Müller,ACME,030 1234567,,0151 23456789,030 999\n"
    ",,,Lonely Corp,+44 20 7946 0958,,,\n"
)


def test_csv_google_and_outlook_layouts(tmp_path: Path) -> None:
    g = CsvSource(write(tmp_path / "google.csv", GOOGLE)).contacts()
    assert [(c.name, c.phones) for c in only_contacts(g)] == [
        ("Anne Smith", ("+1 415 555 0101", "415-555-0104", "(415) 555-0102")),
        ('Ngozi "N" Okafor', ("0803 123 4567",)),
    ]
    n = only_contacts(CsvSource(write(tmp_path / "g2.csv", GOOGLE_NEW)).contacts())
    assert [(c.name, c.phones) for c in n] == [("Hiro Tanaka", ("090-1234-5678",))]
    o = only_contacts(CsvSource(write(tmp_path / "outlook.csv", OUTLOOK, "cp1252")).contacts())
    assert [(c.name, c.phones) for c in o] == [
        ("Jürgen Müller", ("030 1234567", "0151 23456789")),  # the fax is not a phone
        ("Lonely Corp", ("+44 20 7946 0958",)),
    ]


def test_csv_semicolons_and_bad_rows(tmp_path: Path) -> None:
    text = "Name;Mobile Phone\nAna;+34 612 345 678\nBad;1;2;3;4;5;6\n"
    items = CsvSource(write(tmp_path / "eu.csv", text)).contacts()
    assert isinstance(items[0], Contact) and items[0].phones == ("+34 612 345 678",)
    assert isinstance(items[1], SourceProblem) and items[1].reason == "malformed_csv_row"
    assert items[1].where == "eu.csv:3"


def test_csv_without_phone_columns_is_one_clear_problem(tmp_path: Path) -> None:
    [problem] = CsvSource(write(tmp_path / "x.csv", "Foo,Bar\n1,2\n")).contacts()
    assert isinstance(problem, SourceProblem) and problem.reason == "unknown_csv_layout"


def test_memory_source_access() -> None:
    source = MemorySource([Contact("1", "A", ("+14155550100",))], access=False)
    assert not source.has_access()
    source.access = True
    assert source.has_access() and len(list(source.scan())) == 1


def test_unusual_layouts_read_like_the_usual_one(tmp_path: Path) -> None:
    usual = VCardSource(write(tmp_path / "a.vcf", V30 + V40)).contacts()
    odd = (V30 + "\n\n" + V40).replace("BEGIN:VCARD", "begin:vcard").replace("END:", "End:")
    assert VCardSource(write(tmp_path / "b.vcf", "junk before\n" + odd)).contacts() == usual


def test_name_from_n_or_org_when_there_is_no_fn(tmp_path: Path) -> None:
    text = (
        "BEGIN:VCARD\nVERSION:3.0\nN:Smith;Anne;Marie;Dr.;\nTEL:1\nEND:VCARD\n"
        "BEGIN:VCARD\nVERSION:3.0\nORG:ACME\\, Inc.;Sales\nTEL:2\nEND:VCARD\n"
    )
    a, b = only_contacts(VCardSource(write(tmp_path / "n.vcf", text)).contacts())
    assert (a.name, b.name) == ("Dr. Anne Marie Smith", "ACME, Inc.")
