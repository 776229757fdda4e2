"""Profile fields with access levels, and relations (contact, subscribe, access levels).

Revision ID: 0004
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _user(name: str, *, primary_key: bool = False, nullable: bool = False) -> sa.Column:
    return sa.Column(
        name,
        ID,
        sa.ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=primary_key,
        nullable=nullable,
    )


def upgrade() -> None:
    op.create_table(
        "profile_fields",
        _user("user_id", primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("level", sa.SmallInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.CheckConstraint("level >= 0 AND level <= 63", name="ck_profile_fields_level"),
    )
    op.create_table(
        "relations",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        _user("owner_id", nullable=False),
        _user("target_id", nullable=True),
        sa.Column("phone", sa.String(16), nullable=True),
        sa.Column("contact", sa.Boolean, nullable=False),
        sa.Column("subscribe", sa.Boolean, nullable=False),
        sa.Column("levels", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("owner_id", "target_id", name="uq_relations_owner_target"),
        sa.UniqueConstraint("owner_id", "phone", name="uq_relations_owner_phone"),
        sa.CheckConstraint(
            "(target_id IS NULL) <> (phone IS NULL)", name="ck_relations_target_or_phone"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_relations_target", "relations", ["target_id"])
    op.create_index("ix_relations_phone", "relations", ["phone"])


def downgrade() -> None:
    op.drop_table("relations")
    op.drop_table("profile_fields")
