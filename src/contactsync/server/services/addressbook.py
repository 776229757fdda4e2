"""Address books: what an upload means, applied in one transaction.

- Contacts are added or renamed; `destroy` removes one; a number written twice in one request:
  the last one wins. Invalid numbers are reported by index and never stored.
- `force` replaces the whole book. A force upload may span several requests sharing a
  `batch_id`; the parts are staged and applied together by the part with `final` true, so no
  one ever sees a half-replaced book.
- `device_id` selects a per-installation book; without it the user's global book ("").
- A number is stored in its canonical form; an old form of a renumbered plan is rewritten to
  the current number and said so (`rewritten`). Registered users are found by the number and
  its variants (services/matching) and reported under the number in the book.
- A `batch_id` seen before returns the first answer and changes nothing more.
- New numbers count against the discovery quota (`quota`); an upload over it is refused whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any, Protocol

import sqlalchemy as sa

from contactsync import phone as phones
from contactsync.errors import BookChanged, Conflict, InvalidRequest, TooManyContacts
from contactsync.server import number_workers
from contactsync.server.cache import BookCache, books_forget
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import (
    app_settings,
    events,
    joins,
    matching,
    numbers,
    policy,
    quota,
    sessions,
)
from contactsync.server.store.bulk import (
    checked_rows,
    in_list,
    in_many,
    packed,
    rows_source,
    sql,
    unpack,
    unpack_each,
)
from contactsync.server.store.tables import (
    book_entries,
    book_versions,
    staged_contacts,
    upload_batches,
)

DAY_MS = 24 * 3600 * 1000
BATCH_KEEP_MS = 7 * DAY_MS
BATCH_ID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")
GLOBAL_BOOK = ""


class ContactLike(Protocol):
    """One uploaded contact (the validated wire object is passed straight through)."""

    phone: str
    name: str | None
    destroy: bool


@dataclass(frozen=True)
class Owner:
    """Who uploads: the user and the region their own number is in."""

    user_id: int
    region: str | None


@dataclass
class Upload:
    contacts: Sequence[ContactLike]
    region: str | None = None
    device_id: str | None = None
    force: bool = False
    batch_id: str | None = None
    final: bool = True


def _e164_like(numbers: set[str]) -> set[str]:
    """Those of `numbers` written the way E.164 is (starting with "+"). A string sorts
    between "+" and "," exactly when it starts with "+": when the least and the greatest do,
    all do (two passes in C, half the time of testing each)."""
    if numbers and min(numbers) >= "+" and max(numbers) < ",":
        return numbers
    return {p for p in numbers if p[:1] == "+"}


def book_of(device_id: str | None) -> str:
    return GLOBAL_BOOK if not device_id else sessions.check_device_id(device_id)


@dataclass
class Desired:
    """What a request asks of the book once its numbers are read, the last mention of a
    number deciding: `keep`, {number: its name, or None to keep the book's}, and `drop`, the
    numbers to remove (`destroy`), as an ordered set."""

    keep: dict[str, str | None]
    drop: dict[str, None]

    def rows(self) -> list[tuple[str, str | None, bool]]:
        """(number, name, destroy) of each."""
        return [(p, name, False) for p, name in self.keep.items()] + [
            (p, None, True) for p in self.drop
        ]


async def _normalise(
    tx: Tx,
    contacts: Sequence[ContactLike],
    written: Sequence[str],
    region: str | None,
    stored: Collection[str],
    all_stored: bool,
) -> tuple[Desired, list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """What the request asks (`Desired`), the invalid entries, the entries whose old form
    was rewritten to the current number, and the numbers that were read (parsed) to get there.
    `written`: the contacts' numbers as written.

    A number written exactly as one of the owner's books stores it (`stored`) is taken as it
    is: the book holds numbers only in the canonical form normalisation gave them, which
    normalises to itself. So a re-check of what the book holds (`all_stored`: every number
    in `stored`) parses no number, and when it also removes none its answer is one
    comprehension."""
    if all_stored and not any(c.destroy for c in contacts):
        return Desired({c.phone: c.name or None for c in contacts}, {}), [], [], []
    # each number not stored as written, read: its `phones.outcomes` string, in order
    found = iter(
        await number_workers.outcomes(
            tx.services.number_workers, [n for n in written if n not in stored], region
        )
    )
    keep: dict[str, str | None] = {}
    drop: dict[str, None] = {}
    invalid: list[dict[str, Any]] = []
    rewritten: list[dict[str, Any]] = []
    parsed: list[str] = []
    for index, contact in enumerate(contacts):
        number = contact.phone
        if number not in stored:
            outcome = next(found)
            if outcome[0] == "+":
                number = outcome
            elif outcome[0] == "~":  # an old form, read as the current number
                number = outcome[1:]
                rewritten.append(phones.rewritten_entry(contact.phone, number, index))
            else:
                invalid.append(phones.invalid_entry(contact.phone, outcome[1:], index))
                continue
            parsed.append(number)
        # re-insert so the order follows the last mention
        keep.pop(number, None)
        drop.pop(number, None)
        if contact.destroy:
            drop[number] = None
        else:
            keep[number] = contact.name or None
    return Desired(keep, drop), invalid, rewritten, parsed


async def upload(
    tx: Tx, owner: Owner, request: Upload, *, default_region: str | None
) -> dict[str, Any]:
    settings = await app_settings.load(tx)
    if len(request.contacts) > settings.max_contacts_per_request:
        raise TooManyContacts(
            f"At most {settings.max_contacts_per_request} contacts per request; "
            "send the rest in further requests.",
            details={"max": settings.max_contacts_per_request, "got": len(request.contacts)},
        )
    book = book_of(request.device_id)
    region = numbers.resolve_region(request.region, owner.region, default_region)
    batch_id = request.batch_id
    if batch_id is not None and not BATCH_ID.fullmatch(batch_id):
        raise InvalidRequest(
            "batch_id must be 1-64 letters, digits or . _ : -", details={"field": "batch_id"}
        )
    staging = request.force and not request.final
    if staging and batch_id is None:
        raise InvalidRequest(
            "A force upload in several parts needs a batch_id shared by its parts.",
            details={"field": "batch_id"},
        )
    open_batch = False
    # Only a caller's own batch_id can come back in a retry; an upload without one is recorded
    # only when it changed the book (the console counts uploads by these rows): a re-check of
    # what the book holds writes nothing.
    recorded = batch_id is not None
    if batch_id is not None:
        row = (
            await tx.conn.execute(
                sa.select(upload_batches).where(
                    upload_batches.c.owner_id == owner.user_id,
                    upload_batches.c.batch_id == batch_id,
                )
            )
        ).first()
        if row is not None and row.state == "done":
            return dict(row.response)
        if row is not None:
            if not request.force or row.book != book:
                raise Conflict(
                    "This batch_id belongs to an unfinished force upload of another book.",
                    details={"batch_id": batch_id},
                )
            open_batch = True
    else:
        batch_id = uuid.uuid4().hex

    # A set difference against what is stored before any number is parsed: what the owner's
    # books hold, looked up as written (E.164, as the SDK sends), is not normalised again.
    written = [c.phone for c in request.contacts]
    distinct = set(written)
    verbatim = _e164_like(distinct)
    level = settings.discoverable_by_default
    held = await _held_in_books(tx, owner.user_id, book, verbatim, level)
    # The numbers written as E.164 that no book holds are looked up among the users while
    # they are being read (on the number workers, or in this process while the database
    # answers): the one that reads is the one that is stored, and those that do not read are
    # left out below. (A refused upload tells nothing of what was looked up.)
    unheld = verbatim.difference(held.numbers)
    # (every number written as a book holds it: a re-check)
    all_held = not unheld and len(verbatim) == len(distinct)
    reading = asyncio.ensure_future(
        _normalise(tx, request.contacts, written, region, held.numbers, all_held)
    )
    try:
        looked = await matching.look_up(tx, owner.user_id, unheld, level) if unheld else None
        desired, invalid, rewritten, parsed = await reading
    finally:
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
    # numbers that were not written as the book would hold them: looked up once normalised
    others = [p for p in dict.fromkeys(parsed) if p not in verbatim]
    if others:
        held = held.with_(await _held_in_books(tx, owner.user_id, book, others, level))
    if looked is not None:
        held = held.with_users(looked)
    await quota.check_numbers(tx, owner.user_id, desired.keep, held.numbers, remember=staging)

    seen: dict[str, int] = {}
    registered = await _registered(tx, owner.user_id, desired.keep, held.direct, seen)

    news: set[str] = set()  # numbers this upload put in the book or renamed there
    if staging:
        counts = await _stage(tx, owner.user_id, batch_id, desired)
    elif request.force:
        counts, news = await _replace(
            tx, owner.user_id, book, batch_id if open_batch else None, desired, held, seen
        )
    else:
        counts, news = await _merge(tx, owner.user_id, book, desired, held, seen)

    # The caller's other devices hear of registered contacts this upload put in the book or
    # renamed; a re-check of what the book already holds writes nothing.
    response: dict[str, Any] = {
        "batch_id": batch_id,
        "final": not staging,
        **counts,
        "invalid": invalid,
        "registered": registered,
        "rewritten": rewritten,
    }
    if recorded or staging or counts["created"] or counts["updated"] or counts["deleted"]:
        await _record_batch(tx, owner.user_id, batch_id, book, request.force, staging, response)
    tx.counts["contacts_uploaded"] += len(request.contacts)
    tx.counts["matches"] += len(registered)
    learnt = [user for user in registered if user["phone"] in news]
    # a new user who announces the join to mutual contacts: those this upload makes mutual
    before = held.numbers
    await joins.on_contacts_held(
        tx, owner.user_id, [u["user_id"] for u in learnt if u["phone"] not in before]
    )
    if learnt:
        await events.append(
            tx,
            [
                events.NewEvent(
                    owner.user_id,
                    "contacts.registered",
                    {"users": learnt, "batch_id": batch_id, "device_id": request.device_id},
                )
            ],
        )
    return response


@dataclass(frozen=True)
class Held:
    """What the owner's books hold of some numbers (`_held_in_books`)."""

    names: dict[str, str | None]  # in the book written to: {number: its name there}
    elsewhere: set[str]  # in the owner's other books
    direct: matching.Direct  # who each of these numbers is registered to, as the entries say

    @classmethod
    def of(
        cls,
        names: dict[str, str | None],
        elsewhere: set[str],
        users: Mapping[str, tuple[int, bool, str]],
    ) -> Held:
        """The numbers held, and the users of those registered (all the held numbers were
        looked up)."""
        held = cls(names, elsewhere, matching.Direct((), {}))
        return replace(held, direct=matching.Direct(held.numbers, users))

    @property
    def numbers(self) -> Collection[str]:
        """The numbers held in any of the owner's books."""
        return self.names if not self.elsewhere else self.names.keys() | self.elsewhere

    def with_users(self, more: matching.Direct) -> Held:
        """And who is registered under some other numbers, looked up (`matching.look_up`)."""
        return replace(
            self,
            direct=matching.Direct(
                {*self.direct.numbers, *more.numbers}, {**self.direct.users, **more.users}
            ),
        )

    def with_(self, more: Held) -> Held:
        """What both looks-ups found (of different numbers)."""
        return Held.of(
            {**self.names, **more.names},
            self.elsewhere | more.elsewhere,
            {**self.direct.users, **more.direct.users},
        )


# From this many numbers to look up, the book uploaded to is read whole and kept in the
# process (`BookCache`), its version checked by every upload: a re-check of a big book then
# sends no list of numbers at all (a 5,000-number look-up cost ~10 ms on PostgreSQL).
WHOLE_BOOK_FROM = 1000


async def _held_in_books(
    tx: Tx, owner_id: int, book: str, numbers: Collection[str], default_level: str
) -> Held:
    """Which of `numbers` the owner's books hold (the book written to with its names), and
    for those the user registered under each with what the policy needs to know of them: the
    entry stores who its number is registered to (`book_entries.user_id`), so a re-check of
    numbers the book holds looks up no number in the users' index at all."""
    if not numbers:
        return Held.of({}, set(), {})
    if tx.caches is not None and len(numbers) >= WHOLE_BOOK_FROM:
        names, elsewhere, registered = await _held_by_the_book(
            tx, tx.caches.books, owner_id, book, numbers
        )
        asked = set(numbers)  # (the whole book's registered entries came back)
        registered = {n: uid for n, uid in registered.items() if n in asked}
    else:
        names, elsewhere, registered = await _held_looked_up(tx, owner_id, book, numbers)
    facts = await _facts(tx, owner_id, set(registered.values()), default_level)
    return Held.of(names, elsewhere, {n: (uid, *facts[uid]) for n, uid in registered.items()})


# (the book's {number: name}, the numbers in the owner's other books, {number: user id} of
# the entries that store a user)
_Found = tuple[dict[str, str | None], set[str], dict[str, int]]


async def _held_looked_up(tx: Tx, owner_id: int, book: str, numbers: Collection[str]) -> _Found:
    """`_held_in_books` by looking the numbers up in one statement. Only the rows that say more
    than "held" come back as rows (entries of registered numbers, entries in other books): the
    book's numbers and names come as two arrays."""
    where, params = in_many(tx.dialect, "phone", list(numbers), "nums")
    columns = ", ".join(
        (
            packed(tx.dialect, ("phone", "name"), where="book = :book"),
            packed(tx.dialect, ("phone",), where="book <> :book"),
            packed(tx.dialect, ("phone", "user_id"), where="user_id IS NOT NULL"),
        )
    )
    row = (
        await tx.conn.execute(
            sql(f"SELECT {columns} FROM book_entries WHERE owner_id = :owner AND {where}"),
            {"owner": owner_id, "book": book, **params},
        )
    ).first()
    names_of, elsewhere, registered = unpack_each(tx.dialect, row, 2, 1, 2)
    return dict(names_of), {n for (n,) in elsewhere}, dict(registered)


_VERSION = "(SELECT version FROM book_versions WHERE owner_id = :owner AND book = :book)"


async def _held_by_the_book(
    tx: Tx, books: BookCache, owner_id: int, book: str, numbers: Collection[str]
) -> _Found:
    """`_held_in_books` from the whole book uploaded to: kept (`books`) when its version is
    still the book's, else read and kept. `names` is then the whole book, every number of
    which is held. Each part comes from one statement, so its rows and the version it is
    checked against are of one snapshot."""
    base = {"owner": owner_id, "book": book}
    # the version, whether other books exist, the entries that store a user (an index of
    # their own: a twentieth of a book, typically)
    row = (
        await tx.conn.execute(
            sql(
                f"SELECT {_VERSION}, EXISTS (SELECT 1 FROM book_versions WHERE "
                "owner_id = :owner AND book <> :book), "
                + packed(tx.dialect, ("phone", "user_id"))
                + " FROM book_entries WHERE owner_id = :owner AND book = :book "
                "AND user_id IS NOT NULL"
            ),
            base,
        )
    ).first()
    assert row is not None
    version = int(row[0] or 0)
    names = books.get(owner_id, book, version)
    if names is None and version == 0:
        # A book that never had a version has no entries (they are written only after the
        # version is raised): kept empty, so that this upload's commit leaves it whole.
        names = {}
        books.put(owner_id, book, version, names)
    if names is None:
        whole = (
            await tx.conn.execute(
                sql(
                    f"SELECT {_VERSION}, "
                    + packed(tx.dialect, ("phone", "name"))
                    + " FROM book_entries WHERE owner_id = :owner AND book = :book"
                ),
                base,
            )
        ).first()
        assert whole is not None
        if int(whole[0] or 0) != version:  # changed between the two: look the numbers up
            return await _held_looked_up(tx, owner_id, book, numbers)
        names = dict(unpack(tx.dialect, whole[1:]))
        books.put(owner_id, book, version, names)
    users: dict[str, int] = dict(unpack(tx.dialect, row[2:]))
    elsewhere: set[str] = set()
    if row[1]:
        where, params = in_many(tx.dialect, "phone", list(numbers), "nums")
        found = (
            await tx.conn.execute(
                sql(
                    "SELECT "
                    + packed(tx.dialect, ("phone", "user_id"))
                    + f" FROM book_entries WHERE owner_id = :owner AND book <> :book AND {where}"
                ),
                {**base, **params},
            )
        ).first()
        for number, uid in unpack(tx.dialect, found):
            elsewhere.add(number)
            if uid is not None:
                users[number] = uid
    return names, elsewhere, users


async def _facts(
    tx: Tx, owner_id: int, user_ids: set[int], default_level: str
) -> dict[int, tuple[bool, str]]:
    """{user id: (blocked, level)}: what the policy needs to know of these users as the
    owner's contacts (`policy.learnable_facts_exprs`)."""
    if not user_ids:
        return {}
    where, params = in_list(tx.dialect, "u.id", sorted(user_ids), "ids", "bigint")
    blocked, level = policy.learnable_facts_exprs("owner", "u", "default_level")
    rows = await tx.conn.execute(
        sql(f"SELECT u.id, {blocked}, {level} FROM users u WHERE {where}"),
        {"owner": owner_id, "default_level": default_level, **params},
    )
    return {uid: (bool(is_blocked), their_level) for uid, is_blocked, their_level in rows}


async def charge_discovery(tx: Tx, owner_id: int, numbers: Sequence[str]) -> None:
    """The discovery quota for numbers checked outside an upload (relations by number).

    Same rule, same count as uploads (see `quota`); the numbers are remembered for the day.
    """
    if not numbers:
        return
    names, elsewhere, _ = await _held_looked_up(tx, owner_id, GLOBAL_BOOK, numbers)
    held = Held.of(names, elsewhere, {})
    await quota.check_numbers(tx, owner_id, numbers, held.numbers, remember=True)


async def _remember_leaving(
    tx: Tx, owner_id: int, book: str, where: str, params: dict[str, Any]
) -> None:
    """Numbers about to leave the book that were checked within the day keep counting."""
    await tx.conn.execute(
        sql(
            "INSERT INTO discovery_checks (owner_id, phone, at) "
            "SELECT owner_id, phone, created_at FROM book_entries "
            "WHERE owner_id = :owner AND book = :book AND created_at > :since"
            + (f" AND {where}" if where else "")
            + " ON CONFLICT (owner_id, phone) DO UPDATE SET at = CASE "
            "WHEN excluded.at > discovery_checks.at THEN excluded.at "
            "ELSE discovery_checks.at END"
        ),
        {"owner": owner_id, "book": book, "since": tx.now - DAY_MS, **params},
    )


async def _whole_book(tx: Tx, owner_id: int, book: str) -> dict[str, str | None]:
    rows = await tx.conn.execute(
        sa.select(book_entries.c.phone, book_entries.c.name).where(
            book_entries.c.owner_id == owner_id, book_entries.c.book == book
        )
    )
    return dict(rows.all())


async def _merge(
    tx: Tx,
    owner_id: int,
    book: str,
    desired: Desired,
    held: Held,
    seen: Mapping[str, int],
) -> tuple[dict[str, int], set[str]]:
    existing = held.names
    if existing:
        # (one look-up a number: three times faster than a set difference of the items)
        create, rename = [], []
        stored = existing.get
        for number, name in desired.keep.items():
            old = stored(number, _ABSENT)
            if old is _ABSENT:
                create.append((number, name))
            elif name is not None and name != old:
                rename.append((number, name))
    else:  # the book holds none of them (a new book): all are created
        create, rename = list(desired.keep.items()), []
    delete = [n for n in desired.drop if n in existing]
    await _apply(tx, owner_id, book, create, rename, delete, _users_of(create, held, seen, desired))
    counts = {
        "created": len(create),
        "updated": len(rename),
        "deleted": len(delete),
        "unchanged": len(desired.keep)
        + len(desired.drop)
        - len(create)
        - len(rename)
        - len(delete),
    }
    return counts, {number for number, _ in (*create, *rename)}


async def _replace(
    tx: Tx,
    owner_id: int,
    book: str,
    staged_batch: str | None,
    desired: Desired,
    held: Held,
    seen: Mapping[str, int],
) -> tuple[dict[str, int], set[str]]:
    """The book becomes exactly the staged parts plus this request (later entries win)."""
    wanted: dict[str, tuple[str | None, bool]] = {}
    if staged_batch is not None:
        rows = await tx.conn.execute(
            sa.select(
                staged_contacts.c.phone, staged_contacts.c.name, staged_contacts.c.destroy
            ).where(
                staged_contacts.c.owner_id == owner_id, staged_contacts.c.batch_id == staged_batch
            )
        )
        wanted = {row.phone: (row.name, bool(row.destroy)) for row in rows}
        await tx.conn.execute(
            sa.delete(staged_contacts).where(
                staged_contacts.c.owner_id == owner_id, staged_contacts.c.batch_id == staged_batch
            )
        )
    wanted.update((number, (name, destroy)) for number, name, destroy in desired.rows())
    keep = {number: name for number, (name, destroy) in wanted.items() if not destroy}
    existing = await _whole_book(tx, owner_id, book)
    create = [(n, name) for n, name in keep.items() if n not in existing]
    rename = [
        (n, name)
        for n, name in keep.items()
        if n in existing and name is not None and name != existing[n]
    ]
    delete = [n for n in existing if n not in keep]
    await _apply(tx, owner_id, book, create, rename, delete, _users_of(create, held, seen, desired))
    counts = {
        "created": len(create),
        "updated": len(rename),
        "deleted": len(delete),
        "unchanged": len(keep) - len(create) - len(rename),
    }
    return counts, {number for number, _ in (*create, *rename)}


async def _stage(tx: Tx, owner_id: int, batch_id: str, desired: Desired) -> dict[str, int]:
    if rows := desired.rows():
        source, params = rows_source(
            tx.dialect, [("phone", "text"), ("name", "text"), ("destroy", "bool")], rows
        )
        await tx.conn.execute(
            sql(
                "INSERT INTO staged_contacts (owner_id, batch_id, phone, name, destroy) "
                f"SELECT :owner, :batch, t.phone, t.name, t.destroy FROM {source} WHERE true "
                "ON CONFLICT (owner_id, batch_id, phone) "
                "DO UPDATE SET name = excluded.name, destroy = excluded.destroy"
            ),
            {"owner": owner_id, "batch": batch_id, **params},
        )
    staged = await tx.conn.scalar(
        sa.select(sa.func.count()).where(
            staged_contacts.c.owner_id == owner_id, staged_contacts.c.batch_id == batch_id
        )
    )
    return {"created": 0, "updated": 0, "deleted": 0, "unchanged": 0, "staged": int(staged or 0)}


def _users_of(
    create: Sequence[tuple[str, str | None]],
    held: Held,
    seen: Mapping[str, int],
    desired: Desired,
) -> dict[str, int | None]:
    """{number: the user registered under it, or None} for the new entries whose user this
    upload knows: a number held already (its entry says), or looked up by this upload (every
    number it adds is, `seen`). A number staged by an earlier part is not here: the INSERT
    looks it up."""
    users, looked = held.direct.users, held.direct.numbers
    known: dict[str, int | None] = {}
    for number, _ in create:
        if number in users:
            known[number] = users[number][0]
        elif number in looked:
            known[number] = None
        elif number in desired.keep:
            known[number] = seen.get(number)
    return known


async def _apply(
    tx: Tx,
    owner_id: int,
    book: str,
    create: Sequence[tuple[str, str | None]],
    rename: Sequence[tuple[str, str | None]],
    delete: Sequence[str],
    users_of: Mapping[str, int | None],
) -> None:
    """Write the changes. A new entry stores the user its number is registered to: from
    `users_of`, else (a number staged by an earlier part) looked up by the statement."""
    base = {"owner": owner_id, "book": book, "now": tx.now}
    if create or rename or delete:
        # First: the version row also orders concurrent writers of one book.
        version = await _changed(tx, owner_id, book)
        if tx.caches is not None:
            # This transaction alone took the book from version - 1 (the row is locked till
            # it ends): a kept copy of that version follows these changes once committed.
            books, names, gone = tx.caches.books, dict((*create, *rename)), list(delete)

            async def follow() -> None:
                books.advance(owner_id, book, version - 1, version, names, gone)

            tx.after_commit.append(follow)
    if delete:
        where, params = in_list(tx.dialect, "phone", delete, "gone")
        await _remember_leaving(tx, owner_id, book, where, params)
        await tx.conn.execute(
            sql(f"DELETE FROM book_entries WHERE owner_id = :owner AND book = :book AND {where}"),
            {**base, **params},
        )
    if create:
        source, params = rows_source(
            tx.dialect,
            [("phone", "text"), ("name", "text"), ("user_id", "bigint"), ("known", "bool")],
            # in number order: the indexes are written forwards (on PostgreSQL 42 against
            # 46 ms for 5,000)
            [(n, name, users_of.get(n), n in users_of) for n, name in sorted(create, key=_NUMBER)],
        )
        async with checked_rows(tx.conn, tx.dialect, len(create)):
            await tx.conn.execute(
                sql(
                    "INSERT INTO book_entries "
                    "(owner_id, book, phone, name, created_at, updated_at, user_id) "
                    f"SELECT :owner, :book, t.phone, t.name, :now, :now, CASE WHEN t.known "
                    "THEN t.user_id ELSE (SELECT u.id FROM users u WHERE u.phone = t.phone) END "
                    f"FROM {source}"
                ),
                {**base, **params},
            )
        joins.recheck_entries(tx, owner_id, [n for n, _ in create])
    if len(rename) > _KEYED_RENAMES and tx.dialect == "postgresql":
        source, params = rows_source(tx.dialect, [("phone", "text"), ("name", "text")], rename)
        await tx.conn.execute(
            sql(
                f"UPDATE book_entries SET name = t.name, updated_at = :now FROM {source} "
                "WHERE book_entries.owner_id = :owner AND book_entries.book = :book "
                "AND book_entries.phone = t.phone"
            ),
            {**base, **params},
        )
    elif rename:
        # Keyed updates in one executemany: primary-key hits in one round trip. SQLite's
        # planner scans the whole book for UPDATE ... FROM; so does PostgreSQL's (a hash of the
        # book: 7 ms of a 10,000-entry book to rename 10) while it takes a new owner's book for
        # a few rows, which is until the next ANALYZE.
        await tx.conn.execute(
            sql(
                "UPDATE book_entries SET name = :name, updated_at = :now "
                "WHERE owner_id = :owner AND book = :book AND phone = :phone"
            ),
            [{**base, "phone": number, "name": name} for number, name in rename],
        )


_ABSENT = object()  # (a number the book does not hold, in `_merge`)
_NUMBER = itemgetter(0)  # (sorting by the number alone: a third faster than by the tuple)
# Renames up to this many go as keyed updates on PostgreSQL too (see `_apply`).
_KEYED_RENAMES = 100


async def _registered(
    tx: Tx,
    owner_id: int,
    names: dict[str, str | None],
    direct: matching.Direct,
    seen: dict[str, int],
) -> list[dict[str, Any]]:
    """The registered users among `names`' numbers (and their variants), each once under the
    number in the book with its name there: never the caller, never a blocked pair.
    (`direct`: what the held numbers' look-up found already; `seen` gets the users of the
    numbers looked up.)"""
    if not names:
        return []
    found = _once_per_user(
        await matching.registered_for(
            tx, owner_id, names, exclude=owner_id, direct=direct, seen=seen
        )
    )
    return [
        {"user_id": uid, "phone": number, "name": names[number]}
        for number, uid in sorted(found.items())
    ]


def _once_per_user(found: dict[str, tuple[int, str]]) -> dict[str, int]:
    """{number: user id} with each user once: under their own number when the book holds it,
    else under the first variant of it (a book may hold a number in both forms)."""
    best: dict[int, str] = {}
    for number, (uid, theirs) in sorted(found.items()):
        if uid not in best or number == theirs:
            best[uid] = number
    return {number: uid for uid, number in best.items()}


async def _record_batch(
    tx: Tx,
    owner_id: int,
    batch_id: str,
    book: str,
    force: bool,
    staging: bool,
    response: dict[str, Any],
) -> None:
    """Keep the answer to a caller's batch_id (one upsert), and forget the owner's old ones:
    answers after a week, an abandoned multi-part force upload after a day. On PostgreSQL one
    statement (the forgetting in a WITH), on SQLite two (no round trips there)."""
    state, stored = ("open", None) if staging else ("done", response)
    params = {
        "owner": owner_id,
        "batch": batch_id,
        "book": book,
        "force": force,
        "state": state,
        "response": stored,
        "now": tx.now,
        "old": tx.now - BATCH_KEEP_MS,
        "open": tx.now - DAY_MS,
    }
    if tx.dialect == "postgresql":
        await tx.conn.execute(_RECORD_PG, params)
        return
    await tx.conn.execute(_RECORD, params)
    await tx.conn.execute(_FORGET, params)


_UPSERT = (
    "INSERT INTO upload_batches (owner_id, batch_id, book, force, state, response, created_at) "
    "VALUES (:owner, :batch, :book, :force, :state, :response, :now) "
    "ON CONFLICT (owner_id, batch_id) "
    "DO UPDATE SET state = excluded.state, response = excluded.response"
)
# (never the row being recorded: one statement may not both delete and update a row)
_OLD = (
    "owner_id = :owner AND batch_id <> :batch "
    "AND (created_at < :old OR (state = 'open' AND created_at < :open))"
)
_RESPONSE = sa.bindparam("response", type_=upload_batches.c.response.type)
_RECORD = sa.text(_UPSERT).bindparams(_RESPONSE)
_FORGET = sa.text(f"DELETE FROM upload_batches WHERE {_OLD}")
_RECORD_PG = sa.text(
    f"WITH forgotten AS (DELETE FROM upload_batches WHERE {_OLD}) {_UPSERT}"
).bindparams(_RESPONSE)


async def _changed(tx: Tx, owner_id: int, book: str) -> int:
    """Raise the book's version (see `list_contacts` and `BookCache`); the version it is now."""
    return int(
        await tx.conn.scalar(
            sql(
                "INSERT INTO book_versions (owner_id, book, version) VALUES (:owner, :book, 1) "
                "ON CONFLICT (owner_id, book) DO UPDATE SET version = book_versions.version + 1 "
                "RETURNING version"
            ),
            {"owner": owner_id, "book": book},
        )
    )


@dataclass(frozen=True)
class BookPage:
    contacts: list[dict[str, Any]]
    version: int  # of the book this page was read from
    last: str | None  # the last number of the page, when more follow


async def list_contacts(
    tx: ReadTx,
    owner_id: int,
    device_id: str | None,
    after: str | None,
    limit: int,
    *,
    version: int | None = None,
) -> BookPage:
    """One page of the book in number order. A listing is of one version of the book: a page
    asked for with the `version` the listing began at, after the book changed, is refused
    (`BookChanged`), so pages of before and after a change are never mixed. Each page's rows
    and version come from one statement, hence one snapshot."""
    book = book_of(device_id)
    current = sa.func.coalesce(
        sa.select(book_versions.c.version)
        .where(book_versions.c.owner_id == owner_id, book_versions.c.book == book)
        .scalar_subquery(),
        0,
    )
    query = (
        sa.select(book_entries.c.phone, book_entries.c.name, current.label("version"))
        .where(book_entries.c.owner_id == owner_id, book_entries.c.book == book)
        .order_by(book_entries.c.phone)
        .limit(limit + 1)
    )
    if after:
        query = query.where(book_entries.c.phone > after)
    rows = (await tx.conn.execute(query)).all()
    now = int(rows[0].version) if rows else int(await tx.conn.scalar(sa.select(current)) or 0)
    if version is not None and now != version:
        raise BookChanged(details={"version": version, "current": now})
    page = [{"phone": r.phone, "name": r.name} for r in rows[:limit]]
    return BookPage(page, now, rows[limit - 1].phone if len(rows) > limit else None)


async def registered_in_book(
    tx: ReadTx, owner_id: int, device_id: str | None
) -> list[dict[str, Any]]:
    """Registered users among the numbers in the book (and their variants), each under the
    number in the book with the book's name for it."""
    base = {"owner": owner_id, "book": book_of(device_id)}
    rows = await tx.conn.execute(
        sql(
            "SELECT u.id, u.phone, b.name FROM book_entries b JOIN users u ON u.phone = b.phone "
            "WHERE b.owner_id = :owner AND b.book = :book AND u.id <> :owner ORDER BY u.phone"
        ),
        base,
    )
    found = {r.phone: (r.id, r.name) for r in rows}
    # Numbers that may match by a variant: only those of countries with same-line rules,
    # found with a range scan of the book's key (nothing to read for most books).
    for low, high in matching.variant_ranges():
        rest = await tx.conn.execute(
            sql(
                "SELECT phone, name FROM book_entries WHERE owner_id = :owner AND book = :book "
                "AND phone >= :low AND phone < :high"
            ),
            {**base, "low": low, "high": high},
        )
        names = {phone: name for phone, name in rest if phone not in found}
        by_variant = await matching.registered_for(tx, owner_id, list(names), exclude=owner_id)
        known = {uid for uid, _ in found.values()}
        for number, uid in _once_per_user(by_variant).items():
            if uid not in known:
                found[number] = (uid, names[number])
    allowed = await policy.learnable(tx, owner_id, {uid for uid, _ in found.values()})
    return [
        {"user_id": uid, "phone": number, "name": name}
        for number, (uid, name) in sorted(found.items())
        if uid in allowed
    ]


async def clear(tx: Tx, owner_id: int, device_id: str | None) -> int:
    await _changed(tx, owner_id, book_of(device_id))
    books_forget(tx, owner_id)  # no process keeps a copy of a cleared book
    await _remember_leaving(tx, owner_id, book_of(device_id), "", {})
    result = await tx.conn.execute(
        sa.delete(book_entries).where(
            book_entries.c.owner_id == owner_id, book_entries.c.book == book_of(device_id)
        )
    )
    return int(result.rowcount or 0)
