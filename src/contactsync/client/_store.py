"""The SDK's local SQLite store: one file per account (server, user, device book).

It holds what the device knows:
- `contacts`: each source record seen, by content key, with its normalised numbers;
- `contact_phones`: which records hold which number (a number may be in several contacts);
- `entries`: per number, what the server should have (`want`, `want_name`) and what it has
  acknowledged (`ack`, `ack_name`); `dirty` marks the difference still to upload, `queued`
  that it is in a batch of the outbox already;
- `numbers`: normalisation results by (raw string, region), so a number is parsed once;
- `outbox`: batches sent or about to be sent, so a crash resumes them with the same batch_id;
- `meta`: the session, the event cursor, the source fingerprint, the last metrics, the
  preferences (and changes to them not yet acknowledged), the conversation list watermark;
- `conversations`: each conversation as last seen (JSON), the caller's consent, whether the
  caller is still a member, and `cursor`, the last seq this device holds;
- `messages`: the messages synced, by (conversation, seq);
- `outgoing`: messages written but not yet acknowledged, resent with the same client_msg_id.

Everything is synchronous sqlite3: each call is short, and the async manager runs it inline.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from contactsync import phone_variants
from contactsync.client._errors import StateError

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (
    key TEXT PRIMARY KEY, id TEXT NOT NULL, name TEXT,
    phones TEXT NOT NULL, invalid TEXT
);
CREATE INDEX IF NOT EXISTS contacts_invalid ON contacts (key) WHERE invalid IS NOT NULL;
CREATE TABLE IF NOT EXISTS contact_phones (
    phone TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (phone, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    phone TEXT PRIMARY KEY, want INTEGER NOT NULL, want_name TEXT,
    ack INTEGER NOT NULL, ack_name TEXT, dirty INTEGER NOT NULL,
    queued INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_dirty ON entries (phone) WHERE dirty = 1;
CREATE INDEX IF NOT EXISTS entries_queued ON entries (phone) WHERE queued = 1;
CREATE TABLE IF NOT EXISTS numbers (
    raw TEXT NOT NULL, region TEXT NOT NULL, e164 TEXT, reason TEXT,
    PRIMARY KEY (raw, region)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY, consent TEXT NOT NULL, member INTEGER NOT NULL DEFAULT 1,
    updated_at INTEGER NOT NULL, cursor INTEGER, view TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    conversation_id INTEGER NOT NULL, seq INTEGER NOT NULL, message TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outgoing (
    client_msg_id TEXT PRIMARY KEY, conversation_id INTEGER NOT NULL, body TEXT NOT NULL,
    queued_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, batch_id TEXT NOT NULL, force INTEGER NOT NULL,
    final INTEGER NOT NULL, body TEXT NOT NULL
);
"""

# `dirty` after `want`/`ack` changed: absent vs present, or a new name to send
_DIRTY = "(want != ack OR (want = 1 AND want_name IS NOT ack_name AND want_name IS NOT NULL))"


class LocalStore:
    """An open store file. `close()` releases it; `delete()` removes the file and its journal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        if self.get("schema") is None:
            self.put("schema", SCHEMA_VERSION)
        rules = str(phone_variants.RULES_VERSION)
        if self.get("phone_rules") != rules:
            # New old-form rules only ever turn a refused number into a valid one: forget the
            # refusals cached under older rules, so those numbers are read again.
            self.db.execute("DELETE FROM numbers WHERE e164 IS NULL")
            self.put("phone_rules", rules)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StateError("the local database connection is closed")
        return self._db

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def delete(self) -> None:
        """Close and remove the file with its WAL and shared-memory companions."""
        self.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(self.path) + suffix).unlink(missing_ok=True)

    @property
    def changes(self) -> int:
        """Rows written through this connection since it was opened."""
        return self.db.total_changes

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database file now (PASSIVE: it never waits).
        SQLite does it by itself at the first commit after the log reached 1,000 pages; a big
        sync leaves it close to that, so the next small write (a resync's) would pay for it."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def transaction(self) -> sqlite3.Connection:
        """`with store.transaction() as db:` commits on success, rolls back on error."""
        self.db.execute("BEGIN")
        return _Tx(self.db)  # type: ignore[return-value]

    # --- meta ------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def get_json(self, key: str) -> Any:
        raw = self.get(key)
        return None if raw is None else json.loads(raw)

    def put_json(self, key: str, value: Any) -> None:
        self.put(key, json.dumps(value, ensure_ascii=False))

    # --- normalisation cache -----------------------------------------------------------

    def has_numbers(self, region: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM numbers WHERE region = ? LIMIT 1", (region,)).fetchone()
            is not None
        )

    def cached_numbers(
        self, raws: Sequence[str], region: str
    ) -> dict[str, tuple[str | None, str | None]]:
        if not raws:
            return {}
        rows = self.db.execute(
            "SELECT raw, e164, reason FROM numbers WHERE region = ? "
            "AND raw IN (SELECT value FROM json_each(?))",
            (region, json.dumps(list(raws))),
        )
        return {raw: (e164, reason) for raw, e164, reason in rows}

    def cache_numbers(
        self, region: str, results: Iterable[tuple[str, str | None, str | None]]
    ) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO numbers (raw, region, e164, reason) "
            "SELECT json_extract(value, '$[0]'), ?2, json_extract(value, '$[1]'), "
            "json_extract(value, '$[2]') FROM json_each(?1)",
            (_json(list(results)), region),
        )

    # --- contacts ----------------------------------------------------------------------

    def contact_keys(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT key FROM contacts")}

    def count_contacts(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM contacts").fetchone()[0])

    def remove_contacts(self, keys: Sequence[str]) -> set[str]:
        """Forget these records; returns the numbers they held."""
        if not keys:
            return set()
        arg = json.dumps(list(keys))
        # the numbers come from the records themselves: contact_phones is keyed by number
        # first, and finding a record's rows there by key alone would read the whole table
        pairs = list(
            self.db.execute(
                "SELECT j.value, c.key FROM contacts c, json_each(c.phones) j "
                "WHERE c.key IN (SELECT value FROM json_each(?))",
                (arg,),
            )
        )
        self.db.executemany("DELETE FROM contact_phones WHERE phone = ? AND key = ?", pairs)
        self.db.execute(
            "DELETE FROM contacts WHERE key IN (SELECT value FROM json_each(?))", (arg,)
        )
        return {phone for phone, _ in pairs}

    def add_contacts(
        self, rows: Sequence[tuple[str, str, str | None, list[str], list[Any] | None]]
    ) -> set[str]:
        """Insert (key, id, name, e164 numbers, invalid entries); returns the numbers held."""
        self.db.executemany(
            "INSERT OR REPLACE INTO contacts (key, id, name, phones, invalid) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                (key, cid, name, _e164_list(phones), json.dumps(bad) if bad else None)
                for key, cid, name, phones, bad in rows
            ),
        )
        pairs = {(p, key) for key, _, _, phones, _ in rows for p in phones}
        self.db.executemany(
            "INSERT OR IGNORE INTO contact_phones (phone, key) VALUES (?, ?)", pairs
        )
        return {p for p, _ in pairs}

    def invalid_entries(self) -> list[tuple[str, str | None, list[Any]]]:
        return [
            (cid, name, json.loads(bad))
            for cid, name, bad in self.db.execute(
                "SELECT id, name, invalid FROM contacts WHERE invalid IS NOT NULL ORDER BY id"
            )
        ]

    # --- entries (what the server should have) ----------------------------------------

    def refresh_entries(self, phones: Iterable[str]) -> None:
        """Recompute `want` for these numbers from the contacts that hold them."""
        wanted = list(set(phones))
        if not wanted:
            return
        arg = json.dumps(wanted)
        # one name per number: the named contact with the smallest id (then key), so the
        # choice is stable across scans; a new row has nothing acknowledged, so it is dirty
        # exactly when it is wanted
        self.db.execute(
            "INSERT INTO entries (phone, want, want_name, ack, ack_name, dirty) "
            "SELECT phone, held, name, 0, NULL, held FROM (SELECT w.value AS phone, "
            "EXISTS (SELECT 1 FROM contact_phones cp WHERE cp.phone = w.value) AS held, "
            "(SELECT c.name FROM contact_phones cp JOIN contacts c ON c.key = cp.key "
            "WHERE cp.phone = w.value AND c.name IS NOT NULL ORDER BY c.id, c.key LIMIT 1) AS name "
            "FROM json_each(?) w) WHERE true ON CONFLICT (phone) DO UPDATE SET "
            "want = excluded.want, want_name = excluded.want_name, "
            "dirty = (excluded.want != ack OR (excluded.want = 1 AND "
            "excluded.want_name IS NOT ack_name AND excluded.want_name IS NOT NULL))",
            (arg,),
        )
        self.db.execute(
            "DELETE FROM entries WHERE want = 0 AND ack = 0 "
            "AND phone IN (SELECT value FROM json_each(?))",
            (arg,),
        )

    def seed_server_book(self, book: Iterable[tuple[str, str | None]]) -> None:
        """What the server already holds (read once for a new store), as acknowledged."""
        self.db.executemany(
            "INSERT INTO entries (phone, want, want_name, ack, ack_name, dirty) "
            "VALUES (?, 0, NULL, 1, ?, 1) ON CONFLICT (phone) DO UPDATE SET "
            "ack = 1, ack_name = excluded.ack_name",
            book,
        )
        self.db.execute(f"UPDATE entries SET dirty = {_DIRTY}")

    def take_dirty_entries(
        self, phones: Collection[str] | None = None
    ) -> list[tuple[str, int, str | None]]:
        """The differences not yet in the outbox, marked as queued; with `phones`, only
        those among these numbers (a first sync plans each chunk's numbers as it is stored,
        without going through every entry still in flight)."""
        if phones is not None:
            if not phones:
                return []
            arg = json.dumps(list(phones))
            # one row of JSON: cheaper than fetching a row per entry
            found = self.db.execute(
                "SELECT json_group_array(json_array(phone, want, want_name)) FROM entries "
                "WHERE dirty = 1 AND queued = 0 AND phone IN (SELECT value FROM json_each(?))",
                (arg,),
            ).fetchone()[0]
            rows = [(phone, want, name) for phone, want, name in json.loads(found)]
            if rows:
                self.db.execute(
                    "UPDATE entries SET queued = 1 WHERE dirty = 1 AND queued = 0 "
                    "AND phone IN (SELECT value FROM json_each(?))",
                    (arg,),
                )
            return rows
        rows = list(
            self.db.execute(
                "SELECT phone, want, want_name FROM entries WHERE dirty = 1 AND queued = 0"
            )
        )
        if rows:
            self.db.execute("UPDATE entries SET queued = 1 WHERE dirty = 1 AND queued = 0")
        return rows

    def unqueue_all(self) -> None:
        """Nothing is in flight any more (the outbox is empty or was dropped)."""
        self.db.execute("UPDATE entries SET queued = 0 WHERE queued = 1")

    def wanted_entries(self) -> list[tuple[str, str | None]]:
        return list(
            self.db.execute("SELECT phone, want_name FROM entries WHERE want = 1 ORDER BY phone")
        )

    def count_dirty(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM entries WHERE dirty = 1").fetchone()[0])

    def count_unsynced_contacts(self) -> int:
        """Contacts with a number the server has not acknowledged yet (as added or renamed)."""
        return int(
            self.db.execute(
                "SELECT count(DISTINCT cp.key) FROM contact_phones cp "
                "JOIN entries e ON e.phone = cp.phone WHERE e.dirty = 1 AND e.want = 1"
            ).fetchone()[0]
        )

    def acknowledge(self, sent: Sequence[tuple[str, int, str | None]]) -> None:
        """The server applied these (phone, present, name): record them as its state."""
        # keyed updates in one executemany: primary-key hits, cheaper than decoding the batch
        # again with json_each/json_extract in SQL
        self.db.executemany(
            "UPDATE entries SET ack = ?2, ack_name = ?3, queued = 0, "
            "dirty = (want != ?2 OR (want = 1 AND want_name IS NOT ?3 "
            "AND want_name IS NOT NULL)) WHERE phone = ?1",
            sent,
        )
        # only a destroyed number can end up neither wanted nor held by the server
        gone = [p for p, present, _ in sent if not present]
        if gone:
            self.db.execute(
                "DELETE FROM entries WHERE want = 0 AND ack = 0 "
                "AND phone IN (SELECT value FROM json_each(?))",
                (json.dumps(gone),),
            )

    def acknowledge_force(self) -> None:
        """A force upload made the server's book exactly what we want."""
        self.db.execute("DELETE FROM entries WHERE want = 0")
        self.db.execute("UPDATE entries SET ack = 1, ack_name = want_name, dirty = 0, queued = 0")

    # --- outbox ------------------------------------------------------------------------

    def next_outbox(self, after: int) -> tuple[int, str, bool, bool, dict[str, Any]] | None:
        """The oldest batch after `after` (one at a time: a big outbox stays on disk)."""
        row = self.db.execute(
            "SELECT seq, batch_id, force, final, body FROM outbox WHERE seq > ? "
            "ORDER BY seq LIMIT 1",
            (after,),
        ).fetchone()
        if row is None:
            return None
        seq, batch_id, force, final, body = row
        return seq, batch_id, bool(force), bool(final), json.loads(body)

    def outbox_rows(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def outbox_contacts(self) -> int:
        return int(
            self.db.execute(
                "SELECT coalesce(sum(json_array_length(body, '$.contacts')), 0) FROM outbox"
            ).fetchone()[0]
        )

    def has_outbox(self) -> bool:
        return self.db.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None

    def has_force_outbox(self) -> bool:
        """A force upload was planned and not finished (a crash or failure interrupted it)."""
        row = self.db.execute("SELECT 1 FROM outbox WHERE force = 1 LIMIT 1").fetchone()
        return row is not None

    def enqueue(self, batches: Sequence[tuple[str, bool, bool, dict[str, Any]]]) -> None:
        self.db.executemany(
            "INSERT INTO outbox (batch_id, force, final, body) VALUES (?, ?, ?, ?)",
            (
                (batch_id, int(force), int(final), json.dumps(body, ensure_ascii=False))
                for batch_id, force, final, body in batches
            ),
        )

    def dequeue(self, seq: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))

    def clear_outbox(self) -> None:
        self.db.execute("DELETE FROM outbox")

    # --- conversations -------------------------------------------------------------------

    def save_conversations(self, views: Iterable[dict[str, Any]]) -> None:
        """Store conversations as the server sent them (the caller is a member of each); the
        device's cursor is kept."""
        self.db.executemany(
            "INSERT INTO conversations (id, consent, member, updated_at, view) "
            "VALUES (?, ?, 1, ?, ?) ON CONFLICT (id) DO UPDATE SET consent = excluded.consent, "
            "member = 1, updated_at = excluded.updated_at, view = excluded.view "
            # an event replayed from the log carries an older view than a sync just stored
            "WHERE excluded.updated_at >= conversations.updated_at AND "
            "json_extract(excluded.view, '$.last_seq') >= "
            "json_extract(conversations.view, '$.last_seq')",
            (
                (
                    v["id"],
                    v["consent"],
                    v["updated_at"],
                    json.dumps(stored_view(v), ensure_ascii=False),
                )
                for v in views
            ),
        )

    def conversation(self, conversation_id: int) -> tuple[dict[str, Any], bool, int | None] | None:
        """(view, still a member, cursor) or None for a conversation this device never saw."""
        row = self.db.execute(
            "SELECT view, consent, member, cursor FROM conversations WHERE id = ?",
            (conversation_id,),
        ).fetchone()
        if row is None:
            return None
        view, consent, member, cursor = row
        return {**json.loads(view), "consent": consent}, bool(member), cursor

    def conversations(
        self, consent: Sequence[str] | None = None
    ) -> list[tuple[dict[str, Any], bool, int | None]]:
        """Conversations newest change first, optionally only those in these consent states."""
        rows = self.db.execute(
            "SELECT view, consent, member, cursor FROM conversations "
            "WHERE ?1 IS NULL OR consent IN (SELECT value FROM json_each(?1)) "
            "ORDER BY updated_at DESC, id DESC",
            (None if consent is None else json.dumps(list(consent)),),
        )
        return [
            ({**json.loads(view), "consent": state}, bool(member), cursor)
            for view, state, member, cursor in rows
        ]

    def conversation_cursors(self) -> dict[int, int]:
        """The last seq held per conversation the caller belongs to (what /v1/sync needs)."""
        return {
            cid: cursor
            for cid, cursor in self.db.execute(
                "SELECT id, cursor FROM conversations WHERE member = 1 AND cursor IS NOT NULL"
            )
        }

    def set_consent(self, conversation_id: int, state: str) -> None:
        self.db.execute(
            "UPDATE conversations SET consent = ? WHERE id = ?", (state, conversation_id)
        )

    def leave_conversation(self, conversation_id: int) -> None:
        """No longer a member: kept (with its history) but not synced any more."""
        self.db.execute("UPDATE conversations SET member = 0 WHERE id = ?", (conversation_id,))

    def set_cursor(self, conversation_id: int, cursor: int) -> None:
        """Move the cursor forward only (a late answer never moves it back)."""
        self.db.execute(
            "UPDATE conversations SET cursor = max(coalesce(cursor, 0), ?) WHERE id = ?",
            (cursor, conversation_id),
        )

    def add_messages(self, messages: Sequence[dict[str, Any]]) -> int:
        """Store messages (one already stored is left as it is) and drop the outgoing copies they
        acknowledge; returns how many were new."""
        before = self.db.total_changes
        self.db.executemany(
            "INSERT OR IGNORE INTO messages (conversation_id, seq, message) VALUES (?, ?, ?)",
            (
                (m["conversation_id"], m["seq"], json.dumps(_message(m), ensure_ascii=False))
                for m in messages
            ),
        )
        added = self.db.total_changes - before
        sent = [m["client_msg_id"] for m in messages if m.get("client_msg_id")]
        if sent:
            self.db.execute(
                "DELETE FROM outgoing WHERE client_msg_id IN (SELECT value FROM json_each(?))",
                (json.dumps(sent),),
            )
        return added

    def add_live_message(self, message: dict[str, Any]) -> None:
        """A message that arrived as an event: stored, and the cursor moves only when it is the
        next one (a gap is filled by the next sync)."""
        self.add_messages([message])
        self.db.execute(
            "UPDATE conversations SET cursor = ? WHERE id = ? AND cursor = ?",
            (message["seq"], message["conversation_id"], message["seq"] - 1),
        )

    def messages(
        self, conversation_id: int, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        return [
            json.loads(raw)
            for (raw,) in self.db.execute(
                "SELECT message FROM messages WHERE conversation_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (conversation_id, after, -1 if limit is None else limit),
            )
        ]

    def queue_message(self, client_msg_id: str, conversation_id: int, body: str, at: int) -> None:
        self.db.execute(
            "INSERT INTO outgoing (client_msg_id, conversation_id, body, queued_at) "
            "VALUES (?, ?, ?, ?)",
            (client_msg_id, conversation_id, body, at),
        )

    def outgoing(self, conversation_id: int | None = None) -> list[tuple[str, int, str, int]]:
        """(client_msg_id, conversation_id, body, queued_at) in the order they were written."""
        return list(
            self.db.execute(
                "SELECT client_msg_id, conversation_id, body, queued_at FROM outgoing "
                "WHERE ?1 IS NULL OR conversation_id = ?1 ORDER BY queued_at, rowid",
                (conversation_id,),
            )
        )

    def drop_outgoing(self, client_msg_id: str) -> None:
        self.db.execute("DELETE FROM outgoing WHERE client_msg_id = ?", (client_msg_id,))


def stored_view(view: dict[str, Any]) -> dict[str, Any]:
    """A conversation as stored: the wire object without sync-only fields."""
    return {k: v for k, v in view.items() if k not in ("messages", "has_more", "cursor")}


def _message(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "device_id"}


def _e164_list(phones: Sequence[str]) -> str:
    """JSON of a list of E.164 numbers (nothing in them needs escaping), without json.dumps."""
    return '["' + '","'.join(phones) + '"]' if phones else "[]"


def _json(value: Any) -> str:
    """Rows handed to SQLite as one JSON array (read back with json_each): one statement
    instead of an executemany step per row."""
    return json.dumps(value, ensure_ascii=False)


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
