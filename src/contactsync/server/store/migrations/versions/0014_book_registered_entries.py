"""The entries of a book whose number someone is registered under, found by the book: a big
upload reads them whole beside its kept copy of the book (services/addressbook.py,
`_held_by_the_book`) instead of filtering the whole book for them.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_book_entries_registered",
        "book_entries",
        ["owner_id", "book"],
        postgresql_where=sa.text("user_id IS NOT NULL"),
        sqlite_where=sa.text("user_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_book_entries_registered", table_name="book_entries")
