"""The user registered under each book entry's number (book_entries.user_id), kept by uploads
and registrations (services/addressbook.py, services/joins.py), so a re-check of numbers
already in a book reads who they are instead of probing the users' number index once each.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("book_entries") as batch:
        batch.add_column(sa.Column("user_id", ID, nullable=True))
        batch.create_foreign_key(
            "fk_book_entries_user_id", "users", ["user_id"], ["id"], ondelete="SET NULL"
        )
    op.create_index(
        "ix_book_entries_user_id",
        "book_entries",
        ["user_id"],
        postgresql_where=sa.text("user_id IS NOT NULL"),
        sqlite_where=sa.text("user_id IS NOT NULL"),
    )
    op.execute(
        "UPDATE book_entries SET user_id = "
        "(SELECT users.id FROM users WHERE users.phone = book_entries.phone)"
    )


def downgrade() -> None:
    op.drop_index("ix_book_entries_user_id", table_name="book_entries")
    with op.batch_alter_table("book_entries") as batch:
        batch.drop_constraint("fk_book_entries_user_id", type_="foreignkey")
        batch.drop_column("user_id")
