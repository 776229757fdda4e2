"""Table definitions used to build queries.

The schema itself is created only by the Alembic migrations in `migrations/`; a test checks
that these definitions and the migrated schema agree. Times are integer milliseconds since the
epoch, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# BIGINT on PostgreSQL; on SQLite an INTEGER PRIMARY KEY, so it is the auto-incrementing rowid.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
MS = sa.BigInteger

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("phone", sa.String(16), nullable=False, unique=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("region", sa.String(2), nullable=True),
    sa.Column("restricted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", MS, nullable=False),
    # The user's own switch for "X joined" notices (the app-wide one is in app settings).
    sa.Column("notify_contact_joined", sa.Boolean, nullable=False, server_default=sa.true()),
    # Who may learn that this user is registered ("everybody", "contacts", "nobody"; NULL: the
    # app's default) and who hears "X joined" ("everybody", "contacts", "nobody"; NULL:
    # everybody). See services/discoverability.py.
    sa.Column("discoverable_by", sa.String(9), nullable=True),
    sa.Column("announce_join_to", sa.String(9), nullable=True),
    # the users who joined a moment ago (joins.attach_late), newest users in the console
    sa.Index("ix_users_created_at", "created_at"),
    sqlite_autoincrement=True,
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("device_id", sa.String(128), nullable=False),
    sa.Column("created_at", MS, nullable=False),
    sa.UniqueConstraint("user_id", "device_id", name="uq_devices_user_device"),
    sqlite_autoincrement=True,
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column(
        "device_pk",
        ID,
        sa.ForeignKey("devices.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    sa.Column("created_at", MS, nullable=False),
)

otp_codes = sa.Table(
    "otp_codes",
    metadata,
    sa.Column("phone", sa.String(16), primary_key=True),
    sa.Column("code_hash", sa.String(64), nullable=False),
    sa.Column("expires_at", MS, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", MS, nullable=False),
)

# Token buckets (services/ratelimit.py): one row per limited key, e.g. "otp:phone:+1…",
# "send:msgs:42", "discovery:42".
rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("at", MS, nullable=False),
)

app_settings = sa.Table(
    "app_settings",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
)

event_counters = sa.Table(
    "event_counters",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    # The highest seq removed by retention: replaying from before it cannot be complete.
    sa.Column("trimmed_seq", sa.BigInteger, nullable=False, server_default="0"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("at", MS, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_events_at", "at"),
)

# Address books: one row per (owner, book, number). book is "" for the user's global book, or
# the device_id of a per-installation book. The index on phone makes "who holds this number"
# (joins, discovery) a cheap lookup.
book_entries = sa.Table(
    "book_entries",
    metadata,
    # No foreign key, which would be checked once an entry written (a third of a big
    # upload's INSERT): entries are written only after their transaction raised the book's
    # version, whose row holds the user (book_versions), and a user's deletion deletes them
    # (services/users.py). Migration 0015.
    sa.Column("owner_id", ID, primary_key=True),
    sa.Column("book", sa.String(128), primary_key=True),
    sa.Column("phone", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(200), nullable=True),
    # When the number entered the book: the discovery quota counts recent ones.
    sa.Column("created_at", MS, nullable=False),
    sa.Column("updated_at", MS, nullable=False),
    # The user registered under `phone` itself (not a variant of it), or NULL: set when the
    # entry is made and when someone registers the number (services/joins.py).
    sa.Column(
        "user_id",
        ID,
        sa.ForeignKey("users.id", ondelete="SET NULL", name="fk_book_entries_user_id"),
        nullable=True,
    ),
    sa.Index("ix_book_entries_phone", "phone"),
    sa.Index(
        "ix_book_entries_user_id",
        "user_id",
        postgresql_where=sa.text("user_id IS NOT NULL"),
        sqlite_where=sa.text("user_id IS NOT NULL"),
    ),
    # a book's entries of registered numbers, read whole by big uploads
    sa.Index(
        "ix_book_entries_registered",
        "owner_id",
        "book",
        postgresql_where=sa.text("user_id IS NOT NULL"),
        sqlite_where=sa.text("user_id IS NOT NULL"),
    ),
)

# Raised by every change to a book (see services/addressbook.py): a page cursor carries it.
book_versions = sa.Table(
    "book_versions",
    metadata,
    sa.Column("owner_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("book", sa.String(128), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)

blocks = sa.Table(
    "blocks",
    metadata,
    sa.Column("blocker_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("blocked_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("created_at", MS, nullable=False),
    sa.Index("ix_blocks_blocked", "blocked_id"),
)

# Pairs are symmetric and stored once, with a_id < b_id.
pairs = sa.Table(
    "pairs",
    metadata,
    sa.Column("a_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("b_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("created_at", MS, nullable=False),
    sa.CheckConstraint("a_id < b_id", name="ck_pairs_ordered"),
    sa.Index("ix_pairs_b", "b_id"),
)

# Upload requests by idempotency key. A retried batch_id returns `response` and changes
# nothing; a force upload spanning several requests stays `open` until its final part.
upload_batches = sa.Table(
    "upload_batches",
    metadata,
    sa.Column("owner_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("book", sa.String(128), nullable=False),
    sa.Column("force", sa.Boolean, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("response", sa.JSON, nullable=True),
    sa.Column("created_at", MS, nullable=False),
    sa.Index("ix_upload_batches_created", "owner_id", "created_at"),
)

# Contacts of an open multi-request force upload, applied all at once by its final part.
staged_contacts = sa.Table(
    "staged_contacts",
    metadata,
    sa.Column("owner_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("phone", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("destroy", sa.Boolean, nullable=False),
)

# Numbers each user has checked against the user base: the anti-enumeration quota counts the
# distinct ones in a rolling 24 h window.
discovery_checks = sa.Table(
    "discovery_checks",
    metadata,
    sa.Column("owner_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("phone", sa.String(16), primary_key=True),
    sa.Column("at", MS, nullable=False),
)

# When a number last caused "X joined" notices: a number that joins, leaves and joins again
# within a day notifies once. Kept by number, not user, and only for a day.
join_notices = sa.Table(
    "join_notices",
    metadata,
    sa.Column("phone", sa.String(16), primary_key=True),
    sa.Column("at", MS, nullable=False),
)

# Profile fields: one row per (user, field name). `level` 0 is public, 1..63 are the app's own
# access levels (see services/profiles.py for the visibility rule).
profile_fields = sa.Table(
    "profile_fields",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("level", sa.SmallInteger, nullable=False),
    sa.Column("updated_at", MS, nullable=False),
    sa.CheckConstraint("level >= 0 AND level <= 63", name="ck_profile_fields_level"),
)

# Relations from owner to another user. `target_id` is set once the other side is a user;
# until then the relation is pending on `phone` (E.164) and attaches when that number
# registers (phone is cleared then). `levels` is a bitmask: level L (1..63) is bit L-1, so the
# largest mask still fits a signed BIGINT.
relations = sa.Table(
    "relations",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("owner_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("target_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("phone", sa.String(16), nullable=True),
    sa.Column("contact", sa.Boolean, nullable=False),
    sa.Column("subscribe", sa.Boolean, nullable=False),
    sa.Column("levels", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", MS, nullable=False),
    sa.Column("updated_at", MS, nullable=False),
    sa.UniqueConstraint("owner_id", "target_id", name="uq_relations_owner_target"),
    sa.UniqueConstraint("owner_id", "phone", name="uq_relations_owner_phone"),
    sa.CheckConstraint(
        "(target_id IS NULL) <> (phone IS NULL)", name="ck_relations_target_or_phone"
    ),
    sa.Index("ix_relations_target", "target_id"),
    sa.Index("ix_relations_phone", "phone"),
    sqlite_autoincrement=True,
)

# Signed-in admin console sessions. The cookie holds a random token; only its hash is kept.
# `key_hash` is the admin key's hash at sign-in, so changing the admin key ends every session.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False),
    sa.Column("created_at", MS, nullable=False),
    sa.Column("expires_at", MS, nullable=False),
    sa.Index("ix_console_sessions_expires", "expires_at"),
)

# Push webhook outbox: one row per (recipient, event) to push while the recipient has no live
# connection. `pending` rows are due at `next_attempt_at` (a claimed row is leased by moving it
# forward); `failed` rows gave up after the configured attempts and stay for inspection.
push_outbox = sa.Table(
    "push_outbox",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", MS, nullable=False),
    sa.Column("last_error", sa.String(200), nullable=True),
    sa.Column("created_at", MS, nullable=False),
    sa.Column("updated_at", MS, nullable=False),
    sa.Index("ix_push_outbox_due", "state", "next_attempt_at"),
    sa.Index("ix_push_outbox_user", "user_id"),
    sqlite_autoincrement=True,
)


# Conversations: a "dm" has exactly two members and a unique dm_key ("lo:hi" user ids), so a
# pair can only ever have one; a "group" has a name, a description and any members. last_seq
# is the per-conversation message counter (the server sequence); created_by is kept only as
# information, so deleting that user leaves the group in place.
conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(8), nullable=False),
    sa.Column("dm_key", sa.String(41), nullable=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("description", sa.String(2000), nullable=True),
    sa.Column("created_by", ID, sa.ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    # The creator's Idempotency-Key: a retried create returns the first conversation.
    sa.Column("create_key", sa.String(64), nullable=True),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("created_at", MS, nullable=False),
    sa.Column("updated_at", MS, nullable=False),
    sa.CheckConstraint("kind IN ('dm', 'group')", name="ck_conversations_kind"),
    sa.UniqueConstraint("dm_key", name="uq_conversations_dm_key"),
    sa.UniqueConstraint("created_by", "create_key", name="uq_conversations_create_key"),
    sqlite_autoincrement=True,
)

# One row per (conversation, member). consent is the member's own choice (allowed, unknown,
# denied); since_seq hides the messages sent before the member joined a group.
conversation_members = sa.Table(
    "conversation_members",
    metadata,
    sa.Column(
        "conversation_id",
        ID,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.String(8), nullable=False),
    sa.Column("consent", sa.String(8), nullable=False),
    sa.Column("since_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("joined_at", MS, nullable=False),
    sa.Column("consent_at", MS, nullable=False),
    sa.CheckConstraint(
        "consent IN ('allowed', 'unknown', 'denied')", name="ck_conversation_members_consent"
    ),
    sa.Index("ix_conversation_members_user", "user_id", "consent"),
)

# Messages in server order: (conversation_id, seq) is the key, so paging a conversation is a
# range scan. A sender's client_msg_id is unique within the conversation: a retried send finds
# the first message instead of making a second. kind "system" rows record group changes in the
# timeline (data holds the change), so one per-conversation cursor covers messages and changes.
messages = sa.Table(
    "messages",
    metadata,
    sa.Column(
        "conversation_id",
        ID,
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), nullable=False),
    # Deleting a user deletes what they wrote (their messages and the changes they made).
    sa.Column("sender_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    sa.Column("client_msg_id", sa.String(64), nullable=True),
    sa.Column("body", sa.Text, nullable=True),
    sa.Column("data", sa.JSON, nullable=True),
    sa.Column("sent_at", MS, nullable=False),
    sa.UniqueConstraint(
        "conversation_id", "sender_id", "client_msg_id", name="uq_messages_client_msg_id"
    ),
    sa.Index("ix_messages_sender", "sender_id"),
)

# A user's preferences (consent defaults, notification choices) as one JSON object; defaults
# live in services/preferences.py, so only what the user changed is stored.
user_preferences = sa.Table(
    "user_preferences",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("updated_at", MS, nullable=False),
)


# Private discovery (services/private_discovery.py). One row: the filter's version (it moves
# with every change of the listed set) and the OPRF key version in force.
discovery_state = sa.Table(
    "discovery_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("key_version", sa.Integer, nullable=False),
)

# F_k(phone) of each registered user per key version (hex); `listed` when the user is in the
# filter (discoverable by everybody). Only users' numbers are ever tagged.
discovery_tags = sa.Table(
    "discovery_tags",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("key_version", sa.Integer, primary_key=True),
    sa.Column("tag", sa.String(32), nullable=False),
    sa.Column("listed", sa.Boolean, nullable=False),
    sa.UniqueConstraint("key_version", "tag", name="uq_discovery_tags_tag"),
)

# The filter's changes in version order: `key` is the tag's 63-bit filter key, `added` a join
# (else a leave), `announce` a registration whose holders may hear "X joined". Kept for a
# while (see private_discovery.LOG_KEEP_MS) so clients download deltas, not the filter.
discovery_log = sa.Table(
    "discovery_log",
    metadata,
    sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("key_version", sa.Integer, nullable=False),
    sa.Column("key", sa.BigInteger, nullable=False),
    sa.Column("added", sa.Boolean, nullable=False),
    sa.Column("announce", sa.Boolean, nullable=False),
    sa.Column("at", MS, nullable=False),
)
