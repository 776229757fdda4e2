"""Book entries no longer check their owner with a foreign key, row by row.

PostgreSQL checked `book_entries.owner_id` against users once for every entry written: 17 ms
of a 5,000-entry upload, a third of its INSERT. The owner is held another way now: entries
are only written (services/addressbook.py, `_apply`) after the same transaction raised the
book's version in book_versions, whose row references the user (checked there, once, and
locked till the transaction ends); a user's deletion (services/users.py) deletes the user,
so the version rows (waiting for such a transaction to end), then the entries.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# SQLite's constraint has no name: batch mode finds it under this one.
_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _owner_key() -> str:
    if op.get_context().dialect.name == "postgresql":
        return "book_entries_owner_id_fkey"
    return "fk_book_entries_owner_id_users"


def upgrade() -> None:
    # (entries of users deleted meanwhile by hand would be left: there are none, the key
    # held them)
    with op.batch_alter_table("book_entries", naming_convention=_NAMES) as batch:
        batch.drop_constraint(_owner_key(), type_="foreignkey")


def downgrade() -> None:
    op.execute("DELETE FROM book_entries WHERE owner_id NOT IN (SELECT id FROM users)")
    with op.batch_alter_table("book_entries", naming_convention=_NAMES) as batch:
        batch.create_foreign_key(_owner_key(), "users", ["owner_id"], ["id"], ondelete="CASCADE")
