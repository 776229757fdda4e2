"""Who can find me (users.discoverable_by, users.announce_join_to) and private discovery:
the OPRF tags of registered users, the filter's version and its change log.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("users", sa.Column("discoverable_by", sa.String(9), nullable=True))
    op.add_column("users", sa.Column("announce_join_to", sa.String(9), nullable=True))
    op.create_table(
        "discovery_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("key_version", sa.Integer, nullable=False),
    )
    op.execute("INSERT INTO discovery_state (id, version, key_version) VALUES (1, 0, 0)")
    op.create_table(
        "discovery_tags",
        sa.Column("user_id", ID, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key_version", sa.Integer, primary_key=True),
        sa.Column("tag", sa.String(32), nullable=False),
        sa.Column("listed", sa.Boolean, nullable=False),
        sa.UniqueConstraint("key_version", "tag", name="uq_discovery_tags_tag"),
    )
    op.create_table(
        "discovery_log",
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key_version", sa.Integer, nullable=False),
        sa.Column("key", sa.BigInteger, nullable=False),
        sa.Column("added", sa.Boolean, nullable=False),
        sa.Column("announce", sa.Boolean, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("discovery_log")
    op.drop_table("discovery_tags")
    op.drop_table("discovery_state")
    op.drop_column("users", "announce_join_to")
    op.drop_column("users", "discoverable_by")
