"""Real phone exports sync whole (issue 16.10).

tests/client/fixtures/exports/ holds one file in each shape real exports come in: iOS vCard 3.0
with `\\r\\r\\n` line ends and a folded photo, Android vCard 2.1 (quoted-printable UTF-8 with
soft line breaks, X-CUSTOM labels, an indented photo ended by a blank line), older phones'
vCard 2.1 in Latin-1 with a photo that is not indented at all, Outlook's vCard 2.1 (four-space
photo, quoted-printable address), a Google vCard cut off at the end, and CSV from Gmail (new
layout), Google's older UTF-16 export, Outlook (Windows-1252, quoted), German Outlook (`sep=;`,
localised headers) and an iPhone contacts-export app. Every card's numbers are read; the one
card that truly cannot be read (the cut-off one) is named by line and name and counted failed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contactsync import phone
from contactsync.client import Contact, SourceProblem, open_source
from tests.client.conftest import Factory, book
from tests.conftest import Api

EXPORTS = Path(__file__).parent / "fixtures" / "exports"

# file: (the region the phone was in, [(name, numbers) or (where, name) of an unreadable card])
EXPECTED: dict[str, tuple[str, list[tuple[str, list[str]] | tuple[str, str]]]] = {
    "ios_crcrlf.vcf": (
        "US",
        [
            ("Johnny Appleseed", ["+14085550111", "+14085550112"]),
            ("Mai Ng", ["+447911123456"]),
            ("Pizza Palace", ["+14155550113"]),
            ("Jürgen Müller", ["+4915123456789"]),
        ],
    ),
    "android_21.vcf": (
        "JP",
        [
            ("山田 太郎", ["+819012345678", "+81312345678"]),
            (
                "Élodie François avec un nom très long qui continue",
                ["+33612345678", "+33123456789"],
            ),
            ("Dr. Kwame Mensah", ["+233241234567"]),
        ],
    ),
    "legacy_21_latin1.vcf": (
        "DE",
        [
            ("Hanna Müller", ["+491711234567", "+49301234567"]),
            ("José García", ["+34612345678"]),
            ("Ole Sørensen", ["+4520123456"]),
        ],
    ),
    "outlook_21.vcf": ("DE", [("Petra Schmidt", ["+498912345678", "+491609876543"])]),
    "google_truncated.vcf": (
        "US",
        [
            ("Priya Sharma", ["+919876543210", "+918023456789"]),
            ("Lena Novak", ["+12125550114"]),
            ("google_truncated.vcf:18", "Truncated Tim"),
        ],
    ),
    "gmail.csv": (
        "US",
        [
            ("Ana Silva", ["+5511912345678", "+551134567890", "+552123456789"]),
            ("Acme Corp", ["+14155550121"]),
            ("Bjørn Ødegaard", ["+4741234567"]),
        ],
    ),
    "google_legacy_utf16.csv": (
        "US",
        [("Chen Wei", ["+8613912345678", "+861012345678"]), ("Olga", ["+79123456789"])],
    ),
    "outlook.csv": (
        "FR",
        [("François Dubois", ["+33142142000", "+33698765432"]), ("Seán O'Brien", ["+35312345678"])],
    ),
    "outlook_de.csv": (
        "DE",
        [("Anna Becker", ["+49891234567", "+4915112345678"]), ("Lukas Weber", ["+49307654321"])],
    ),
    "iphone_app.csv": (
        "FR",
        [("Chloé Martin", ["+33612345678", "+33781223344"]), ("Hugo Bernard", ["+33144556677"])],
    ),
}


def test_every_fixture_is_checked() -> None:
    assert sorted(p.name for p in EXPORTS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_card_of_a_real_export_is_read(name: str) -> None:
    region, expected = EXPECTED[name]
    got: list[tuple[str, list[str]] | tuple[str, str]] = []
    for item in open_source(EXPORTS / name).contacts():
        if isinstance(item, SourceProblem):
            assert item.reason == "malformed_vcard"
            got.append((item.where, item.name or ""))
        else:
            assert isinstance(item, Contact)
            numbers = [phone.try_normalize(p, region).e164 or f"invalid {p!r}" for p in item.phones]
            got.append((item.name or "", numbers))
    assert got == expected


def test_the_crcrlf_export_reads_like_the_same_file_with_crlf(tmp_path: Path) -> None:
    data = (EXPORTS / "ios_crcrlf.vcf").read_bytes()
    assert b"\r\r\n" in data
    crlf = tmp_path / "ios.vcf"
    crlf.write_bytes(data.replace(b"\r\r\n", b"\r\n"))
    assert [(c.name, c.phones) for c in open_source(crlf).contacts()] == [
        (c.name, c.phones) for c in open_source(EXPORTS / "ios_crcrlf.vcf").contacts()
    ]


async def test_every_export_syncs_its_numbers_and_the_unreadable_card_fails_by_name(
    api: Api, managers: Factory, tmp_path: Path
) -> None:
    _, me = await api.user_with_token("+14155550100")
    for name, (region, expected) in EXPECTED.items():
        device = Path(name).stem
        manager = managers(
            open_source(EXPORTS / name),
            me,
            region=region,
            device_id=device,
            state_dir=tmp_path / device,
        )
        metrics = await manager.sync()
        wanted = {n: who for who, numbers in expected if isinstance(numbers, list) for n in numbers}
        assert await book(api, me, device) == wanted, name
        unreadable = [(e.where, e.name) for e in metrics.invalid]
        assert unreadable == [e for e in expected if isinstance(e[1], str)], name
        assert metrics.failed == len(unreadable), name
        assert metrics.error is None, name
