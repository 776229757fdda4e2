"""Conversations, their members (with per-member consent), messages and user preferences.

Revision ID: 0005
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _user_fk(name: str, ondelete: str, **kwargs: object) -> sa.Column:
    return sa.Column(name, ID, sa.ForeignKey("users.id", ondelete=ondelete), **kwargs)  # type: ignore[arg-type]


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("dm_key", sa.String(41), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("description", sa.String(2000), nullable=True),
        _user_fk("created_by", "SET NULL", nullable=True),
        sa.Column("create_key", sa.String(64), nullable=True),
        sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.CheckConstraint("kind IN ('dm', 'group')", name="ck_conversations_kind"),
        sa.UniqueConstraint("dm_key", name="uq_conversations_dm_key"),
        sa.UniqueConstraint("created_by", "create_key", name="uq_conversations_create_key"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "conversation_members",
        sa.Column(
            "conversation_id",
            ID,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        _user_fk("user_id", "CASCADE", primary_key=True),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("consent", sa.String(8), nullable=False),
        sa.Column("since_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("joined_at", sa.BigInteger, nullable=False),
        sa.Column("consent_at", sa.BigInteger, nullable=False),
        sa.CheckConstraint(
            "consent IN ('allowed', 'unknown', 'denied')", name="ck_conversation_members_consent"
        ),
    )
    op.create_index("ix_conversation_members_user", "conversation_members", ["user_id", "consent"])
    op.create_table(
        "messages",
        sa.Column(
            "conversation_id",
            ID,
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(8), nullable=False),
        _user_fk("sender_id", "CASCADE", nullable=True),
        sa.Column("client_msg_id", sa.String(64), nullable=True),
        sa.Column("body", sa.Text, nullable=True),
        sa.Column("data", sa.JSON, nullable=True),
        sa.Column("sent_at", sa.BigInteger, nullable=False),
        sa.UniqueConstraint(
            "conversation_id", "sender_id", "client_msg_id", name="uq_messages_client_msg_id"
        ),
    )
    op.create_index("ix_messages_sender", "messages", ["sender_id"])
    op.create_table(
        "user_preferences",
        _user_fk("user_id", "CASCADE", primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("user_preferences")
    op.drop_table("messages")
    op.drop_table("conversation_members")
    op.drop_table("conversations")
