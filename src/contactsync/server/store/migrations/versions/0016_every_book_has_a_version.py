"""Every book with entries has a version row.

Books filled before migration 0010 have entries and no row in book_versions, which the code
took as version 0. Uploads now take a book without a version row to be empty (its entries are
written only after the version is raised: services/addressbook.py, `_held_by_the_book`), so
such books get their row, at version 1.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO book_versions (owner_id, book, version) "
        "SELECT DISTINCT e.owner_id, e.book, 1 FROM book_entries e "
        "WHERE NOT EXISTS (SELECT 1 FROM book_versions v "
        "WHERE v.owner_id = e.owner_id AND v.book = e.book)"
    )


def downgrade() -> None:
    pass  # (version rows are what later code writes anyway)
