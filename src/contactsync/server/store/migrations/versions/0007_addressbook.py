"""Address-book uploads: idempotent batches, staged force uploads, the discovery quota, join
notices, and each user's switch for "X joined" notices.

Revision ID: 0007
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _owner() -> sa.Column:
    return sa.Column(
        "owner_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )


def upgrade() -> None:
    # A plain ADD COLUMN: batch mode would rebuild `users` on SQLite and lose AUTOINCREMENT.
    op.add_column(
        "users",
        sa.Column("notify_contact_joined", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "upload_batches",
        _owner(),
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("book", sa.String(128), nullable=False),
        sa.Column("force", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("response", sa.JSON, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_upload_batches_created", "upload_batches", ["owner_id", "created_at"])
    op.create_table(
        "staged_contacts",
        _owner(),
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("phone", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("destroy", sa.Boolean, nullable=False),
    )
    op.create_table(
        "discovery_checks",
        _owner(),
        sa.Column("phone", sa.String(16), primary_key=True),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "join_notices",
        sa.Column("phone", sa.String(16), primary_key=True),
        sa.Column("at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("join_notices")
    op.drop_table("discovery_checks")
    op.drop_table("staged_contacts")
    op.drop_index("ix_upload_batches_created", "upload_batches")
    op.drop_table("upload_batches")
    with op.batch_alter_table("users", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("notify_contact_joined")
