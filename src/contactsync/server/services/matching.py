"""Which registered user a number in someone's book is: the one rule of matching by number.

A contact's number (canonical E.164, see contactsync.phone) matches the user registered under
that number; when nobody is, the user registered under one of its same-line variants
(`phone.variants`: Argentina's mobile with and without the 9). Matches are reported under the
contact's own number, the number its holder wrote. The reverse, for "X joined" and pending
relations: a new user is held under their number and under each variant nobody else is
registered under.

Nearly every number has no variants; for those this is the exact look-up it always was.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from contactsync import phone as phones
from contactsync import phone_variants
from contactsync.server.context import ReadTx, Tx
from contactsync.server.services import app_settings, policy
from contactsync.server.store.bulk import in_list, rows_source, sql


@dataclass(frozen=True)
class Direct:
    """What a caller's own statement already read of some numbers' users: `numbers`, the
    numbers it looked up; `users`, {number: (user id, blocked, level)} for those of them that
    a user is registered under, the number itself and not a variant
    (`policy.learnable_facts_exprs` for blocked and level). `registered_for` looks those
    numbers up no more: only their variants, where the number itself matched nobody."""

    numbers: Collection[str]
    users: Mapping[str, tuple[int, bool, str]]


async def registered(
    tx: ReadTx, numbers: Sequence[str], *, exclude: int | None = None
) -> dict[str, tuple[int, str]]:
    """{number: (user id, the user's own number)} for those of `numbers` that match a user
    other than `exclude`: the user registered under the number itself, else under one of its
    variants."""
    found, _ = await _match(tx, numbers, exclude, None)
    return found


async def _match(
    tx: ReadTx,
    numbers: Collection[str],
    exclude: int | None,
    viewer_id: int | None,
    direct: Direct | None = None,
    seen: dict[str, int] | None = None,
) -> tuple[dict[str, tuple[int, str]], dict[int, tuple[bool, str]]]:
    """`registered`, and with a `viewer_id` what `policy.learnable_among` needs of each user
    found, read in the same statement (or given in `direct`). `seen` gets {number: user id}
    of every number looked up (not in `direct`) that a user is registered under, `exclude`
    included: what a book entry of the number stores."""
    if not numbers:
        return {}, {}
    known: Collection[str] = direct.numbers if direct else ()
    users: dict[str, int] = {}
    facts: dict[int, tuple[bool, str]] = {}
    for number, (uid, blocked, level) in (direct.users if direct else {}).items():
        if uid != exclude:
            users[number] = uid
            facts[uid] = (blocked, level)
    alias: dict[str, list[str]] = {}  # variant -> the numbers it is a variant of
    unmatched = [n for n in phone_variants.of_same_line_countries(numbers) if n not in users]
    for number, others in phone_variants.variants_of(unmatched).items():
        for variant in others:
            alias.setdefault(variant, []).append(number)
    # (a set difference in C: a caller's statement may have read most of them already)
    probes = list(set(numbers).difference(known))
    if alias:
        asked = set(numbers)
        probes += [v for v in alias if v not in asked and v not in known]
    if probes:
        users.update(await _probe(tx, probes, exclude, viewer_id, facts, seen))
    found = {number: (users[number], number) for number in numbers if number in users}
    for variant, holders in alias.items():
        if variant in users:
            for number in holders:
                found.setdefault(number, (users[variant], variant))
    # `direct` may hold more numbers than were asked about: only the users found need the
    # policy (a narrower audience among the others would cost a statement for nothing)
    matched = {uid for uid, _ in found.values()}
    return found, {uid: fact for uid, fact in facts.items() if uid in matched}


async def _probe(
    tx: ReadTx,
    probes: Sequence[str],
    exclude: int | None,
    viewer_id: int | None,
    facts: dict[int, tuple[bool, str]],
    seen: dict[str, int] | None = None,
    default_level: str | None = None,
) -> dict[str, int]:
    """{number: user id} of the users registered under `probes` (but `exclude`), with each
    one's facts added to `facts` when there is a viewer (and every one found to `seen`).
    (`default_level`: the app's discoverable-by default, when the caller has it.)"""
    seen = {} if seen is None else seen
    # Driven from the numbers: one unique-index probe each. `phone = ANY(array)` against a
    # million users goes through a bitmap scan whose recheck is linear in the array (5x slower).
    source, params = rows_source(tx.dialect, [("phone", "text")], [(p,) for p in probes])
    if viewer_id is None:
        rows = await tx.conn.execute(
            sql(f"SELECT u.id, u.phone FROM {source} JOIN users u ON u.phone = t.phone"),
            params,
        )
        found = {phone: uid for uid, phone in rows}
        seen.update(found)
        return {phone: uid for phone, uid in found.items() if uid != exclude}
    learnable = policy.learnable_facts_sql("viewer", "u", "default_level")
    rows = await tx.conn.execute(
        sql(f"SELECT u.id, u.phone, {learnable} FROM {source} JOIN users u ON u.phone = t.phone"),
        {
            **params,
            "viewer": viewer_id,
            "default_level": default_level or (await app_settings.load(tx)).discoverable_by_default,
        },
    )
    users = {}
    for uid, phone, blocked, level in rows:
        seen[phone] = uid
        if uid != exclude:
            users[phone] = uid
            facts[uid] = (bool(blocked), level)
    return users


async def look_up(
    tx: ReadTx, viewer_id: int, numbers: Collection[str], default_level: str
) -> Direct:
    """Who is registered under each of `numbers` itself (no variants), with what the policy
    needs to know of them as `viewer_id`'s contacts: a `Direct` for `registered_for`, which
    then looks those numbers up no more."""
    facts: dict[int, tuple[bool, str]] = {}
    seen: dict[str, int] = {}
    # (in order: the probes walk the users' index forwards, 9 against 12 ms for 5,000)
    await _probe(tx, sorted(numbers), None, viewer_id, facts, seen, default_level)
    return Direct(set(numbers), {n: (uid, *facts[uid]) for n, uid in seen.items()})


async def registered_for(
    tx: ReadTx,
    viewer_id: int,
    numbers: Collection[str],
    *,
    exclude: int | None = None,
    direct: Direct | None = None,
    seen: dict[str, int] | None = None,
) -> dict[str, tuple[int, str]]:
    """`registered`, as `viewer_id` may learn it (`policy.learnable`): a number whose user the
    viewer may not learn about is left out, exactly like a number nobody registered. The
    policy's facts come with the users, so nearly always this is one statement, and none when
    the caller read the numbers' users already (`direct`)."""
    found, facts = await _match(tx, numbers, exclude, viewer_id, direct, seen)
    if not found:
        return found
    allowed = await policy.learnable_among(tx, viewer_id, facts)
    return {number: hit for number, hit in found.items() if hit[0] in allowed}


def variant_ranges() -> list[tuple[str, str]]:
    """[low, high) ranges of E.164 strings that may have variants (one per country with
    same-line rules), to find such numbers in a book with an index range scan."""
    return [(f"+{cc}", f"+{int(cc) + 1}") for cc in phone_variants.same_line_codes()]


async def forms_held(tx: Tx, user_id: int, e164: str) -> list[str]:
    """The numbers under which others may hold the user registered as `e164`: the number
    itself and each variant nobody else is registered under (whoever is, is held there)."""
    others = phones.variants(e164)
    if not others:
        return [e164]
    where, params = in_list(tx.dialect, "phone", others, "forms")
    taken = {
        phone
        for (phone,) in await tx.conn.execute(
            sql(f"SELECT phone FROM users WHERE id <> :uid AND {where}"),
            {"uid": user_id, **params},
        )
    }
    return [e164, *(v for v in others if v not in taken)]
