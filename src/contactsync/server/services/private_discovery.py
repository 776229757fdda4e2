"""Private discovery: the server learns nothing about numbers that are not its users'.

The protocol (unbalanced PSI with an OPRF, after Kales et al., USENIX Security 2019; see
docs/privacy.md and `contactsync.oprf`):
1. The server holds an OPRF key k per key version, in a file outside the database
   (`KeyRing`); the version in force is in `discovery_state`.
2. For each registered user the server stores F_k(phone) (`discovery_tags`, computed at
   registration and backfilled at start); the users discoverable by everybody are `listed`.
   The filter is the set of their 63-bit filter keys (`contactsync.tagfilter`): a base built
   from the tags now and then, plus the change log (`discovery_log`) that every join and leave
   appends to, so a client downloads the filter once and small deltas after.
3. `evaluate` raises blinded points to k; each point counts against the discovery quota.
4. `resolve` turns tags the client matched into users, under the same rule as stored mode
   (`policy.learnable`): a blocker or a hidden user is a miss.
5. Users discoverable by their contacts only are not in the filter (it would tell everybody
   they are registered): each caller gets its own short list of them instead (`contacts`),
   those the caller may learn under the same rule, as far as the server can check who holds
   whom without books (a contact relation, an existing relation or conversation).
The server keeps no address book and nothing derived from a number that is not a user's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from contactsync import oprf, tagfilter
from contactsync.errors import DiscoveryKeyChanged, InvalidPoint, InvalidTag, TooManyPoints
from contactsync.server.context import Context, ReadTx, Tx
from contactsync.server.services import app_settings, discoverability, policy, profiles, quota
from contactsync.server.services.users import User
from contactsync.server.store import bulk
from contactsync.server.store.tables import (
    book_entries,
    conversation_members,
    discovery_log,
    discovery_state,
    discovery_tags,
    relations,
    users,
)

log = logging.getLogger("contactsync.discovery")

# The bus key that wakes every socket's process when the filter moves (no user has id 0).
WAKE = 0
DAY_MS = 24 * 3600 * 1000
# Deltas older than this are dropped; a client further behind downloads the filter again.
LOG_KEEP_MS = 30 * DAY_MS
# A delta longer than this is answered with the whole filter instead.
MAX_DELTA = 20_000
# At most this many users in a caller's own list (users discoverable by their contacts).
MAX_OWN = 20_000
_TAG = re.compile(r"[0-9a-f]{32}")
_BATCH = 500  # users tagged per transaction when backfilling or rotating
# How long the rotate request waits for its rotation before answering that it goes on.
ROTATE_WAIT_S = 10.0
# How long a stop waits for the tagging in hand to end before cancelling it.
STOP_GRACE_S = 10.0


# --- the key ---------------------------------------------------------------------------------


class KeyRing:
    """The OPRF keys by version, in a JSON file (mode 0600) outside the database. Every
    process reads the same file; a version it does not know yet makes it read the file again
    (another process rotated)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.keys: dict[int, bytes] = {}

    def load(self) -> dict[int, bytes]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            raw = {"keys": {}}
        self.keys = {int(v): bytes.fromhex(k) for v, k in raw.get("keys", {}).items()}
        return self.keys

    def key(self, version: int) -> bytes:
        if version not in self.keys:
            self.load()
        if version not in self.keys:
            raise RuntimeError(f"the discovery key file {self.path} holds no key version {version}")
        return self.keys[version]

    def add(self, at_least: int = 1) -> int:
        """Write a new key with the next version; the older ones are kept (a process that has
        not switched yet still answers with them)."""
        self.load()
        version = max([at_least - 1, *self.keys]) + 1
        keys = {**self.keys, version: oprf.new_key()}
        # keep the newest two: older versions are refused by every process anyway
        keep = dict(sorted(keys.items())[-2:])
        text = json.dumps({"keys": {str(v): k.hex() for v, k in keep.items()}})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        os.replace(tmp, self.path)
        self.keys = keep
        return version


def ring(tx: Tx) -> KeyRing | None:
    return tx.services.discovery_keys


def _keys(ctx: Context) -> KeyRing:
    keys = ctx.services.discovery_keys
    if keys is None:
        raise RuntimeError("private discovery has not started (private_discovery.start)")
    return keys


def _filter(ctx: Context) -> FilterCache:
    cache = ctx.services.discovery_filter
    if cache is None:
        raise RuntimeError("private discovery has not started (private_discovery.start)")
    return cache


@dataclass(frozen=True)
class State:
    version: int
    key_version: int


async def state(tx: ReadTx, *, lock: bool = False) -> State:
    query = sa.select(discovery_state.c.version, discovery_state.c.key_version).where(
        discovery_state.c.id == 1
    )
    if lock:
        query = bulk.locked(query, tx.dialect)
    row = (await tx.conn.execute(query)).one()
    return State(int(row.version), int(row.key_version))


async def start(ctx: Context) -> None:
    """On start: make sure a key exists and the database uses one the file holds, then tag
    the users who have no tag yet (in the background), and carry on with a rotation that a
    stop interrupted (the file holds a newer key than the one in force)."""
    keys = await ensure_key(ctx)
    ctx.services.discovery_filter = FilterCache()
    ctx.services.discovery_rotation_lock = asyncio.Lock()
    ctx.services.discovery_stopping = asyncio.Event()
    # Whether anyone needs a tag is learnt here, in the start's own read, and the tagging task
    # is made only when someone does (nearly never): a task that looked for itself would, at
    # every start, hold a second pooled connection beside the start's.
    async with ctx.read() as tx:
        current = await state(tx)
        untagged = await _any_untagged(tx, current.key_version)
    if untagged:
        ctx.services.discovery_backfill = asyncio.create_task(backfill(ctx), name="discovery-tags")
    newer = [v for v in keys.keys if v > current.key_version]
    if newer:
        log.warning("discovery: resuming the rotation to key version %s", max(newer))
        _spawn_rotation(ctx, max(newer))


async def ensure_key(ctx: Context) -> KeyRing:
    """The key file, created with a first key if needed; the database's key version made one
    the file holds (a lost file: a new key, as a rotation)."""
    keys = KeyRing(ctx.settings.resolved_discovery_key_file())
    ctx.services.discovery_keys = keys
    async with ctx.tx() as tx:
        current = await state(tx, lock=True)
        # read under the state row's lock: a process starting beside this one (serve
        # --workers N) may have just written the first key
        keys.load()
        if current.key_version in keys.keys:
            pass
        elif current.key_version == 0:
            version = max(keys.keys) if keys.keys else keys.add()
            await _switch(tx, version)
            log.warning("discovery: created OPRF key version %s in %s", version, keys.path)
        else:
            # The file was lost or is another installation's: the stored tags are useless.
            version = keys.add(at_least=current.key_version + 1)
            log.warning(
                "discovery: the key file holds no key version %s; rotated to version %s",
                current.key_version,
                version,
            )
            await _switch(tx, version)
    return keys


async def stop(ctx: Context) -> None:
    """The tagging tasks end after the batch in hand (a rotation stopped so is carried on at
    the next start); one that does not within STOP_GRACE_S is cancelled."""
    services = ctx.services
    if services.discovery_stopping is not None:
        services.discovery_stopping.set()
    tasks = {t for t in (services.discovery_backfill, services.discovery_rotation) if t}
    if tasks:
        await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    for task in tasks:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    services.discovery_backfill = services.discovery_rotation = None


def _stopping(ctx: Context) -> bool:
    return ctx.services.discovery_stopping is not None and ctx.services.discovery_stopping.is_set()


async def _switch(tx: Tx, version: int) -> None:
    """Make `version` the key in force: tags and deltas of other versions go."""
    await tx.conn.execute(
        sa.update(discovery_state)
        .where(discovery_state.c.id == 1)
        .values(key_version=version, version=discovery_state.c.version + 1)
    )
    await tx.conn.execute(sa.delete(discovery_tags).where(discovery_tags.c.key_version != version))
    await tx.conn.execute(sa.delete(discovery_log).where(discovery_log.c.key_version != version))
    tx.signals[WAKE] = (await state(tx)).version


async def backfill(ctx: Context, key_version: int | None = None) -> int:
    """Tag the users without a tag for `key_version` (the one in force by default), a batch
    per transaction; returns how many were tagged."""
    keys = _keys(ctx)
    # Nearly every start finds nobody to tag: that is learnt in a read, so a start takes no
    # write lock (SQLite's is the whole file's) for the look over every user.
    async with ctx.read() as tx:
        version = key_version or (await state(tx)).key_version
        if not await _any_untagged(tx, version):
            return 0
    done = 0
    while not _stopping(ctx):
        async with ctx.tx() as tx:
            version = key_version or (await state(tx)).key_version
            added = await _tag_missing(tx, keys, version, limit=_BATCH)
        done += added
        if added < _BATCH:
            return done
        await asyncio.sleep(0)
    return done


async def _any_untagged(tx: ReadTx, version: int) -> bool:
    return bool(await tx.conn.scalar(sa.select(_untagged(version).exists())))


def _untagged(version: int) -> sa.Select[tuple[int]]:
    """The users without a tag for `version`."""
    return sa.select(users.c.id).where(
        ~sa.exists().where(
            discovery_tags.c.user_id == users.c.id, discovery_tags.c.key_version == version
        )
    )


async def _tag_missing(tx: Tx, keys: KeyRing, version: int, *, limit: int | None) -> int:
    default = await discoverability.default(tx)
    query = (
        _untagged(version)
        .add_columns(users.c.phone, discoverability.effective(default).label("level"))
        .order_by(users.c.id)
    )
    if limit is not None:
        query = query.limit(limit)
    rows = (await tx.conn.execute(query)).all()
    if not rows:
        return 0
    key = keys.key(version)
    made = await asyncio.to_thread(oprf.tags, key, [r.phone for r in rows])
    listed = [r.level == discoverability.EVERYBODY for r in rows]
    # a user who registers meanwhile is tagged by the registration too (`on_registered`), and
    # two processes may carry on with one interrupted rotation: the first tag stands
    await tx.conn.execute(
        bulk.insert_ignore(discovery_tags, tx.dialect),
        [
            {"user_id": r.id, "key_version": version, "tag": t.hex(), "listed": is_listed}
            for r, t, is_listed in zip(rows, made, listed, strict=True)
        ],
    )
    current = await state(tx)
    if version == current.key_version:
        await _log(
            tx,
            version,
            [
                (oprf.filter_key(t), True, False)
                for t, is_listed in zip(made, listed, strict=True)
                if is_listed
            ],
        )
    return len(rows)


async def rotate(ctx: Context, *, wait: float = ROTATE_WAIT_S) -> tuple[int, bool]:
    """A new OPRF key: every user is tagged under it (one scalar multiplication each, about
    50 us: some 50 s of one core for a million users), then it comes into force and clients,
    told by the filter's key version, evaluate their numbers again. The tagging runs in a
    task of this process, not in the request: this waits for it up to `wait` seconds.
    Returns (the new key version, whether it is in force). Asked again while a rotation is
    under way (here, or in another process, or interrupted by a stop), it carries on with
    that one rather than writing another key."""
    lock = ctx.services.discovery_rotation_lock
    if lock is None:
        raise RuntimeError("private discovery has not started (private_discovery.start)")
    async with lock:
        running = ctx.services.discovery_rotation
        if running is None or running.done():
            keys = _keys(ctx)
            async with ctx.read() as tx:
                current = await state(tx)
            keys.load()
            newer = [v for v in keys.keys if v > current.key_version]
            # never a second new key: the file keeps two, and the one in force must stay
            version = max(newer) if newer else keys.add()
            running = _spawn_rotation(ctx, version)
        version = ctx.services.discovery_rotating_to
    await asyncio.wait({running}, timeout=wait)  # the request going away leaves it running
    if running.done():
        return running.result(), True
    return version, False


def _spawn_rotation(ctx: Context, version: int) -> asyncio.Task[int]:
    task = asyncio.create_task(_rotate(ctx, version), name="discovery-rotation")
    ctx.services.discovery_rotation = task
    ctx.services.discovery_rotating_to = version
    task.add_done_callback(_log_failure)
    return task


def _log_failure(task: asyncio.Task[int]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("discovery: the key rotation failed", exc_info=task.exception())


async def _rotate(ctx: Context, version: int) -> int:
    keys = _keys(ctx)
    await backfill(ctx, version)
    if _stopping(ctx):
        raise asyncio.CancelledError  # the next start carries it on
    async with ctx.tx() as tx:
        current = await state(tx, lock=True)
        if current.key_version >= version:
            return current.key_version  # another process put it in force meanwhile
        await _tag_missing(tx, keys, version, limit=None)  # who registered meanwhile
        await _switch(tx, version)
        # the new key's filter: every listed user is an addition in the new log
        rows = await tx.conn.execute(
            sa.select(discovery_tags.c.tag).where(
                discovery_tags.c.key_version == version, discovery_tags.c.listed
            )
        )
        await _log(tx, version, [(_key_of(r.tag), True, False) for r in rows])
    _filter(ctx).clear()
    log.info("discovery: rotated the OPRF key to version %s", version)
    return version


@dataclass(frozen=True)
class Rotation:
    key_version: int
    rotating_to: int | None
    tagged: int
    users: int


async def rotation(ctx: Context) -> Rotation:
    """The key in force and the rotation under way, if any (in whichever process): how many
    users are tagged under the new key, of how many."""
    keys = _keys(ctx)
    async with ctx.read() as tx:
        current = await state(tx)
        keys.load()
        newer = max([v for v in keys.keys if v > current.key_version], default=None)
        total = int(await tx.conn.scalar(sa.select(sa.func.count()).select_from(users)) or 0)
        tagged = total
        if newer is not None:
            tagged = int(
                await tx.conn.scalar(
                    sa.select(sa.func.count())
                    .select_from(discovery_tags)
                    .where(discovery_tags.c.key_version == newer)
                )
                or 0
            )
    return Rotation(current.key_version, newer, tagged, total)


# --- keeping the filter current ----------------------------------------------------------------


def _key_of(tag_hex: str) -> int:
    return int(tag_hex[:16], 16) >> 1


async def _log(tx: Tx, key_version: int, changes: Sequence[tuple[int, bool, bool]]) -> None:
    """Append changes under consecutive versions. The state row is updated first, so its row
    lock orders concurrent writers: versions commit in order and a reader never skips one."""
    if not changes:
        return
    count = len(changes)
    last = await tx.conn.scalar(
        sa.update(discovery_state)
        .where(discovery_state.c.id == 1)
        .values(version=discovery_state.c.version + count)
        .returning(discovery_state.c.version)
    )
    assert last is not None
    first = int(last) - count + 1
    await tx.conn.execute(
        sa.insert(discovery_log),
        [
            {
                "version": first + i,
                "key_version": key_version,
                "key": key,
                "added": added,
                "announce": announce,
                "at": tx.now,
            }
            for i, (key, added, announce) in enumerate(changes)
        ],
    )
    tx.signals[WAKE] = int(last)


async def on_registered(
    tx: Tx,
    user: User,
    *,
    discoverable_by: str | None,
    announce_join_to: str | None,
) -> None:
    """Tag a new user under every key version the file holds from the one in force on (a
    rotation may be under way), and add them to the filter when they are listed. The user's
    own `discoverable_by` and `announce_join_to`, as just stored (None: the app's default)."""
    keys = ring(tx)
    if keys is None:
        return  # a tool without the key file: `backfill` tags them at the next start
    current = await state(tx)
    if current.key_version == 0:
        return
    listed = (discoverable_by or await discoverability.default(tx)) == "everybody"
    # the server cannot tell mutual contacts in private mode: only "everybody" is announced
    announce = (announce_join_to or "everybody") == "everybody"
    for version in sorted(v for v in keys.load() if v >= current.key_version):
        value = oprf.tag(keys.key(version), user.phone)
        await tx.conn.execute(
            sa.insert(discovery_tags).values(
                user_id=user.id, key_version=version, tag=value.hex(), listed=listed
            )
        )
        if listed and version == current.key_version:
            await _log(tx, version, [(oprf.filter_key(value), True, announce)])


async def relist(tx: Tx, user_ids: Sequence[int] | None = None) -> int:
    """Bring `listed` in line with the users' effective `discoverable_by` (after a user's
    change, or for everyone after the app default changed); returns the changes logged."""
    current = await state(tx)
    default = await discoverability.default(tx)
    wanted = discoverability.effective(default) == discoverability.EVERYBODY
    query = (
        sa.select(discovery_tags.c.user_id, discovery_tags.c.tag, wanted.label("wanted"))
        .select_from(discovery_tags.join(users, users.c.id == discovery_tags.c.user_id))
        .where(
            discovery_tags.c.key_version == current.key_version,
            discovery_tags.c.listed != wanted,
        )
    )
    if user_ids is not None:
        query = query.where(bulk.member(discovery_tags.c.user_id, list(user_ids), tx.dialect))
    rows = (await tx.conn.execute(query)).all()
    for flag in (True, False):
        ids = [r.user_id for r in rows if bool(r.wanted) is flag]
        if ids:
            await tx.conn.execute(
                sa.update(discovery_tags)
                .where(
                    discovery_tags.c.key_version == current.key_version,
                    bulk.member(discovery_tags.c.user_id, ids, tx.dialect),
                )
                .values(listed=flag)
            )
    await _log(tx, current.key_version, [(_key_of(r.tag), bool(r.wanted), False) for r in rows])
    return len(rows)


async def on_settings_changed(tx: Tx, before: Any, after: Any) -> None:
    """The `app_settings` hook: users who follow `discoverable_by_default` join or leave the
    filter when it changes."""
    if before.discoverable_by_default != after.discoverable_by_default:
        await relist(tx)


async def on_user_deleted(tx: Tx, user_id: int) -> None:
    """A leave for a listed user about to be deleted (the tags go with the user row)."""
    current = await state(tx)
    tag = await tx.conn.scalar(
        sa.select(discovery_tags.c.tag).where(
            discovery_tags.c.user_id == user_id,
            discovery_tags.c.key_version == current.key_version,
            discovery_tags.c.listed,
        )
    )
    if tag is not None:
        await _log(tx, current.key_version, [(_key_of(tag), False, False)])


# --- the filter ---------------------------------------------------------------------------------


class FilterCache:
    """This process's last built base filter. A base stays good while the deltas after it are
    short; then the next full download builds a new one (from the tags, not the numbers)."""

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.version = 0
        self.key_version = 0
        self.count = 0
        self.lock = asyncio.Lock()

    def clear(self) -> None:
        self.data = None

    def fresh(self, now: State) -> bool:
        tail = now.version - self.version
        return (
            self.data is not None
            and self.key_version == now.key_version
            and tail <= max(1_000, self.count // 50)
        )


@dataclass(frozen=True)
class Delta:
    version: int
    key_version: int
    changes: bytes


async def delta(tx: ReadTx, since: int, key_version: int) -> Delta | None:
    """The changes after `since` under `key_version`, or None when the client must download
    the whole filter (another key version, a version from the future, or deltas dropped)."""
    now = await state(tx)
    if key_version != now.key_version or since > now.version:
        return None
    if since == now.version:
        return Delta(now.version, now.key_version, b"")
    rows = (
        await tx.conn.execute(
            sa.select(
                discovery_log.c.version,
                discovery_log.c.key,
                discovery_log.c.added,
                discovery_log.c.announce,
            )
            .where(discovery_log.c.version > since, discovery_log.c.version <= now.version)
            .order_by(discovery_log.c.version)
            .limit(MAX_DELTA + 1)
        )
    ).all()
    # versions are consecutive: a gap at the start means the deltas were dropped
    if not rows or rows[0].version != since + 1 or len(rows) > MAX_DELTA:
        return None
    changes = tagfilter.encode_changes((r.key, bool(r.added), bool(r.announce)) for r in rows)
    return Delta(int(rows[-1].version), now.key_version, changes)


async def full(ctx: Context) -> tuple[bytes, int, int]:
    """(filter bytes, its version, key version): a base the client completes with the delta
    after its version."""
    cache = _filter(ctx)
    async with ctx.read() as tx:
        now = await state(tx)
    if cache.fresh(now):
        assert cache.data is not None
        return cache.data, cache.version, cache.key_version
    async with cache.lock:
        async with ctx.read() as tx:
            # the version first: changes made while the tags are read are in the delta after
            # it, and replaying them over the base gives the same set
            now = await state(tx)
            if cache.fresh(now):
                assert cache.data is not None
                return cache.data, cache.version, cache.key_version
            rows = await tx.conn.execute(
                sa.select(discovery_tags.c.tag).where(
                    discovery_tags.c.key_version == now.key_version, discovery_tags.c.listed
                )
            )
            keys = [_key_of(tag) for (tag,) in rows]
        data = await asyncio.to_thread(
            tagfilter.encode, keys, version=now.version, key_version=now.key_version
        )
        cache.data, cache.version, cache.key_version, cache.count = (
            data,
            now.version,
            now.key_version,
            len(keys),
        )
    async with ctx.tx() as tx:
        await tx.conn.execute(
            sa.delete(discovery_log).where(discovery_log.c.at < tx.now - LOG_KEEP_MS)
        )
    return data, now.version, now.key_version


# --- evaluate and resolve -------------------------------------------------------------------------


def _check_key(current: State, key_version: int) -> None:
    if key_version != current.key_version:
        raise DiscoveryKeyChanged(details={"key_version": current.key_version, "got": key_version})


async def _limit(tx: ReadTx, count: int) -> None:
    limit = (await app_settings.load(tx)).max_contacts_per_request
    if count > limit:
        raise TooManyPoints(
            f"At most {limit} per request; send the rest in further requests.",
            details={"max": limit, "got": count},
        )


def decode_points(raw: Sequence[str]) -> list[bytes]:
    points = []
    for index, item in enumerate(raw):
        try:
            point = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            point = b""
        if len(point) != oprf.POINT_BYTES or not oprf.is_valid_point(point):
            raise InvalidPoint(details={"index": index})
        points.append(point)
    return points


async def evaluate(ctx: Context, owner_id: int, key_version: int, raw: Sequence[str]) -> list[str]:
    """(H(n)^r)^k for each blinded point, base64; charged to the caller's discovery quota
    before anything is computed, and only when every point is valid."""
    points = decode_points(raw)
    async with ctx.tx() as tx:
        current = await state(tx)
        _check_key(current, key_version)
        await _limit(tx, len(points))
        # the server cannot tell repeats apart: every point takes a token (the SDK evaluates
        # a number once per key version, so re-syncs take none)
        await quota.charge(tx, owner_id, len(points))
        tx.counts["discovery_points"] += len(points)
    key = _keys(ctx).key(current.key_version)
    answered = await asyncio.to_thread(oprf.evaluate_many, key, points)
    return [base64.b64encode(p).decode() for p in answered]


async def resolve(
    tx: ReadTx, caller_id: int, key_version: int, tags: Sequence[str]
) -> list[dict[str, Any]]:
    """The users behind tags the client matched: listed or discoverable by their contacts,
    that the caller may learn are registered (`policy.learnable`: no block either way,
    `discoverable_by`), never the caller. A `nobody` user is a miss."""
    current = await state(tx)
    _check_key(current, key_version)
    await _limit(tx, len(tags))
    for index, value in enumerate(tags):
        if not isinstance(value, str) or not _TAG.fullmatch(value):
            raise InvalidTag(details={"index": index})
    if not tags:
        return []
    level = discoverability.effective(await discoverability.default(tx))
    rows = await tx.conn.execute(
        sa.select(discovery_tags.c.tag, discovery_tags.c.user_id)
        .select_from(discovery_tags.join(users, users.c.id == discovery_tags.c.user_id))
        .where(
            discovery_tags.c.key_version == current.key_version,
            sa.or_(discovery_tags.c.listed, level == discoverability.CONTACTS),
            bulk.member(discovery_tags.c.tag, list(dict.fromkeys(tags)), tx.dialect),
            discovery_tags.c.user_id != caller_id,
        )
    )
    found = {r.user_id: r.tag for r in rows}
    allowed = await policy.learnable(tx, caller_id, found)
    shown = [uid for uid in found if uid in allowed]
    seen = await profiles.visible_profiles(tx, caller_id, shown)
    tx.counts["matches"] += len(shown)
    return [
        {"tag": found[uid], "user_id": uid, "profile": seen.get(uid, {})} for uid in sorted(shown)
    ]


async def contacts(tx: ReadTx, caller_id: int, key_version: int) -> list[str]:
    """The filter keys (16 hex digits) of the users discoverable by their contacts only whom
    the caller may learn are registered: the caller's own addition to the filter.

    The rule is `policy.learnable`'s, so exactly the users `resolve` would show: those who
    hold the caller where the server can see it (a relation marked as contact; a book entry,
    which exists only where books are stored) and those who share a relation or a
    conversation with the caller. Nobody else's list holds them, so the filter still tells
    nobody that they are registered. The answer tells the caller nothing about a user until
    it holds the user's number too (a key is matched against the caller's own tags)."""
    current = await state(tx)
    _check_key(current, key_version)
    phone = sa.select(users.c.phone).where(users.c.id == caller_id).scalar_subquery()
    mine = conversation_members.alias("mine")
    theirs = conversation_members.alias("theirs")
    near = sa.union(
        sa.select(book_entries.c.owner_id.label("id")).where(book_entries.c.phone == phone),
        sa.select(relations.c.owner_id).where(relations.c.target_id == caller_id),
        sa.select(relations.c.target_id).where(
            relations.c.owner_id == caller_id, relations.c.target_id.is_not(None)
        ),
        sa.select(theirs.c.user_id)
        .select_from(mine.join(theirs, theirs.c.conversation_id == mine.c.conversation_id))
        .where(mine.c.user_id == caller_id),
    ).subquery()
    level = discoverability.effective(await discoverability.default(tx))
    rows = (
        await tx.conn.execute(
            sa.select(discovery_tags.c.user_id, discovery_tags.c.tag)
            .select_from(discovery_tags.join(users, users.c.id == discovery_tags.c.user_id))
            .where(
                discovery_tags.c.key_version == current.key_version,
                level == discoverability.CONTACTS,
                discovery_tags.c.user_id != caller_id,
                discovery_tags.c.user_id.in_(sa.select(near.c.id)),
            )
            .order_by(discovery_tags.c.user_id)
            .limit(MAX_OWN)
        )
    ).all()
    allowed = await policy.learnable(tx, caller_id, [r.user_id for r in rows])
    return sorted(f"{_key_of(r.tag):016x}" for r in rows if r.user_id in allowed)
