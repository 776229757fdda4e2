"""docs/api.md keeps up with the code (issue 16.9): every error code a client can get (the
classes in contactsync/errors.py) is in its error table (or, for WebSocket-only ones, its
close-code table), and every run-time setting is in its settings table."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from contactsync import errors
from contactsync.server.services import app_settings

API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def table_codes(text: str, heading: str) -> set[str]:
    """The `code`s in the first column holding codes of the table under `heading`."""
    section = text[text.index(heading) :]
    rows = []
    for line in section.split("\n")[1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append(line)
    found: set[str] = set()
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) > 1:
            found.update(re.findall(r"`([a-z_]+)`", cells[1]))
    return found


def error_codes() -> dict[str, int]:
    return {
        cls.code: cls.status
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.ApiError) and cls is not errors.ApiError
    }


def test_every_error_code_is_documented() -> None:
    text = API_MD.read_text()
    documented = table_codes(text, "### Errors") | table_codes(text, "| close code |")
    missing = sorted(set(error_codes()) - documented)
    assert not missing, f"error codes missing from docs/api.md: {missing}"


def test_documented_statuses_match_the_code() -> None:
    text = API_MD.read_text()
    section = text[text.index("### Errors") : text.index("## Users, devices, sessions")]
    codes = error_codes()
    for line in section.split("\n"):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) < 2 or not cells[0].isdigit():
            continue
        for code in re.findall(r"`([a-z_]+)`", cells[1]):
            if code in codes:
                assert codes[code] == int(cells[0]), (code, cells[0], codes[code])


def test_every_admin_setting_is_documented() -> None:
    text = API_MD.read_text()
    section = text[text.index("## Admin settings") :]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    missing = sorted(app_settings.PUBLIC_FIELDS - documented)
    assert not missing, f"settings missing from docs/api.md: {missing}"
