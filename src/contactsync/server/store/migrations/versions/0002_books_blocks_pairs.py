"""Address-book entries, blocks and pairs.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _user(name: str) -> sa.Column:
    return sa.Column(name, ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "book_entries",
        _user("owner_id"),
        sa.Column("book", sa.String(128), primary_key=True),
        sa.Column("phone", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_book_entries_phone", "book_entries", ["phone"])
    op.create_table(
        "blocks",
        _user("blocker_id"),
        _user("blocked_id"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_blocks_blocked", "blocks", ["blocked_id"])
    op.create_table(
        "pairs",
        _user("a_id"),
        _user("b_id"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.CheckConstraint("a_id < b_id", name="ck_pairs_ordered"),
    )
    op.create_index("ix_pairs_b", "pairs", ["b_id"])


def downgrade() -> None:
    op.drop_table("pairs")
    op.drop_table("blocks")
    op.drop_table("book_entries")
