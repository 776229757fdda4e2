"""vCard 2.1, 3.0 and 4.0 reading: split a file into cards, read the few properties we need.

Phone books are big and vobject takes about 0.2 ms a card, so a 10,000-card file would cost
2 s before a single number is normalised. Cards are therefore read by a small parser that
knows exactly what contact sync needs (UID, FN, N, ORG, TEL, with folding, group prefixes,
quoted-printable with soft line breaks, CHARSET, base64 and `tel:` URIs); a card it does not
understand goes to vobject, and a card vobject cannot read either becomes a per-card problem
that names the card (its line, and its name when one can be made out).

Real exports vary: iOS ends lines with `\r\r\n`; photos are base64 folded with one space, four
spaces, or (vCard 2.1 from older phones) not indented at all and ended by a blank line;
quoted-printable values carry their own CHARSET. tests/client/fixtures/exports/ has one file
in each of these shapes.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import operator
import quopri
import re
from collections.abc import Callable, Iterator

from contactsync.client._models import Contact, SourceProblem

__all__ = [
    "card_bytes",
    "decode_bytes",
    "decode_card",
    "split_cards",
    "parse_card",
    "line_at",
    "name_in",
]

_END = re.compile(rb"(^[ \t]*END:VCARD[ \t]*\r?$)", re.I | re.M)
_BEGIN_LINE = re.compile(rb"^[ \t]*BEGIN:VCARD[ \t]*\r?\n?", re.I | re.M)
_ESCAPES = re.compile(r"\\([\\,;:nN])")
# a line of a vCard 2.1 base64 value that is not indented (nothing else is only base64 text)
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_NAME_LINE = re.compile(r"^(?:[^:\n]*\.)?(FN|N)((?:;[^:\n]*)?):(.*)$", re.I | re.M)


# the properties contact sync reads (BEGIN and END inside a card send it to vobject)
_READ = frozenset(("TEL", "FN", "N", "ORG", "UID", "BEGIN", "END"))


class _Unsupported(Exception):
    """Something the fast parser leaves to vobject."""


def decode_bytes(data: bytes) -> str:
    """Text of a contacts file: UTF-8 (with or without BOM), UTF-16 with a BOM, else Latin-1
    (which never fails; values with a CHARSET parameter are re-decoded per property)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return decode_8bit(data)


def card_bytes(data: bytes) -> bytes:
    """A vCard file as bytes in an ASCII-compatible encoding: UTF-16 (with a BOM) is turned
    into UTF-8; a UTF-8 BOM is dropped. Cards are split and hashed as bytes, and each is
    decoded on its own when parsed: a 100,000-card file with one emoji would otherwise become
    a 4-bytes-per-character string, and its copies would cost hundreds of MB."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = data.decode("utf-16", errors="replace").encode("utf-8")
    elif data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\r\r\n" in data:  # iOS: one line ending read as two
        data = data.replace(b"\r\r\n", b"\r\n")
    return data


def decode_card(body: bytes) -> str:
    """UTF-8, else Windows-1252 (what Outlook writes), else Latin-1 (values with a CHARSET
    parameter are re-decoded per property)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return decode_8bit(body)


def decode_8bit(data: bytes) -> str:
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def name_in(text: str) -> str | None:
    """The name on a card that cannot be read as a whole (FN, else N), to name it in a report."""
    found: dict[str, str] = {}
    for match in _NAME_LINE.finditer(text):
        prop, params, raw = match.group(1).upper(), match.group(2), match.group(3)
        if prop in found:
            continue
        try:
            _, parsed, _ = _split(f"{prop}{params}:")
            value = _value(parsed, raw.strip())
        except _Unsupported:
            value = raw
        found[prop] = (_unescape(value).strip() if prop == "FN" else _n_name(value)) or ""
    return found.get("FN") or found.get("N") or None


def split_cards(data: bytes) -> Iterator[tuple[int, bytes | None]]:
    """(offset, card body) for each card; body None for a card that never ends.

    Offsets, not line numbers: counting lines for every card would cost more than finding
    them; `line_at` turns an offset into a line number for the few cards that need one.
    Splitting at END lines is much cheaper than matching BEGIN…END pairs with one regex.
    """
    offsets, bodies = split_card_lists(data)
    return zip(offsets, bodies, strict=True)


def split_card_lists(data: bytes) -> tuple[list[int], list[bytes | None]]:
    """`split_cards` as two lists, (offsets, bodies), built without a Python step per card
    for the usual file (a resync reads the whole file again: this is most of its scan)."""
    uniform = _split_uniform(data)
    if uniform is not None:
        return uniform
    cards = list(_split_plain(data) or _split_general(data))
    return [offset for offset, _ in cards], [body for _, body in cards]


def _split_general(data: bytes) -> Iterator[tuple[int, bytes | None]]:
    parts = _END.split(data)  # [before, END line, before, END line, …, tail]
    offset = 0
    for i in range(0, len(parts) - 1, 2):
        part = parts[i]
        begin = _BEGIN_LINE.search(part)
        if begin is not None:
            later = _BEGIN_LINE.search(part, begin.end())
            while later is not None:  # an earlier card never ended
                yield offset + begin.start(), None
                begin, later = later, _BEGIN_LINE.search(part, later.end())
            yield offset + begin.start(), part[begin.end() :]
        offset += len(part) + len(parts[i + 1])
    begin = _BEGIN_LINE.search(parts[-1])
    if begin is not None:
        yield offset + begin.start(), None


def _split_plain(data: bytes) -> Iterator[tuple[int, bytes | None]] | None:
    """The same for the usual file (upper-case BEGIN/END lines, one card after another) with
    plain byte-string operations; None when the file is anything else."""
    # an END line in another case is split by the general path (bytes.upper() changes only
    # ASCII letters, like re.I on bytes, and is several times faster than searching with it)
    if data.count(b"END:VCARD") != data.upper().count(b"END:VCARD"):
        return None
    pieces = data.split(b"END:VCARD")
    starts: list[int] = []
    for piece in pieces[:-1]:
        begin = piece.find(b"BEGIN:VCARD")
        if (
            begin < 0
            or piece.find(b"BEGIN:VCARD", begin + 11) >= 0
            or piece[begin - 1 : begin] not in (b"", b"\n")
            or piece[-1:] not in (b"", b"\n")
            or piece[:begin].strip()
        ):
            return None
        start = begin + 11
        if piece[start : start + 1] == b"\r":
            start += 1
        if piece[start : start + 1] != b"\n":
            return None
        starts.append(begin)
    if b"BEGIN:VCARD" in pieces[-1].upper() or any(
        p[:1] not in (b"", b"\r", b"\n") for p in pieces[1:]
    ):
        return None

    def cards() -> Iterator[tuple[int, bytes | None]]:
        offset = 0
        for piece, begin in zip(pieces, starts, strict=False):
            body = piece[begin + 11 :]
            yield offset + begin, body[2:] if body[:1] == b"\r" else body[1:]
            offset += len(piece) + 9

    return cards()


def _split_uniform(data: bytes) -> tuple[list[int], list[bytes | None]] | None:
    """The cards of a file written by a program: every card is exactly BEGIN:VCARD, its
    lines, END:VCARD, one line ending throughout, no blank lines between cards, upper-case
    BEGIN and END lines. One split at the line pairs between cards and a few counts replace
    the per-card searches of the general case; None when the file is anything else."""
    eol = b"\r\n" if data.startswith(b"BEGIN:VCARD\r\n") else b"\n"
    first = b"BEGIN:VCARD" + eol
    if not data.startswith(first):
        return None
    if data.endswith(b"\nEND:VCARD" + eol):
        tail = 9 + len(eol)
    elif data.endswith(b"\nEND:VCARD"):
        tail = 9
    else:
        return None
    between = b"END:VCARD" + eol + first
    bodies: list[bytes | None] = data[len(first) : len(data) - tail].split(between)  # type: ignore[assignment]
    count = len(bodies)
    # Each BEGIN and END is one of those split at or the file's first and last lines (no
    # ":VCARD" in any case anywhere else), and every END line starts a line.
    if data.upper().count(b":VCARD") != 2 * count or data.count(b"\nEND:VCARD") != count:
        return None
    # card k > 0 starts after the bodies before it, each followed by the END and BEGIN lines
    steps = map(operator.add, map(len, bodies[: count - 1]), itertools.repeat(len(between)))  # type: ignore[arg-type]
    return list(itertools.accumulate(steps, initial=0)), bodies


def line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def parse_card(
    body: str, *, fallback_id: str | Callable[[], str], where: Callable[[], str]
) -> Contact | SourceProblem:
    """The contact in one card body (the text between BEGIN and END). `fallback_id` (or the
    function giving it, called only for a card without UID) identifies a card without UID."""
    try:
        return _fast(body, fallback_id)
    except _Unsupported:
        return _with_vobject(body, fallback_id, where)


def _unfold(body: str) -> list[str]:
    if "\n " not in body and "\n\t" not in body and "=\r\n" not in body and "=\n" not in body:
        return [line for line in body.splitlines() if line.strip()]  # the common case
    lines: list[str] = []
    raw = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    qp_open = False
    for line in raw:
        if qp_open:
            # vCard 2.1 quoted-printable soft line break: "=" at the end joins the next line
            lines[-1] = lines[-1][:-1] + line
            qp_open = line.endswith("=")
            continue
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += line[1:]
            continue
        if not line.strip():
            continue
        lines.append(line)
        head = line.split(":", 1)[0].upper()
        qp_open = "QUOTED-PRINTABLE" in head and line.endswith("=")
    return lines


def _split(line: str) -> tuple[str, dict[str, str], str]:
    """(property name, params, value) of one logical line."""
    colon = line.find(":")
    if colon <= 0:
        raise _Unsupported(line)
    head = line[:colon]
    if '"' in head:  # a quoted parameter value may hold ":" (vCard 4.0)
        in_quote = False
        for i, ch in enumerate(line):
            if ch == '"':
                in_quote = not in_quote
            elif ch == ":" and not in_quote:
                colon = i
                break
        head = line[:colon]
    parts = head.split(";")
    name = parts[0].rsplit(".", 1)[-1].strip().upper()
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        key = key.strip().upper()
        if not eq:  # vCard 2.1 bare parameter: "TEL;CELL;QUOTED-PRINTABLE:..."
            if key in ("QUOTED-PRINTABLE", "BASE64", "B", "8BIT"):
                params["ENCODING"] = key
            else:
                params.setdefault("TYPE", key)
            continue
        params[key] = value.strip().strip('"')
    return name, params, line[colon + 1 :]


def _value(params: dict[str, str], value: str) -> str:
    if not params:
        return value
    encoding = params.get("ENCODING", "").upper()
    charset = params.get("CHARSET")
    if encoding == "QUOTED-PRINTABLE":
        data = quopri.decodestring(value.encode("latin-1", errors="replace"))
        return _charset(data, charset)
    if encoding in ("B", "BASE64"):
        try:
            data = base64.b64decode(value, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise _Unsupported(value) from exc
        return _charset(data, charset)
    if charset and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        # the file was read as Latin-1 or UTF-8; an 8-bit value in another charset is re-read
        try:
            return value.encode("latin-1").decode(charset)
        except (UnicodeError, LookupError):
            return value
    return value


def _charset(data: bytes, charset: str | None) -> str:
    for name in (charset or "utf-8", "utf-8", "latin-1"):
        try:
            return data.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
    return data.decode("latin-1")


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    return _ESCAPES.sub(lambda m: "\n" if m.group(1) in "nN" else m.group(1), text)


def _tel(value: str) -> str:
    value = value.strip()
    if value[:4].lower() == "tel:":  # vCard 4.0 VALUE=uri
        value = value[4:]
        number, _, rest = value.partition(";")
        ext = re.search(r"(?i)ext=([0-9]+)", rest)
        value = (number + (f" ext. {ext.group(1)}" if ext else "")) or "tel:"
    return value


def _fast(body: str, fallback_id: str | Callable[[], str]) -> Contact:
    uid = fn = org = n_raw = None
    phones: list[str] = []
    for line in _unfold(body):
        colon = line.find(":")
        if colon <= 0:
            if _BASE64_LINE.fullmatch(line.strip()):
                continue  # photo data of a vCard 2.1 base64 value written without indent
            raise _Unsupported(line)
        head = line[:colon]
        if '"' in head:
            name, params, raw = _split(line)
        else:
            # the name first: a property the sync does not read (VERSION, EMAIL, ADR, …)
            # is skipped before its parameters are parsed, and one without parameters
            # (UID, FN) needs no parsing at all
            semi = head.find(";")
            name = (head if semi < 0 else head[:semi]).rsplit(".", 1)[-1].strip().upper()
            if name not in _READ:
                continue
            if semi < 0:
                params, raw = {}, line[colon + 1 :]
            else:
                name, params, raw = _split(line)
        if name == "TEL":
            number = _tel(_value(params, raw))
            if number:
                phones.append(number)
        elif name == "FN":
            fn = _unescape(_value(params, raw)).strip() or fn
        elif name == "N":
            n_raw = _value(params, raw)  # only needed when there is no FN
        elif name == "ORG":
            org = _unescape(_value(params, raw).split(";")[0]).strip() or org
        elif name == "UID":
            uid = _value(params, raw).strip() or uid
        elif name in ("BEGIN", "END"):
            raise _Unsupported(name)  # nested cards (AGENT) are vobject's business
    return Contact(uid or _id(fallback_id), fn or _n_name(n_raw) or org, tuple(phones))


def _id(fallback_id: str | Callable[[], str]) -> str:
    return fallback_id if isinstance(fallback_id, str) else fallback_id()


def _n_name(raw: str | None) -> str | None:
    """A display name from N (family;given;additional;prefix;suffix)."""
    if raw is None:
        return None
    parts = [_unescape(p).strip() for p in re.split(r"(?<!\\);", raw)]
    parts += [""] * (5 - len(parts))
    family, given, additional, prefix, suffix = parts[:5]
    return " ".join(p for p in (prefix, given, additional, family, suffix) if p) or None


def _with_vobject(
    body: str, fallback_id: str | Callable[[], str], where: Callable[[], str]
) -> Contact | SourceProblem:
    import vobject  # only for the odd card, so an ordinary sync never pays its import

    text = "BEGIN:VCARD\r\n" + body.strip("\r\n") + "\r\nEND:VCARD\r\n"
    try:
        card = vobject.readOne(text, ignoreUnreadable=False)
        phones = tuple(str(t.value).strip() for t in card.contents.get("tel", []) if t.value)
        name = None
        if "fn" in card.contents:
            name = str(card.fn.value).strip() or None
        uid = str(card.uid.value).strip() if "uid" in card.contents else None
    except Exception as exc:  # vobject raises many unrelated types on garbage
        return SourceProblem(
            where(), "malformed_vcard", f"unreadable vCard: {exc}"[:200], name_in(body)
        )
    return Contact(uid or _id(fallback_id), name, tuple(_tel(p) for p in phones))
